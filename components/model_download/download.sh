#!/bin/sh
# Downloads $MODEL_REPO from Hugging Face into $MODEL_DIR, for the vLLM container that starts next.
# Resumable: `hf download` picks up partial files and skips complete ones. Once a download has
# finished, a marker file makes later runs (a restarted pod) skip straight to serving.
set -eu

marker="$MODEL_DIR/.download-complete"
if [ -f "$marker" ] && [ "$(cat "$marker")" = "$MODEL_REPO" ]; then
    echo "Model $MODEL_REPO is already in $MODEL_DIR; skipping the download."
    exit 0
fi

echo "Installing the pinned download tools into $TOOLS_DIR"
python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes --no-deps \
    --only-binary=:all: --target "$TOOLS_DIR" --requirement "$(dirname "$0")/requirements.txt"
export PYTHONPATH="$TOOLS_DIR" PATH="$TOOLS_DIR/bin:$PATH"

mkdir -p "$MODEL_DIR"
echo "Downloading $MODEL_REPO to $MODEL_DIR"
hf download "$MODEL_REPO" --local-dir "$MODEL_DIR"
echo "$MODEL_REPO" > "$marker"

echo ""
echo "Model download is complete."
