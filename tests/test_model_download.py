"""The model-download init container, run for real: the script and locked tools of the rendered ConfigMap,
with the container's environment, against a local stand-in for the Hugging Face Hub.

The locked tools come from PyPI once per test run (as the init container gets them, hashes checked), and
then from a local copy; the downloads stay local.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_hub import FakeHub

REPO = "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
FILES = {
    "config.json": b'{"model_type": "mistral"}',
    "weights/tp0_sharded_checkpoint.safetensors": os.urandom(300_000),
    "weights/tp1_sharded_checkpoint.safetensors": os.urandom(300_000),
}


@pytest.fixture(scope="module")
def rendered(dev_deployment):
    """The init container and its ConfigMap, as the program renders them."""
    config_map = next(r.manifest() for r in dev_deployment.of_type("kubernetes:core/v1:ConfigMap"))
    pod = dev_deployment.one("kubernetes:apps/v1:Deployment").manifest()["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    return init, config_map["data"]


@pytest.fixture(scope="module")
def wheelhouse(rendered, tmp_path_factory):
    """The locked wheels, fetched from PyPI once and checked against their hashes."""
    _, files = rendered
    where = tmp_path_factory.mktemp("wheelhouse")
    (where / "requirements.txt").write_text(files["requirements.txt"])
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes", "--no-deps",
                    "--only-binary=:all:", "--dest", str(where), "--requirement", str(where / "requirements.txt")],
                   check=True, timeout=300)
    return where


@pytest.fixture
def run_download(rendered, wheelhouse, tmp_path):
    """Run the rendered script as the container would: its ConfigMap files side by side, its env."""
    init, files = rendered
    mount = tmp_path / "etc-model-download"
    mount.mkdir()
    for name, text in files.items():
        (mount / name).write_text(text)
    env = {e["name"]: e["value"] for e in init["env"]}
    # Container paths, moved under tmp_path; the interpreter is this one (Python 3.11, as in the image).
    env.update(MODEL_DIR=str(tmp_path / "models" / "mistral"), TOOLS_DIR=str(tmp_path / "tools"),
               HOME=str(tmp_path), HF_HOME=str(tmp_path / "hf"), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
               PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))

    def run(hub_url: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(mount / "download.sh")], env={**env, "HF_ENDPOINT": hub_url},
                              capture_output=True, text=True, timeout=300)

    run.model_dir = Path(env["MODEL_DIR"])
    return run


def test_first_run_installs_the_locked_tools_and_downloads_the_model(run_download):
    with FakeHub(REPO, FILES) as hub:
        result = run_download(hub.url)
    assert result.returncode == 0, result.stderr
    assert sorted(hub.downloads) == sorted(FILES)
    for name, content in FILES.items():
        assert (run_download.model_dir / name).read_bytes() == content
    assert (run_download.model_dir / ".download-complete").read_text().strip() == REPO
    assert result.stdout.rstrip().endswith("Model download is complete.")


def test_a_restarted_pod_skips_the_download_without_the_network(run_download):
    with FakeHub(REPO, FILES) as hub:
        assert run_download(hub.url).returncode == 0
    # Nothing listens there any more: a second run must not need it.
    again = run_download(hub.url)
    assert again.returncode == 0, again.stderr
    assert "already in" in again.stdout and "skipping the download" in again.stdout


def test_an_interrupted_download_resumes_with_what_is_missing(run_download):
    with FakeHub(REPO, FILES, failing=("weights/tp1_sharded_checkpoint.safetensors",)) as broken:
        failed = run_download(broken.url)
    assert failed.returncode != 0
    assert not (run_download.model_dir / ".download-complete").exists()

    with FakeHub(REPO, FILES) as hub:
        resumed = run_download(hub.url)
    assert resumed.returncode == 0, resumed.stderr
    # The files that made it the first time are not fetched again.
    assert hub.downloads == ["weights/tp1_sharded_checkpoint.safetensors"]
    assert (run_download.model_dir / "weights/tp1_sharded_checkpoint.safetensors").read_bytes() == \
        FILES["weights/tp1_sharded_checkpoint.safetensors"]


def test_every_download_tool_is_pinned_by_version_and_hash(rendered):
    _, files = rendered
    lines = [line for line in files["requirements.txt"].splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("huggingface-hub==1.33.0 ") for line in lines)
    for line in lines:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}", line), line
