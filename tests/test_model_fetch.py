"""components/model_server/fetch-model.sh, run for real with Debian's AWS CLI (2.9, with the CRT transfer
client) against moto's S3 server, with the init container's environment.

The CRT client of AWS CLI 2.9 connects to port 80/443 whatever port --endpoint-url names (it reached a moto
on 127.0.0.1:80 and was refused on any other port), so moto listens on 127.0.0.1:80 when it can and the tests
use the CRT client, as pods do (the first test with the script's default); where port 80 cannot be had they use
the classic client. Either way one test runs the classic client explicitly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from tests.aws_cli import aws_cli_v2
from tests.test_model_sync import shared_moto

FETCH = Path(__file__).parent.parent / "components" / "model_server" / "fetch-model.sh"

AWS = aws_cli_v2()
REPO = "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
PREFIX = "models/mistral"
REGION = "us-west-2"
REVISION = "3f5b1c2d4e6f708192a3b4c5d6e7f8091a2b3c4d"
JOB = "mistral-sync-1a2b3c4d"
FILES = {
    "config.json": b'{"model_type": "mistral"}',
    "neuron_config.json": b'{"neuron_config": {"tp_degree": 2}}',
    "weights/tp0_sharded_checkpoint.safetensors": os.urandom(9 * 1024 * 1024 + 7),
    "weights/tp1_sharded_checkpoint.safetensors": os.urandom(300_000),
}



@pytest.fixture
def store():
    """The session's moto (shared with the sync tests), and the transfer client that reaches it: crt on port 80
    (the port AWS CLI 2.9's CRT client always uses), else classic."""
    endpoint = shared_moto()
    return endpoint, "crt" if endpoint.endswith(":80") else "classic"


@pytest.fixture
def s3(store):
    return boto3.client("s3", region_name=REGION, endpoint_url=store[0], aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def bucket(s3, request) -> str:
    name = "pods-" + hashlib.sha1(request.node.name.encode()).hexdigest()[:12]
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def publish(s3, bucket: str, revision: str = REVISION, files: dict[str, bytes] = FILES, *, marker: bool = True,
            **marker_changes) -> None:
    """What a finished sync leaves: the files, then the marker (as sync.py writes it)."""
    for name, content in files.items():
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{revision}/{name}", Body=content)
    if marker:
        document = {"repo": REPO, "revision": revision, "file_count": len(files),
                    "total_bytes": sum(map(len, files.values())), "finished_at": "2026-11-25T12:00:00+00:00",
                    **marker_changes}
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{revision}/.sync-complete",
                      Body=(json.dumps(document, indent=2) + "\n").encode())


def pin(s3, bucket: str, repo: str = REPO, revision: str = REVISION) -> None:
    document = {"repo": repo, "revision": revision, "resolved_from": "main", "pinned_at": "2026-11-25T12:00:00+00:00"}
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}/pinned-revision", Body=(json.dumps(document, indent=2) + "\n").encode())


@pytest.fixture
def fetch(store, bucket, tmp_path):
    endpoint, client = store
    model_dir = tmp_path / "models" / "mistral"

    def run(wait: bool = True, timeout: float = 60, **env: str):
        variables = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint,
                     "AWS_EC2_METADATA_DISABLED": "true", "MODEL_BUCKET": bucket, "MODEL_PREFIX": PREFIX,
                     "MODEL_REPO": REPO, "MODEL_REVISION": "", "MODEL_DIR": str(model_dir), "SYNC_JOB": JOB,
                     "SYNC_WAIT_SECONDS": "20", "SYNC_POLL_SECONDS": "1", "MODEL_TRANSFER_CLIENT": client, **env}
        command = ["/bin/bash", str(FETCH)]
        if not wait:
            return subprocess.Popen(command, env=variables, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=variables, capture_output=True, text=True, timeout=timeout)

    run.model_dir = model_dir
    run.client = client
    return run


def copied(model_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}


def record_aws_calls(tmp_path: Path, then: str = "") -> str:
    """A PATH whose `aws` runs the real one and records its arguments and AWS config file; `then` runs after."""
    wrapper = tmp_path / "bin" / "aws"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >> {tmp_path}/aws-calls
