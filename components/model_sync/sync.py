#!/usr/bin/env python3
"""Copies one Hugging Face model repository, at one commit, into the stack's model store (S3), once.

Runs in the model's sync Job. Model pods then copy the files from S3 (components/model_server/fetch-model.sh)
instead of each pulling them from the Hub.

Layout, under s3://$MODEL_BUCKET/$MODEL_PREFIX/:
    <revision>/<path>          every file of the repository at that commit, same relative paths
    <revision>/.sync-complete  written last: {"repo", "revision", "file_count", "total_bytes", "finished_at"}
    pinned-revision            {"repo", "revision", "resolved_from", "pinned_at"}: written once, when no
                               revision is configured, so that `main` moving on the Hub changes nothing here

Environment: MODEL_REPO (owner/name), MODEL_REVISION (40 hex digits, or empty), MODEL_BUCKET, MODEL_PREFIX,
AWS_REGION (or AWS_DEFAULT_REGION); HF_TOKEN for gated or private repositories; HF_ENDPOINT and AWS_ENDPOINT_URL
to point elsewhere (tests).
Tuning (defaults in brackets): MODEL_SYNC_PART_MIB [64], MODEL_SYNC_CONCURRENCY [4], MODEL_SYNC_PARALLEL_FILES [2].

No local disk: each file streams from the Hub's resolve URL (plain HTTPS, Xet off) straight into an S3 multipart
upload. Memory is bounded by s3transfer's in-memory part limit: at most
    (MODEL_SYNC_CONCURRENCY + MODEL_SYNC_PARALLEL_FILES) x part size
of file data at once (parts being uploaded, plus one part being read per file), 6 x 64 MiB = 384 MiB by
default, plus one transient copy of a part while it is assembled and the interpreter (~100 MiB). The part
size grows past MODEL_SYNC_PART_MIB only for files over 10,000 parts (640 GB at 64 MiB).

Restartable: files already in S3 with the right size are skipped, so a restart after a failure or a kill
resumes at file granularity; multipart uploads left under the prefix by a killed run are aborted at start.
Every file is checked while it streams (byte count, and the Hub's SHA-256 for LFS files or git blob SHA-1
for the others) and after upload (size in S3); the marker is written only when every file is in place.

Exit codes: 0 synced (or already synced), 1 failed (the message says why), 2 bad configuration.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

MARKER = ".sync-complete"
PIN = "pinned-revision"
COMMIT = re.compile(r"[0-9a-f]{40}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
MIB = 1024 * 1024
STREAM_CHUNK = MIB  # what one read from the HTTP stream returns at most
STREAM_RETRIES = 5  # reconnections (HTTP Range) of one file's stream without progress before giving up


class SyncError(Exception):
    """A failure with a message for the Job's log."""


class ConfigError(SyncError):
    pass


def log(message: str) -> None:
    print(message, flush=True)


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def rate(size: int, seconds: float) -> str:
    return f"{size / 1e6 / max(seconds, 1e-6):.1f} MB/s"


@dataclass(frozen=True)
class Settings:
    repo: str
    revision: str  # empty: use the pin, or pin `main`
    bucket: str
    prefix: str
    region: str
    part_size: int
    concurrency: int
    parallel_files: int

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        missing = [name for name in ("MODEL_REPO", "MODEL_BUCKET", "MODEL_PREFIX") if not env.get(name)]
        missing += [] if region else ["AWS_REGION (the bucket's region)"]
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        repo = env["MODEL_REPO"]
        if not REPO_ID.fullmatch(repo):
            raise ConfigError(f"MODEL_REPO {repo!r} is not a Hugging Face repository id (owner/name)")
        revision = env.get("MODEL_REVISION", "").strip()
        if revision and not COMMIT.fullmatch(revision):
            raise ConfigError(f"MODEL_REVISION {revision!r} is not a commit id (40 lowercase hex digits)")
        prefix = env["MODEL_PREFIX"].strip("/")
        if not prefix:
            raise ConfigError("MODEL_PREFIX is empty")

        def number(name: str, default: int) -> int:
            raw = env.get(name) or str(default)
            if not raw.isdigit() or int(raw) < 1:
                raise ConfigError(f"{name} must be a positive integer, not {raw!r}")
            return int(raw)

        return cls(repo=repo, revision=revision, bucket=env["MODEL_BUCKET"], prefix=prefix, region=region,
                   part_size=max(number("MODEL_SYNC_PART_MIB", 64), 5) * MIB,
                   concurrency=number("MODEL_SYNC_CONCURRENCY", 4),
                   parallel_files=number("MODEL_SYNC_PARALLEL_FILES", 2))

    def key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None  # LFS files: SHA-256 of the content
    blob_id: str | None  # other files: git blob SHA-1


