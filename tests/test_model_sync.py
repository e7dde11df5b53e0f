"""components/model_sync/sync.py, run for real: the script as the sync Job runs it (its own interpreter, only
the locked tools on its path, the Job's environment) against moto's S3 server and a stand-in for the Hub.

The locked tools are installed from the package index once per test session, as the Job installs them
(pip --require-hashes --no-deps --only-binary=:all: --target). Parts are 5 MiB (S3's minimum) so that a few
MiB of test data already exercise multipart uploads.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.aws_cli import aws_cli_v2

from tests.fakes.fake_hub import COMMIT, FakeHub

ROOT = Path(__file__).parent.parent
SYNC = ROOT / "components" / "model_sync" / "sync.py"
REQUIREMENTS = ROOT / "components" / "model_sync" / "requirements.txt"
FETCH = ROOT / "components" / "model_server" / "fetch-model.sh"
REPO = "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
PREFIX = "models/mistral"
REGION = "us-west-2"
MIB = 1024 * 1024
FILES = {
    "config.json": b'{"architectures": ["MistralForCausalLM"], "model_type": "mistral"}',
    "neuron_config.json": json.dumps({"neuron_config": {"tp_degree": 2, "batch_size": 1, "seq_len": 2048}}).encode(),
    "tokenizer.json": os.urandom(200_000),
    "weights/tp0_sharded_checkpoint.safetensors": os.urandom(6 * MIB + 12345),
    "weights/tp1_sharded_checkpoint.safetensors": os.urandom(5 * MIB + MIB // 2),
}
LAST = "weights/tp1_sharded_checkpoint.safetensors"  # sorted last: copied last with one file at a time


@pytest.fixture(scope="session")
def tools(tmp_path_factory) -> Path:
    """The Job's tools, installed once from the package index as the Job installs them (pip's cache allowed:
    the hashes are checked all the same)."""
    target = tmp_path_factory.mktemp("model-sync-tools")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--require-hashes", "--no-deps", "--only-binary=:all:", "--target", str(target),
                    "--requirement", str(REQUIREMENTS)], check=True, timeout=600)
    return target


MOTO = """
import logging, socket, sys
from moto.server import ThreadedMotoServer
port = int(sys.argv[1])
if port:  # ThreadedMotoServer.start() waits forever if it cannot bind: find out first
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))
    probe.close()
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print("%s:%s" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the test process closes our stdin (or exits)
server.stop()
"""


@contextlib.contextmanager
def moto_server(port: int = 0):
    """moto's S3 (and IAM) server in a process of its own: it does not compete with the tests for the GIL."""
    process = subprocess.Popen([sys.executable, "-c", MOTO, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        address = process.stdout.readline().strip() if ready else ""
        if not address:
            raise RuntimeError(f"moto did not start on port {port}")
        yield f"http://{address}"
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


_SHARED_MOTO = contextlib.ExitStack()  # closed when the test process exits


def shared_moto() -> str:
    """One moto for the whole test session, whichever module asks first (tests/test_model_fetch.py uses it too):
    on 127.0.0.1:80 when that port can be had, since AWS CLI 2.9's CRT client reaches only the default port;
    else on any free port. Kept in the environment, so a second import of this module finds it too."""
    if not os.environ.get("TEST_MODEL_STORE_S3"):
        try:
            endpoint = _SHARED_MOTO.enter_context(moto_server(80))
        except RuntimeError:
            endpoint = _SHARED_MOTO.enter_context(moto_server(0))
        atexit.register(_SHARED_MOTO.close)
        os.environ["TEST_MODEL_STORE_S3"] = endpoint
    return os.environ["TEST_MODEL_STORE_S3"]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    return shared_moto()


def s3_client(endpoint: str, key_id: str = "testing", secret: str = "testing"):
    return boto3.client("s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=key_id,
                        aws_secret_access_key=secret)


@pytest.fixture
def s3(s3_endpoint):
    return s3_client(s3_endpoint)


@pytest.fixture
def bucket(s3, request) -> str:
    name = "store-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def run_sync(tools, s3_endpoint, bucket, tmp_path):
    """Runs sync.py as the Job would; returns the finished process (or the running one with wait=False)."""
    scratch = tmp_path / "job-tmp"
    scratch.mkdir()

    def run(hub: FakeHub, wait: bool = True, **env: str):
        variables = {
            "PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch), "HF_HOME": str(scratch / "hf"),
            "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(tools),
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": s3_endpoint, "AWS_EC2_METADATA_DISABLED": "true", "HF_ENDPOINT": hub.url,
            "MODEL_REPO": REPO, "MODEL_REVISION": "", "MODEL_BUCKET": bucket, "MODEL_PREFIX": PREFIX,
            "MODEL_SYNC_PART_MIB": "5", **env,
        }
        # -S: no site-packages, so only the locked tools are importable, as in the Job's image.
        command = [sys.executable, "-S", str(SYNC)]
        if not wait:
            return subprocess.Popen(command, env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=variables, capture_output=True, text=True, timeout=120)

    run.scratch = scratch
    return run


def objects(s3, bucket: str) -> dict[str, bytes]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            found[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def uploads(s3, bucket: str) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def model_files(s3, bucket: str, revision: str) -> dict[str, bytes]:
    folder = f"{PREFIX}/{revision}/"
    return {key[len(folder):]: body for key, body in objects(s3, bucket).items()
            if key.startswith(folder) and not key.endswith("/.sync-complete")}


def marker(s3, bucket: str, revision: str) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/{revision}/.sync-complete")["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def pin(s3, bucket: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=f"{PREFIX}/pinned-revision")["Body"].read())


def test_first_sync_copies_every_file_pins_main_and_writes_the_marker_then_is_skipped(run_sync, s3, bucket):
    with FakeHub(REPO, FILES) as hub:
        result = run_sync(hub)
    assert result.returncode == 0, result.stderr
    assert model_files(s3, bucket, COMMIT) == FILES
    assert marker(s3, bucket, COMMIT) == {
        "repo": REPO, "revision": COMMIT, "file_count": len(FILES),
        "total_bytes": sum(len(c) for c in FILES.values()),
        "finished_at": marker(s3, bucket, COMMIT)["finished_at"]}
    assert pin(s3, bucket)["repo"] == REPO and pin(s3, bucket)["revision"] == COMMIT
    assert f"pinned main to {COMMIT}; set vllm.models[].revision to keep it explicit" in result.stdout
    for name, content in FILES.items():
        assert re.search(rf"^copied  {re.escape(name)}: [\d.]+ [kMG]?B in [\d.]+ s \([\d.]+ MB/s\)$", result.stdout,
                         re.MULTILINE), result.stdout
    assert re.search(r"^synced .*: 5 files, .* \(5 copied, .*; 0 skipped\) in .* s \(.* MB/s\); "
                     r"peak memory \d+ MiB \(\d+ MiB before copying\)$", result.stdout, re.MULTILINE), result.stdout
    assert sorted(hub.downloads) == sorted(FILES)
    # Telemetry off by itself: huggingface_hub 1.33 would otherwise fetch its agent registry and cache it on disk.
    assert [path for _, path, _ in hub.authorization if not path.startswith(f"/{REPO}/resolve/")] == [
        f"/api/models/{REPO}/revision/main", f"/api/models/{REPO}/revision/{COMMIT}"]
    assert uploads(s3, bucket) == []
    # No local disk: nothing was written where the Job's container could write.
    assert [p for p in run_sync.scratch.rglob("*") if p.is_file()] == []

    # Run again (the Job restarted, or replaced with the same revision): done already, the Hub untouched.
    with FakeHub(REPO, FILES) as again:
        result = run_sync(again)
    assert result.returncode == 0, result.stderr
    assert "already in" in result.stdout and "nothing to do" in result.stdout
    assert again.downloads == [] and again.info_requests == []


def test_a_failed_sync_leaves_no_marker_and_the_next_one_copies_only_what_is_missing(run_sync, s3, bucket):
    with FakeHub(REPO, FILES, failing=(LAST,)) as broken:
        failed = run_sync(broken)
    assert failed.returncode == 1
    assert "error: the Hub answered HTTP 403" in failed.stderr and "no marker written" in failed.stderr
    assert marker(s3, bucket, COMMIT) is None
    assert sorted(model_files(s3, bucket, COMMIT)) == sorted(set(FILES) - {LAST})
    assert uploads(s3, bucket) == []  # the failed multipart upload was aborted
    # An object of the wrong size (say, written by hand or by an older tool) does not count as copied.
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{COMMIT}/config.json", Body=b"{")

    with FakeHub(REPO, FILES) as hub:
        resumed = run_sync(hub)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(hub.downloads) == ["config.json", LAST]
    assert "config.json: 1 bytes in S3, expected" in resumed.stdout
    assert resumed.stdout.count("\nskipped ") + resumed.stdout.startswith("skipped ") == len(FILES) - 2
    assert model_files(s3, bucket, COMMIT) == FILES and marker(s3, bucket, COMMIT)["file_count"] == len(FILES)


def test_a_sync_killed_mid_file_restarts_cleanly(run_sync, s3, bucket):
    with FakeHub(REPO, FILES, stall={LAST: 5 * MIB + 100_000}) as stalling:
        process = run_sync(stalling, wait=False, MODEL_SYNC_PARALLEL_FILES="1")
        assert stalling.stalled.wait(30), "the copy never reached the last file"
        deadline = time.monotonic() + 20
        while not uploads(s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.kill()  # SIGKILL, as when the node goes away: no cleanup runs
        process.communicate(timeout=10)
    assert uploads(s3, bucket) == [f"{PREFIX}/{COMMIT}/{LAST}"]
    assert marker(s3, bucket, COMMIT) is None

    with FakeHub(REPO, FILES) as hub:
        result = run_sync(hub)
    assert result.returncode == 0, result.stderr
    assert "aborted 1 unfinished multipart upload(s)" in result.stdout
    assert hub.downloads == [LAST]
    assert uploads(s3, bucket) == []
    assert model_files(s3, bucket, COMMIT) == FILES and marker(s3, bucket, COMMIT) is not None


def test_main_is_resolved_once_and_kept_by_later_syncs_and_by_pods(run_sync, s3, bucket, s3_endpoint, tmp_path):
    with FakeHub(REPO, FILES) as hub:
        assert run_sync(hub).returncode == 0
        assert hub.info_requests.count("main") == 1
        moved = hub.move_main({**FILES, "config.json": b'{"re-uploaded": true}'})
        hub.info_requests.clear()
        hub.downloads.clear()
        later = run_sync(hub)
    assert later.returncode == 0, later.stderr
    assert f"revision {COMMIT} (pinned in s3://{bucket}/{PREFIX}/pinned-revision" in later.stdout
    assert hub.info_requests == [] and hub.downloads == [] and moved not in later.stdout
    assert pin(s3, bucket)["revision"] == COMMIT
    assert not any(key.startswith(f"{PREFIX}/{moved}/") for key in objects(s3, bucket))

    # A model pod (no revision set) copies the pinned commit, not the new main.
    model_dir = tmp_path / "models" / "mistral"
    fetched = subprocess.run(["/bin/bash", str(FETCH)], capture_output=True, text=True, timeout=60, env={
        "PATH": f"{Path(aws_cli_v2()).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_ENDPOINT_URL": s3_endpoint,
        "MODEL_BUCKET": bucket, "MODEL_PREFIX": PREFIX, "MODEL_REPO": REPO, "MODEL_REVISION": "",
        "MODEL_DIR": str(model_dir), "SYNC_JOB": "mistral-sync", "SYNC_WAIT_SECONDS": "5",
        "MODEL_TRANSFER_CLIENT": "classic"})
    assert fetched.returncode == 0, fetched.stderr
    assert (model_dir / ".revision").read_text().strip() == COMMIT
    assert (model_dir / "config.json").read_bytes() == FILES["config.json"]


def test_a_revision_in_the_setting_wins_over_the_pin(run_sync, s3, bucket):
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/pinned-revision",
                  Body=json.dumps({"repo": REPO, "revision": COMMIT}).encode())
    with FakeHub(REPO, FILES) as hub:
        moved = hub.move_main({**FILES, "config.json": b'{"re-uploaded": true}'})
        hub.info_requests.clear()
        result = run_sync(hub, MODEL_REVISION=moved)
    assert result.returncode == 0, result.stderr
    assert f"revision {moved} (from the model's revision setting)" in result.stdout
    assert "main" not in hub.info_requests
    assert model_files(s3, bucket, moved)["config.json"] == b'{"re-uploaded": true}'
    assert pin(s3, bucket)["revision"] == COMMIT  # the pin is left alone


def test_a_pin_for_another_repository_is_replaced(run_sync, s3, bucket):
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/pinned-revision",
                  Body=json.dumps({"repo": "someone/else", "revision": "a" * 40}).encode())
    with FakeHub(REPO, FILES) as hub:
        result = run_sync(hub)
    assert result.returncode == 0, result.stderr
    assert f"pins someone/else, not {REPO}: pinning again" in result.stdout
    assert pin(s3, bucket)["repo"] == REPO and pin(s3, bucket)["revision"] == COMMIT


def test_a_connection_dropped_mid_file_resumes_with_a_range_request(run_sync, s3, bucket):
    with FakeHub(REPO, FILES, drop_once={LAST: 3 * MIB}) as hub:
        result = run_sync(hub)
    assert result.returncode == 0, result.stderr
    assert hub.resumed and hub.resumed[0][0] == LAST and 0 < hub.resumed[0][1] <= 3 * MIB
    assert f"{LAST}: connection lost at byte" in result.stdout
    assert model_files(s3, bucket, COMMIT) == FILES


def test_files_that_do_not_match_their_listing_are_not_kept(run_sync, s3, bucket):
    listed = {name: os.urandom(5 * MIB + MIB // 2) for name in ("corrupted.bin", "long.bin", "short.bin")}
    served = {"corrupted.bin": listed["corrupted.bin"][:-1] + bytes([listed["corrupted.bin"][-1] ^ 1]),  # a bit off
              "long.bin": listed["long.bin"] + b"extra",
              "short.bin": listed["short.bin"][: 4 * MIB]}
    with FakeHub(REPO, {"config.json": FILES["config.json"], **listed}, tamper=served) as hub:
        result = run_sync(hub, MODEL_SYNC_PARALLEL_FILES="3")
    assert result.returncode == 1, result.stdout
    assert re.search(r"^failed  corrupted.bin: corrupted.bin: SHA-256 [0-9a-f]{64} differs from the Hub's",
                     result.stdout, re.MULTILINE), result.stdout
    assert "failed  long.bin: long.bin: the Hub sent more than the 5767168 bytes it listed" in result.stdout
    assert "failed  short.bin: short.bin: the download ended at byte 4194304 of 5767168" in result.stdout
    assert "(and 2 more failure(s) above); no marker written" in result.stderr
    assert list(model_files(s3, bucket, COMMIT)) == ["config.json"]
    assert uploads(s3, bucket) == [] and marker(s3, bucket, COMMIT) is None


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_token_goes_to_the_hub_but_not_to_its_cdn(run_sync, s3, bucket):
    with FakeHub(REPO, FILES, token="hf_secret", cdn=True) as hub, \
            FakeHub(REPO, FILES, token="hf_secret") as private:
        # At once, in prefixes of their own (a sync aborts the unfinished uploads under its prefix).
        anonymous = run_sync(private, wait=False, MODEL_PREFIX="models/anonymous")
        result = finish(run_sync(hub, wait=False, HF_TOKEN="hf_secret"))
        anonymous = finish(anonymous)
    assert anonymous.returncode == 1
    assert f"repository {REPO} not found on the Hub (HTTP 401)" in anonymous.stderr
    assert result.returncode == 0, result.stderr
    assert model_files(s3, bucket, COMMIT) == FILES
    assert any(where == "cdn" for where, _, _ in hub.authorization), "large files should come through the CDN"
    assert all(sent for where, _, sent in hub.authorization if where == "hub")
    assert not any(sent for where, _, sent in hub.authorization if where == "cdn")


def test_hub_errors_say_what_to_check(run_sync, s3, bucket):
    with FakeHub(REPO, FILES, gated=True) as gated, FakeHub("someone/else", FILES) as other:
        runs = [run_sync(gated, wait=False, MODEL_REVISION=COMMIT, MODEL_PREFIX="models/gated"),
                run_sync(other, wait=False, MODEL_PREFIX="models/missing-repo"),
                run_sync(other, wait=False, MODEL_REPO="someone/else", MODEL_REVISION="f" * 40)]
        gated_result, missing_repo, missing_revision = map(finish, runs)
    assert gated_result.returncode == 1 and f"{REPO} is a gated repository (HTTP 403)" in gated_result.stderr
    assert missing_repo.returncode == 1 and f"repository {REPO} not found on the Hub (HTTP 404)" in missing_repo.stderr
    assert missing_revision.returncode == 1
    assert f"revision {'f' * 40} not found in someone/else (HTTP 404)" in missing_revision.stderr
    assert not any(key.endswith("/.sync-complete") for key in objects(s3, bucket))


def test_access_denied_names_the_bucket_and_prefix_the_role_may_write(run_sync, s3, bucket, s3_endpoint):
    """A real IAM denial: moto evaluates the policy of a user allowed only another model's prefix."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=s3_endpoint, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName="other-model-sync")
    iam.put_user_policy(UserName="other-model-sync", PolicyName="sync", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
             "Resource": f"arn:aws:s3:::{bucket}/models/other/*"}]}))
    key = iam.create_access_key(UserName="other-model-sync")["AccessKey"]

    def authorization(after: str) -> None:  # moto's switch for IAM checks (its /moto-api/reset-auth)
        urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset-auth", data=after.encode(),
                                                      method="POST", headers={"Content-Type": "text/plain"}))

    authorization("0")
    try:
        with FakeHub(REPO, FILES) as hub:
            result = run_sync(hub, AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    finally:
        authorization("inf")
    assert result.returncode == 1
    assert f"S3 denied access (AccessDenied) to look for s3://{bucket}/{PREFIX}/pinned-revision" in result.stderr
    assert f"MODEL_BUCKET ({bucket}) and MODEL_PREFIX ({PREFIX})" in result.stderr
    assert hub.downloads == []


def test_bad_settings_exit_2_before_any_work(run_sync):
    with FakeHub(REPO, FILES) as hub:
        no_bucket = run_sync(hub, MODEL_BUCKET="")
        branch = run_sync(hub, MODEL_REVISION="main")
    assert no_bucket.returncode == 2 and "MODEL_BUCKET" in no_bucket.stderr
    assert branch.returncode == 2 and "not a commit id" in branch.stderr
    assert hub.info_requests == [] and hub.downloads == []


def test_parts_reach_s3_while_the_file_is_still_streaming(run_sync, s3, bucket):
    """No whole-file buffer: with the Hub's stream held at 11 MiB of 16, two 5 MiB parts are already in S3."""
    content = os.urandom(16 * MIB)
    with FakeHub(REPO, {"model.safetensors": content}, stall={"model.safetensors": 11 * MIB}) as hub:
        # A read timeout longer than the hold, so that the stream only moves on when the test releases it.
        process = run_sync(hub, wait=False, MODEL_SYNC_CONCURRENCY="1", MODEL_SYNC_PARALLEL_FILES="1",
                           HF_HUB_DOWNLOAD_TIMEOUT="120")
        try:
            assert hub.stalled.wait(30)
            parts, deadline = [], time.monotonic() + 15
            while len(parts) < 2 and time.monotonic() < deadline:
                for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                    listing = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    parts = listing.get("Parts", [])
                time.sleep(0.05)
            assert [part["Size"] for part in parts] == [5 * MIB, 5 * MIB]
        finally:
            hub.release()  # the held connection closes; the copy resumes with a Range request
            out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert model_files(s3, bucket, COMMIT) == {"model.safetensors": content}
    assert re.search(r"peak memory \d+ MiB \(\d+ MiB before copying\)", out)


def test_every_tool_is_pinned_by_hash_and_fits_the_jobs_python(tools):
    lines = [line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#")]
    names = {line.split("==")[0] for line in lines}
    assert {"huggingface-hub", "httpx", "boto3", "s3transfer", "botocore"} <= names and "hf-xet" not in names
    for line in lines:
        assert re.fullmatch(r"[a-z0-9-]+==[\w.]+ --hash=sha256:[0-9a-f]{64}", line), line
    tags = [tag for wheel in tools.glob("*.dist-info/WHEEL")
            for tag in re.findall(r"^Tag: (\S+)$", wheel.read_text(), re.MULTILINE)]
    assert len(list(tools.glob("*.dist-info"))) == len(lines)
    wheel_tag = r"py3-none-any|py2-none-any|cp311-cp311-manylinux\w*x86_64"
    assert tags and all(re.fullmatch(wheel_tag, tag) for tag in tags), tags