cat "$AWS_CONFIG_FILE" > {tmp_path}/aws-config
{AWS} "$@" || exit $?
{then}
""")
    wrapper.chmod(0o755)
    return f"{wrapper.parent}:/usr/bin:/bin"


def test_a_completed_sync_is_copied_at_the_pinned_revision(fetch, s3, bucket, tmp_path):
    """With the script's default transfer client (crt) when moto is on port 80."""
    publish(s3, bucket)
    pin(s3, bucket)
    result = fetch(PATH=record_aws_calls(tmp_path), **({"MODEL_TRANSFER_CLIENT": ""} if fetch.client == "crt" else {}))
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "aws-config").read_text()
    assert f"preferred_transfer_client = {'crt' if fetch.client == 'crt' else 'default'}" in config
    assert "target_bandwidth = 10Gb/s" in config and f"region = {REGION}" in config
    calls = (tmp_path / "aws-calls").read_text()
    assert f"s3 cp --recursive --no-progress --exclude .sync-complete s3://{bucket}/{PREFIX}/{REVISION}/" in calls
    assert copied(fetch.model_dir) == {**FILES, ".revision": f"{REVISION}\n".encode()}
    assert f"revision {REVISION} of {REPO} (pinned by the sync Job" in result.stdout
    assert f"{fetch.client} transfer client" in result.stdout
    assert re.search(rf"^copied {re.escape(REPO)}@{REVISION}: 4 files, 9\.\d MB in [\d.]+ s \([\d.]+ MB/s\)$",
                     result.stdout, re.MULTILINE), result.stdout
    assert "waiting" not in result.stdout


def test_the_copy_waits_for_the_sync_then_proceeds(fetch, s3, bucket):
    publish(s3, bucket, marker=False)  # the Job is still copying
    process = fetch(wait=False, MODEL_REVISION=REVISION)
    time.sleep(1.5)
    assert process.poll() is None and not (fetch.model_dir / ".revision").exists()
    publish(s3, bucket)  # the Job finishes: the marker appears
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.count(f"waiting for the model sync (kubectl logs -n vllm job/{JOB} -f): s3://{bucket}/{PREFIX}/"
                     f"{REVISION}/.sync-complete does not exist yet") == 1
    assert copied(fetch.model_dir) == {**FILES, ".revision": f"{REVISION}\n".encode()}


def test_a_pin_for_another_repository_is_ignored_until_the_wait_gives_up(fetch, s3, bucket):
    publish(s3, bucket)  # a finished sync, but of the repository the pin names
    pin(s3, bucket, repo="someone/else")
    started = time.monotonic()
    result = fetch(SYNC_WAIT_SECONDS="2", POD_NAMESPACE="models", timeout=30)
    assert 2 <= time.monotonic() - started < 30
    assert result.returncode == 1
    assert "error: gave up after 2s waiting for the model sync: " \
           f"s3://{bucket}/{PREFIX}/pinned-revision pins someone/else, not {REPO}" in result.stderr
    assert f"kubectl get job -n models {JOB}; kubectl logs -n models job/{JOB}" in result.stderr
    assert f"waiting for the model sync (kubectl logs -n models job/{JOB} -f)" in result.stdout
    assert not fetch.model_dir.exists() or copied(fetch.model_dir) == {}


