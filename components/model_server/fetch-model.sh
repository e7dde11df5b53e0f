#!/bin/bash
# Copies the model from the stack's model store (S3) into $MODEL_DIR, for the vLLM container that starts next.
# Runs as the init container `model-download` of each model pod, in the AWS CLI v2 image (Amazon Linux 2:
# bash 4.2, coreutils, sed; no python or jq relied on).
#
# What it copies: s3://$MODEL_BUCKET/$MODEL_PREFIX/<revision>/, written by the model's sync Job
# (components/model_sync/sync.py). The revision is MODEL_REVISION if set, else the one the Job pinned in
# $MODEL_PREFIX/pinned-revision (only if that pin is for MODEL_REPO). The copy starts only once the Job's
# marker <revision>/.sync-complete exists: until then it polls every SYNC_POLL_SECONDS (10), logging once a
# minute, for at most SYNC_WAIT_SECONDS (1800), then gives up (exit 1; the pod restarts the container).
# If $MODEL_DIR/.revision already names the revision (init containers re-run when the pod sandbox restarts;
# the emptyDir survives), nothing is copied. Otherwise the directory is emptied, filled with
# `aws s3 cp --recursive`, checked against the listing of the revision's folder (file count and bytes; the same
# request that finds the marker), and .revision written last.
#
# Environment: MODEL_BUCKET, MODEL_PREFIX, MODEL_REPO, MODEL_REVISION (may be empty), MODEL_DIR, SYNC_JOB,
# SYNC_WAIT_SECONDS, AWS_REGION (or AWS_DEFAULT_REGION), HOME=/tmp; optional POD_NAMESPACE (for the log line;
# default vllm), SYNC_POLL_SECONDS, MODEL_TRANSFER_CLIENT (crt | classic; default crt), MODEL_TARGET_BANDWIDTH (10Gb/s),
# MODEL_FETCH_MEMORY_MB (1024: the CRT client's buffer limit), AWS_ENDPOINT_URL (tests).
#
# Transfer client: the AWS CLI's `preferred_transfer_client` s3 setting, in an AWS_CONFIG_FILE written here
# (aws-cli awscli/topics/s3-config.rst: `crt` is the C transfer client, `target_bandwidth` its throughput
# goal; the default `auto` picks crt only on a few large instance types, not trn1.2xlarge or inf2). The value
# `default` means the classic client: AWS CLI 2.9 accepts only `default` and `crt`; later versions also take
# `classic` and keep `default` as its alias (awscli/customizations/s3/transferconfig.py, CHOICE_ALIASES).
# Known limit: the CRT client of AWS CLI 2.9 (awscrt 0.16) ignores the port of --endpoint-url and connects to
# 80/443, so it reaches an S3 stand-in only on the default port; real S3 endpoints are unaffected.
#
# Exit codes: 0 copied (or already there), 1 failed or gave up waiting (the message says what to look at),
# 2 bad configuration.
set -euo pipefail

MARKER=.sync-complete
PIN=pinned-revision

log() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
config_error() { printf 'error: %s\n' "$*" >&2; exit 2; }

for name in MODEL_BUCKET MODEL_PREFIX MODEL_REPO MODEL_DIR SYNC_JOB; do
    [ -n "${!name:-}" ] || config_error "missing environment variable $name"
done
AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
[ -n "$AWS_REGION" ] || config_error "missing environment variable AWS_REGION (the bucket's region)"
export AWS_REGION
MODEL_PREFIX=${MODEL_PREFIX%/}
MODEL_REVISION=${MODEL_REVISION:-}
if [ -n "$MODEL_REVISION" ] && ! [[ $MODEL_REVISION =~ ^[0-9a-f]{40}$ ]]; then
    config_error "MODEL_REVISION '$MODEL_REVISION' is not a commit id (40 lowercase hex digits)"
fi
WAIT_SECONDS=${SYNC_WAIT_SECONDS:-1800}
POLL_SECONDS=${SYNC_POLL_SECONDS:-10}
[[ $WAIT_SECONDS =~ ^[0-9]+$ ]] || config_error "SYNC_WAIT_SECONDS must be a number of seconds"
[[ $POLL_SECONDS =~ ^[1-9][0-9]*$ ]] || config_error "SYNC_POLL_SECONDS must be a positive number of seconds"
NAMESPACE=${POD_NAMESPACE:-vllm}
STORE="s3://$MODEL_BUCKET/$MODEL_PREFIX"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-model.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

case "${MODEL_TRANSFER_CLIENT:-crt}" in
    crt) CLIENT=crt ;;
    classic|default) CLIENT=default ;;
    *) config_error "MODEL_TRANSFER_CLIENT must be crt or classic, not '$MODEL_TRANSFER_CLIENT'" ;;