class Store:
    """The model's prefix in the bucket, with S3 errors turned into messages that say what to check."""

    def __init__(self, settings: Settings):
        import boto3
        from botocore.config import Config
        from s3transfer.manager import TransferConfig, TransferManager

        self.settings = settings
        # AWS_ENDPOINT_URL is read by botocore itself (a test's S3; unset in the cluster).
        self.client = boto3.session.Session().client(
            "s3", region_name=settings.region,
            config=Config(retries={"mode": "standard", "max_attempts": 5},
                          max_pool_connections=settings.concurrency + settings.parallel_files + 2))
        config = TransferConfig(multipart_threshold=settings.part_size, multipart_chunksize=settings.part_size,
                                max_request_concurrency=settings.concurrency,
                                max_submission_concurrency=settings.parallel_files,
                                # The memory bound: parts read from the Hub and not yet uploaded, all files together.
                                max_in_memory_upload_chunks=settings.concurrency)
        self.transfers = TransferManager(self.client, config)

    def fail(self, error: Exception, action: str, key: str) -> SyncError:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"s3://{self.settings.bucket}/{key}"
        if isinstance(error, NoCredentialsError):
            return SyncError(f"no AWS credentials to {action} {where}: the Job's service account needs its EKS Pod "
                             "Identity association (and the eks-pod-identity-agent add-on)")
        if not isinstance(error, ClientError):
            return SyncError(f"could not {action} {where}: {error}")
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch") \
                or status == 403:
            return SyncError(f"S3 denied access ({code or status}) to {action} {where}. The sync Job's role may "
                             "read, write and list only its own model's prefix in the bucket: check that MODEL_BUCKET "
                             f"({self.settings.bucket}) and MODEL_PREFIX ({self.settings.prefix}) are the bucket and "
                             "prefix its IAM policy names")
        if code == "NoSuchBucket":
            return SyncError(f"the bucket {self.settings.bucket} does not exist (NoSuchBucket) when trying to "
                             f"{action} {where}: check MODEL_BUCKET and AWS_REGION")
        message = error.response.get("Error", {}).get("Message", "")
        return SyncError(f"could not {action} {where}: {code or status} {message}".rstrip())

    def read_json(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The object's JSON and ETag; (None, None) if there is no such object; ({}, etag) if it is not JSON."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.exists(key):
            return None, None
        try:
            answer = self.client.get_object(Bucket=self.settings.bucket, Key=key)
            body = answer["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None, None
            raise self.fail(error, "read", key) from error
        except BotoCoreError as error:
            raise self.fail(error, "read", key) from error
        try:
            document = json.loads(body)
        except ValueError:
            return {}, answer.get("ETag")
        return (document if isinstance(document, dict) else {}), answer.get("ETag")

    def put_json(self, key: str, document: dict[str, Any], **conditions: str) -> bool:
        """Writes the object; False if a condition (IfNoneMatch / IfMatch) did not hold."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.settings.bucket, Key=key, ContentType="application/json",
                                   Body=(json.dumps(document, indent=2) + "\n").encode(), **conditions)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise self.fail(error, "write", key) from error
        except BotoCoreError as error:
            raise self.fail(error, "write", key) from error
        return True

    def exists(self, key: str) -> bool:
        """Whether the object exists, by listing rather than HEAD: S3 answers 403 instead of 404 for a missing
        object unless s3:ListBucket applies to the request, and the role's ListBucket is limited to the prefix."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # The key itself sorts first among the keys it prefixes.
            page = self.client.list_objects_v2(Bucket=self.settings.bucket, Prefix=key, MaxKeys=1)
        except (ClientError, BotoCoreError) as error:
            raise self.fail(error, "look for", key) from error
        return any(item["Key"] == key for item in page.get("Contents", []))

    def sizes(self, folder: str) -> dict[str, int]:
        """Size of every object under `folder/`, by path relative to it."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.settings.bucket,
                                                                              Prefix=folder + "/"):
                for item in page.get("Contents", []):
                    found[item["Key"][len(folder) + 1:]] = item["Size"]
        except (ClientError, BotoCoreError) as error:
            raise self.fail(error, "list", folder + "/") from error
        return found

    def abort_stale_uploads(self) -> int:
        """Aborts the multipart uploads a killed run left under the prefix (they cost storage until aborted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        folder = self.settings.prefix + "/"
        aborted = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.settings.bucket,
                                                                                     Prefix=folder):
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
        except (ClientError, BotoCoreError) as error:
            raise self.fail(error, "abort the unfinished multipart uploads under", folder) from error
        return aborted

    def upload(self, stream: "HubStream", key: str, size: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.subscribers import BaseSubscriber

        class KnownSize(BaseSubscriber):
            # The Hub told the size: s3transfer then needs no read-ahead to choose single or multipart, and
            # widens the parts if a file would need more than 10,000.
            def on_queued(self, future, **kwargs):
                future.meta.provide_transfer_size(size)

        try:
            self.transfers.upload(stream, self.settings.bucket, key, subscribers=[KnownSize()]).result()
            stored = self.client.head_object(Bucket=self.settings.bucket, Key=key)["ContentLength"]
        except (ClientError, BotoCoreError) as error:
            raise self.fail(error, "upload", key) from error
        if stored != size:
            raise SyncError(f"s3://{self.settings.bucket}/{key} has {stored} bytes after upload, expected {size}")

    def close(self) -> None:
        self.transfers.shutdown()


class HubStream:
    """A read-only, non-seekable file over one file's download from the Hub.

    Reconnects with an HTTP Range request when the connection drops part way (as huggingface_hub's own
    http_get does), and checks the byte count and the content hash when the stream ends: a mismatch raises
    inside the upload, so s3transfer aborts the multipart upload instead of completing a wrong object.
    """

    def __init__(self, url: str, file: RepoFile, headers: dict[str, str]):
        self.url, self.file, self.headers = url, file, headers
        self.position = 0
        self.buffer = b""
        self.finished = False
        self.sha256 = hashlib.sha256() if file.sha256 else None
        self.sha1 = None
        if not file.sha256 and file.blob_id:
            self.sha1 = hashlib.sha1(b"blob %d\0" % file.size)
        self._context = None
        self._chunks: Iterator[bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, amount: int | None = -1) -> bytes:
        pieces, wanted = [], (amount if amount is not None and amount >= 0 else None)
        have = 0
        while wanted is None or have < wanted:
            if not self.buffer:
                self.buffer = self._next_chunk()
                if not self.buffer:
                    break
            take = self.buffer if wanted is None else self.buffer[:wanted - have]
            self.buffer = self.buffer[len(take):]
            pieces.append(take)
            have += len(take)
        return b"".join(pieces)

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def _open(self) -> None:
        from huggingface_hub import constants
        from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff, httpx

        headers = dict(self.headers)
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
        timeout = httpx.Timeout(constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=30)
        # Retries 429 and 5xx with backoff; follows the Hub's redirect to its CDN, where httpx drops the
        # Authorization header (another origin).
        self._context = http_stream_backoff("GET", self.url, headers=headers, timeout=timeout)
        response = self._context.__enter__()
        try:
            hf_raise_for_status(response)
        except Exception:
            self.close()
            raise
        if self.position and response.status_code != 206:
            self.close()
            raise SyncError(f"{self.file.path}: the Hub ignored the range request while resuming at byte "
                            f"{self.position} (HTTP {response.status_code})")
        self._chunks = response.iter_bytes(chunk_size=STREAM_CHUNK)

    def _next_chunk(self) -> bytes:
        from huggingface_hub.utils import httpx

        if self.finished:
            return b""
        failures = 0
        while True:
            try:
                if self._chunks is None:
                    self._open()
                chunk = next(self._chunks, b"")  # type: ignore[arg-type]
                break
            except (httpx.TransportError, httpx.StreamError) as error:
                self.close()
                self._chunks = None
                failures += 1
                if failures > STREAM_RETRIES:
                    raise SyncError(f"{self.file.path}: the download from the Hub kept failing at byte "
                                    f"{self.position} of {self.file.size}: {error!r}") from error
                log(f"  {self.file.path}: connection lost at byte {self.position} ({error!r}); resuming")
                time.sleep(min(2 ** failures / 4, 8))
        if not chunk:
            self._finish()
            return b""
        self.position += len(chunk)
        if self.position > self.file.size:
            raise SyncError(f"{self.file.path}: the Hub sent more than the {self.file.size} bytes it listed")
        for digest in (self.sha256, self.sha1):
            if digest is not None:
                digest.update(chunk)
        return chunk

    def _finish(self) -> None:
        self.finished = True
        self.close()
        if self.position != self.file.size:
            raise SyncError(f"{self.file.path}: the download ended at byte {self.position} of {self.file.size}")
        if self.sha256 is not None and self.sha256.hexdigest() != self.file.sha256:
            raise SyncError(f"{self.file.path}: SHA-256 {self.sha256.hexdigest()} differs from the Hub's "
                            f"{self.file.sha256}")
        if self.sha1 is not None and self.sha1.hexdigest() != self.file.blob_id:
            raise SyncError(f"{self.file.path}: git blob id {self.sha1.hexdigest()} differs from the Hub's "
                            f"{self.file.blob_id}")


def hub_error(error: Exception, repo: str, revision: str) -> SyncError:
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub.utils import httpx

    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, GatedRepoError):
        return SyncError(f"{repo} is a gated repository (HTTP {status}): accept its terms on the Hub with the account "
                         "whose token the Job gets as HF_TOKEN, or pick another model")
    if isinstance(error, RepositoryNotFoundError):
        return SyncError(f"repository {repo} not found on the Hub (HTTP {status}): check the model's "
                         "huggingFaceRepo; a private or gated repository also needs a token with access (HF_TOKEN)")
    if isinstance(error, RevisionNotFoundError):
        return SyncError(f"revision {revision} not found in {repo} (HTTP {status}): check the model's revision "
                         "setting (a full 40-hex commit id of that repository)")
    if isinstance(error, RemoteEntryNotFoundError):
        return SyncError(f"a file listed in {repo}@{revision} is missing on the Hub (HTTP {status}): {error}")
    if isinstance(error, HfHubHTTPError):
        return SyncError(f"the Hub answered HTTP {status} for {repo}@{revision}: {str(error).splitlines()[0]}")
    if isinstance(error, httpx.HTTPError):
        return SyncError(f"cannot reach the Hub for {repo}: {error!r}")
    return SyncError(f"{repo}@{revision}: {error!r}")


class Hub:
    def __init__(self) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi()

    def commit_of(self, repo: str, revision: str) -> str:
        try:
            return self.api.model_info(repo, revision=revision).sha
        except Exception as error:
            raise hub_error(error, repo, revision) from error

    def files(self, repo: str, revision: str) -> list[RepoFile]:
        try:
            info = self.api.model_info(repo, revision=revision, files_metadata=True)
        except Exception as error:
            raise hub_error(error, repo, revision) from error
        if info.sha and info.sha != revision:
            raise SyncError(f"the Hub answered for commit {info.sha} when asked for {revision}")
        files = []
        for sibling in info.siblings or []:
            if sibling.size is None:
                raise SyncError(f"the Hub listed {sibling.rfilename} without its size")
            files.append(RepoFile(path=sibling.rfilename, size=sibling.size,
                                  sha256=sibling.lfs.sha256 if sibling.lfs else None, blob_id=sibling.blob_id))
        return sorted(files, key=lambda f: f.path)

    def stream(self, repo: str, revision: str, file: RepoFile) -> HubStream:
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        # The exact bytes (no gzip), so the count can be checked against the listed size.
        headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
        return HubStream(hf_hub_url(repo, file.path, revision=revision), file, headers)


def choose_revision(settings: Settings, store: Store, hub: Hub) -> str:
    if settings.revision:
        log(f"revision {settings.revision} (from the model's revision setting)")
        return settings.revision
    pin_key = settings.key(PIN)
    for _ in range(3):
        pin, etag = store.read_json(pin_key)
        conditions = {"IfNoneMatch": "*"}
        if pin is not None:
            if pin.get("repo") == settings.repo and COMMIT.fullmatch(str(pin.get("revision", ""))):
                log(f"revision {pin['revision']} (pinned in {settings.url(PIN)} on {pin.get('pinned_at', '?')})")
                return pin["revision"]
            if pin.get("repo") and pin.get("repo") != settings.repo:
                log(f"{settings.url(PIN)} pins {pin.get('repo')}, not {settings.repo}: pinning again")
            else:
                log(f"{settings.url(PIN)} is not a valid pin: pinning again")
            conditions = {"IfMatch": etag} if etag else {}
        commit = hub.commit_of(settings.repo, "main")
        document = {"repo": settings.repo, "revision": commit, "resolved_from": "main",
                    "pinned_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        # Conditional, so two runs at once cannot pin different commits: the loser reads the winner's pin.
        if store.put_json(pin_key, document, **conditions):
            log(f"pinned main to {commit}; set vllm.models[].revision to keep it explicit")
            return commit
        log(f"{settings.url(PIN)} changed while pinning: reading it again")
    raise SyncError(f"could not pin a revision in {settings.url(PIN)}: it kept changing")


def copy_file(settings: Settings, store: Store, hub: Hub, revision: str, file: RepoFile) -> None:
    started = time.monotonic()
    stream = hub.stream(settings.repo, revision, file)
    try:
        store.upload(stream, settings.key(revision, file.path), file.size)
    except SyncError:
        raise
    except Exception as error:
        # s3transfer re-raises what the stream raised (SyncError above) or a Hub / HTTP error.
        raise hub_error(error, settings.repo, revision) from error
    finally:
        stream.close()
    took = time.monotonic() - started
    log(f"copied  {file.path}: {human(file.size)} in {took:.1f} s ({rate(file.size, took)})")


def sync(settings: Settings) -> None:
    started = time.monotonic()
    store = Store(settings)
    try:
        hub = Hub()
        revision = choose_revision(settings, store, hub)
        if store.exists(settings.key(revision, MARKER)):
            log(f"{settings.repo}@{revision} is already in {settings.url(revision)}/ "
                f"({MARKER} exists); nothing to do")
            return
        aborted = store.abort_stale_uploads()
        if aborted:
            log(f"aborted {aborted} unfinished multipart upload(s) under {settings.url()}/ (left by an earlier run)")
        files = hub.files(settings.repo, revision)
        total = sum(f.size for f in files)
        log(f"{settings.repo}@{revision}: {len(files)} files, {human(total)} -> {settings.url(revision)}/")
        present = store.sizes(settings.key(revision))
        todo = []
        for file in files:
            if present.get(file.path) == file.size:
                log(f"skipped {file.path}: {human(file.size)} already in S3")
            else:
                if file.path in present:
                    log(f"  {file.path}: {present[file.path]} bytes in S3, expected {file.size}: copying again")
                todo.append(file)
        failures: list[SyncError] = []
        lock = threading.Lock()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def work(file: RepoFile) -> None:
            try:
                copy_file(settings, store, hub, revision, file)
            except SyncError as error:
                with lock:
                    failures.append(error)
                log(f"failed  {file.path}: {error}")

        with ThreadPoolExecutor(max_workers=settings.parallel_files) as pool:
            list(pool.map(work, todo))
        if failures:
            more = f" (and {len(failures) - 1} more failure(s) above)" if len(failures) > 1 else ""
            raise SyncError(f"{failures[0]}{more}; no marker written; run the Job again to resume")
        stored = store.sizes(settings.key(revision))
        wrong = [f.path for f in files if stored.get(f.path) != f.size]
        if wrong:
            raise SyncError(f"after copying, S3 lacks or has the wrong size for: {', '.join(wrong)}")
        marker = {"repo": settings.repo, "revision": revision, "file_count": len(files), "total_bytes": total,
                  "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        store.put_json(settings.key(revision, MARKER), marker)
        copied = sum(f.size for f in todo)
        took = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log(f"synced {settings.repo}@{revision} to {settings.url(revision)}/: {len(files)} files, {human(total)} "
            f"({len(todo)} copied, {human(copied)}; {len(files) - len(todo)} skipped) in {took:.1f} s "
            f"({rate(copied, took)}); peak memory {peak:.0f} MiB ({before:.0f} MiB before copying)")
    finally:
        store.close()


def main() -> int:
    # Before huggingface_hub is imported (it reads these once): plain HTTPS, never Xet (hf-xet is not even
    # installed); no telemetry, which in huggingface_hub 1.33 also fetches /api/agent-harnesses and caches it
    # under HF_HOME (utils/_headers.py, utils/_detect_agent.py).
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        settings = Settings.from_env(dict(os.environ))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    try:
        sync(settings)
    except SyncError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