def test_a_restarted_init_container_skips_the_copy_without_s3(fetch):
    fetch.model_dir.mkdir(parents=True)
    (fetch.model_dir / "config.json").write_bytes(FILES["config.json"])
    (fetch.model_dir / ".revision").write_text(f"{REVISION}\n")
    # Nothing listens there: the copy must not need S3 at all.
    result = fetch(MODEL_REVISION=REVISION, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "already holds" in result.stdout and "nothing to copy" in result.stdout


def test_an_older_or_partial_copy_is_replaced_with_the_classic_client_too(fetch, s3, bucket):
    publish(s3, bucket)
    fetch.model_dir.mkdir(parents=True)
    (fetch.model_dir / ".revision").write_text("f" * 40 + "\n")
    (fetch.model_dir / "stale.bin").write_bytes(b"from another revision")
    (fetch.model_dir / "config.json").write_bytes(b"{")  # cut short
    result = fetch(MODEL_REVISION=REVISION, MODEL_TRANSFER_CLIENT="classic")
    assert result.returncode == 0, result.stderr
    assert "removing an incomplete or other copy" in result.stdout and "classic transfer client" in result.stdout
    assert copied(fetch.model_dir) == {**FILES, ".revision": f"{REVISION}\n".encode()}


def test_a_copy_that_comes_up_short_is_not_marked_done(fetch, s3, bucket, tmp_path):
    """`aws s3 cp` says it succeeded but a file is missing (here a wrapper deletes one after the real copy)."""
    publish(s3, bucket)
    lose_a_file = 'case " $* " in *" s3 cp "*) rm "$MODEL_DIR/weights/tp1_sharded_checkpoint.safetensors" ;; esac'
    path = record_aws_calls(tmp_path, then=lose_a_file)
    result = fetch(MODEL_REVISION=REVISION, PATH=path)
    assert result.returncode == 1
    assert f"has {len(FILES) - 1} files" in result.stderr and f"lists {len(FILES)} files" in result.stderr
    assert not (fetch.model_dir / ".revision").exists()


def test_access_denied_names_what_to_check(fetch, s3, bucket, store):
    endpoint = store[0]
    iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName="other-model-pod")
    iam.put_user_policy(UserName="other-model-pod", PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/models/other/*"}]}))
    key = iam.create_access_key(UserName="other-model-pod")["AccessKey"]
    publish(s3, bucket)

    def authorization(after: str) -> None:  # moto's switch for IAM checks (its /moto-api/reset-auth)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=after.encode(),
                                                      method="POST", headers={"Content-Type": "text/plain"}))

    authorization("0")
    try:
        result = fetch(MODEL_REVISION=REVISION, AWS_ACCESS_KEY_ID=key["AccessKeyId"],
                       AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    finally:
        authorization("inf")
    assert result.returncode == 1
    assert f"S3 denied access (AccessDenied) to list s3://{bucket}/{PREFIX}/{REVISION}/" in result.stderr
    assert f"MODEL_BUCKET ({bucket}) and MODEL_PREFIX ({PREFIX})" in result.stderr


def test_bad_settings_exit_2(fetch):
    assert fetch(MODEL_REVISION="main").returncode == 2
    missing = fetch(MODEL_DIR="")
    assert missing.returncode == 2 and "MODEL_DIR" in missing.stderr
    assert fetch(MODEL_TRANSFER_CLIENT="s5cmd").returncode == 2


@pytest.mark.parametrize("document", [
    '{\n  "repo": "%(repo)s",\n  "revision": "%(rev)s",\n  "resolved_from": "main"\n}\n',  # as sync.py writes it
    '{"repo":"%(repo)s","revision":"%(rev)s"}',                                             # compact
    '{"pinned_at": "2026-11-25T12:00:00+00:00", "revision" : "%(rev)s" ,\r\n "repo": "%(repo)s"}',  # reordered, CRLF
    '{"revision": "%(rev)s", "repo": "%(repo)s", "note": {"repo": "x/y"}, "count": 3}',      # a nested "repo"
], ids=["sync.py", "compact", "reordered-crlf", "extra-fields"])
def test_the_pin_is_read_without_python_or_jq(tmp_path, document):
    """The script's json_field function, extracted and run by bash on its own."""
    function = re.search(r"^json_field\(\) \{\n.*?^\}\n", FETCH.read_text(), re.MULTILINE | re.DOTALL).group(0)
    path = tmp_path / "pin.json"
    path.write_text(document % {"repo": REPO, "rev": REVISION})
    script = f'{function}\nprintf "%s|%s" "$(json_field "$1" repo)" "$(json_field "$1" revision)"'
    result = subprocess.run(["/bin/bash", "-c", script, "fetch", str(path)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.stdout == f"{REPO}|{REVISION}"