esac
MEMORY_MB=${MODEL_FETCH_MEMORY_MB:-1024}
[[ $MEMORY_MB =~ ^[1-9][0-9]*$ ]] || config_error "MODEL_FETCH_MEMORY_MB must be a positive number"
# The CRT client's part buffers (aws-c-s3 README: AWS_CRT_S3_MEMORY_LIMIT_IN_MB, or _IN_GIB in older CRTs);
# without a limit it sizes them from target_bandwidth, which can exceed the container's memory limit.
export AWS_CRT_S3_MEMORY_LIMIT_IN_MB=$MEMORY_MB AWS_CRT_S3_MEMORY_LIMIT_IN_GIB=$(( (MEMORY_MB + 1023) / 1024 ))
export AWS_CONFIG_FILE="$WORK/aws-config"
{
    printf '[default]\n'
    printf 'region = %s\n' "$AWS_REGION"
    printf 's3 =\n  preferred_transfer_client = %s\n  target_bandwidth = %s\n' \
        "$CLIENT" "${MODEL_TARGET_BANDWIDTH:-10Gb/s}"
} > "$AWS_CONFIG_FILE"

# Debian's AWS CLI 2.9 does not read AWS_ENDPOINT_URL by itself (2.13+ does): pass it on.
ENDPOINT=()
[ -n "${AWS_ENDPOINT_URL:-}" ] && ENDPOINT=(--endpoint-url "$AWS_ENDPOINT_URL")
aws_() { aws ${ENDPOINT[@]+"${ENDPOINT[@]}"} "$@"; }

s3_error() {  # key, what the CLI said, what we tried
    case "$2" in
        *AccessDenied*|*"(403)"*|*Forbidden*)
            fail "S3 denied access (AccessDenied) to $3 s3://$MODEL_BUCKET/$1. The model pod's role may read and" \
                "list only its own model's prefix in the bucket: check that MODEL_BUCKET ($MODEL_BUCKET) and" \
                "MODEL_PREFIX ($MODEL_PREFIX) are the bucket and prefix its IAM policy names" ;;
        *NoSuchBucket*)
            fail "the bucket $MODEL_BUCKET does not exist (NoSuchBucket): check MODEL_BUCKET and AWS_REGION" ;;
    esac
    fail "could not $3 s3://$MODEL_BUCKET/$1: $2"
}

# Whether the object exists, by listing rather than reading: S3 answers 403, not 404, for a missing object
# unless s3:ListBucket applies to the request, and the pod's ListBucket is limited to its prefix.
s3_exists() {
    local found
    if ! found=$(aws_ s3api list-objects-v2 --bucket "$MODEL_BUCKET" --prefix "$1" --page-size 1 --max-items 1 \
            --query 'Contents[0].Key' --output text 2>"$WORK/errors"); then
        s3_error "$1" "$(cat "$WORK/errors")" "look for"
    fi
    [ "$found" = "$1" ]  # the key itself sorts first among the keys it prefixes
}

# Reads s3://$MODEL_BUCKET/$1 into the file $2; returns 1 if there is no such object, exits on errors.
s3_read() {
    s3_exists "$1" || return 1
    if ! aws_ s3api get-object --bucket "$MODEL_BUCKET" --key "$1" "$2" >/dev/null 2>"$WORK/errors"; then
        s3_error "$1" "$(cat "$WORK/errors")" "read"
    fi
}

# Lists the revision's folder in one request: sets SYNCED (1 if the marker is there), EXPECTED_FILES and
# EXPECTED_BYTES (the other objects: what the copy must produce).
list_revision() {
    local answer all="(Contents || \`[]\`)"
    local query="[length(${all}[?ends_with(Key, '/$MARKER')]), length(${all}[?!ends_with(Key, '/$MARKER')]),"
    query+=" sum(${all}[?!ends_with(Key, '/$MARKER')].Size)]"
    if ! answer=$(aws_ s3api list-objects-v2 --bucket "$MODEL_BUCKET" --prefix "$MODEL_PREFIX/$REVISION/" \
            --output text --query "$query" 2>"$WORK/errors"); then
        s3_error "$MODEL_PREFIX/$REVISION/" "$(cat "$WORK/errors")" "list"
    fi
    read -r SYNCED EXPECTED_FILES EXPECTED_BYTES <<< "$answer"
    [ "$SYNCED" = 1 ]
}

# The value of a string or number field of a small JSON document, without python or jq: the field's first
# occurrence (sync.py writes flat documents; a nested object with the same key would have to come after it).
json_field() {
    tr -d '\n\r' < "$1" | sed -e "s/\"$2\"[[:space:]]*:/\n&/g" | sed -n -e "2{" \
        -e "s/^\"$2\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" -e "t" \
        -e "s/^\"$2\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" -e "}"
}

human() {
    local bytes=$1
    if (( bytes >= 1000000000 )); then
        printf '%d.%d GB' $(( bytes / 1000000000 )) $(( bytes % 1000000000 / 100000000 ))
    else
        printf '%d.%d MB' $(( bytes / 1000000 )) $(( bytes % 1000000 / 100000 ))
    fi
}

REVISION=
WAITING=
resolve_revision() {
    if [ -n "$MODEL_REVISION" ]; then
        REVISION=$MODEL_REVISION
        return 0
    fi
    if ! s3_read "$MODEL_PREFIX/$PIN" "$WORK/pin.json"; then
        WAITING="no revision of $MODEL_REPO pinned yet in $STORE/$PIN"
        return 1
    fi
    local repo revision
    repo=$(json_field "$WORK/pin.json" repo)
    revision=$(json_field "$WORK/pin.json" revision)
    if [ "$repo" != "$MODEL_REPO" ]; then
        WAITING="$STORE/$PIN pins ${repo:-nothing readable}, not $MODEL_REPO (the sync Job replaces it)"
        return 1
    fi
    if ! [[ $revision =~ ^[0-9a-f]{40}$ ]]; then
        WAITING="$STORE/$PIN has no valid revision (the sync Job replaces it)"
        return 1
    fi
    REVISION=$revision
}

now_ms() { date +%s%3N; }
started_waiting=$(now_ms)
polls=0
log_every=$(( POLL_SECONDS >= 60 ? 1 : (60 + POLL_SECONDS - 1) / POLL_SECONDS ))
wait_step() {
    if (( polls % log_every == 0 )); then
        log "waiting for the model sync (kubectl logs -n $NAMESPACE job/$SYNC_JOB -f): $WAITING"
    fi
    polls=$(( polls + 1 ))
    if (( $(now_ms) - started_waiting >= WAIT_SECONDS * 1000 )); then
        fail "gave up after ${WAIT_SECONDS}s waiting for the model sync: $WAITING. Look at the sync Job:" \
            "kubectl get job -n $NAMESPACE $SYNC_JOB; kubectl logs -n $NAMESPACE job/$SYNC_JOB. Once it has" \
            "finished, this container starts again by itself (or delete the pod)."
    fi
    sleep "$POLL_SECONDS"
}

until resolve_revision; do wait_step; done
if [ -n "$MODEL_REVISION" ]; then
    log "revision $REVISION of $MODEL_REPO (from the model's revision setting)"
else
    log "revision $REVISION of $MODEL_REPO (pinned by the sync Job in $STORE/$PIN)"
fi

if [ -f "$MODEL_DIR/.revision" ] && [ "$(cat "$MODEL_DIR/.revision")" = "$REVISION" ]; then
    log "$MODEL_DIR already holds $MODEL_REPO@$REVISION; nothing to copy."
    exit 0
fi

WAITING="$STORE/$REVISION/$MARKER does not exist yet"
until list_revision; do wait_step; done

if [ -d "$MODEL_DIR" ] && [ -n "$(ls -A "$MODEL_DIR")" ]; then
    log "removing an incomplete or other copy in $MODEL_DIR"
    rm -rf "${MODEL_DIR:?}"/* "${MODEL_DIR:?}"/.[!.]* "${MODEL_DIR:?}"/..?* 2>/dev/null || true
fi
mkdir -p "$MODEL_DIR"
transfer=$([ "$CLIENT" = crt ] && echo crt || echo classic)
log "copying $STORE/$REVISION/ to $MODEL_DIR ($EXPECTED_FILES files, $(human "$EXPECTED_BYTES");" \
    "$transfer transfer client)"
start=$(now_ms)
if ! aws_ s3 cp --recursive --no-progress --exclude "$MARKER" "$STORE/$REVISION/" "$MODEL_DIR/"; then
    fail "aws s3 cp from $STORE/$REVISION/ failed (see above); AccessDenied means the model pod's role may not" \
        "read $STORE/"
fi
elapsed_ms=$(( $(now_ms) - start ))

shopt -s globstar dotglob nullglob
files=0
bytes=0
for file in "$MODEL_DIR"/**; do
    [ -f "$file" ] || continue
    files=$(( files + 1 ))
    bytes=$(( bytes + $(stat -c %s "$file") ))
done
if [ "$files" != "$EXPECTED_FILES" ] || [ "$bytes" != "$EXPECTED_BYTES" ]; then
    fail "the copy in $MODEL_DIR has $files files / $bytes bytes, but $STORE/$REVISION/ lists" \
        "$EXPECTED_FILES files / $EXPECTED_BYTES bytes"
fi
printf '%s\n' "$REVISION" > "$MODEL_DIR/.revision"
tenths=$(( bytes / ((elapsed_ms > 0 ? elapsed_ms : 1) * 100) ))  # MB/s x 10
log "copied $MODEL_REPO@$REVISION: $files files, $(human "$bytes") in" \
    "$(( elapsed_ms / 1000 )).$(( elapsed_ms % 1000 / 100 )) s ($(( tenths / 10 )).$(( tenths % 10 )) MB/s)"
