"""A local stand-in for the Hugging Face Hub: enough for `hf download <repo> --local-dir <dir>` and for
huggingface_hub 1.x's `model_info(..., files_metadata=True)` plus plain streaming GETs of files.

Serves one model repository from a dict of files, with the headers and JSON the Hub sends (commit, ETag, size;
`?blobs=true` adds each file's size, git blob id and, for large files, its LFS SHA-256). `main` resolves to the
current commit; `move_main()` makes a new commit the way a re-upload does, while the old commit stays
reachable by its id. Counts what was fetched so tests can tell a skipped or resumed copy from a full one.

Failure modes, each off by default: `failing` files are refused (403, as an expired CDN link), `drop_once`
cuts a file's first download after some bytes (the client may resume with an HTTP Range request),
`stall` stops a file part way until `release()` (to kill a client mid-file), `gated` refuses file downloads
as the Hub does for gated repositories, `token` makes the repository private, `cdn` redirects large files
to another origin (http://localhost:<port>/cdn/...), as the Hub redirects LFS files to its CDN, and `tamper`
serves other bytes for a file than its listing describes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

COMMIT = "3f5b1c2d4e6f708192a3b4c5d6e7f8091a2b3c4d"
LFS_THRESHOLD = 64 * 1024  # files at least this large are LFS files here (on the Hub: per .gitattributes)


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(content).hexdigest()}\n"
            f"size {len(content)}\n").encode()


class FakeHub:
    def __init__(self, repo: str, files: dict[str, bytes], failing: tuple[str, ...] = (), *,
                 drop_once: dict[str, int] | None = None, stall: dict[str, int] | None = None,
                 gated: bool = False, token: str | None = None, cdn: bool = False,
                 tamper: dict[str, bytes] | None = None):
        """`failing` files are listed but refused when fetched (403, as an expired CDN link): a download
        that stops part way, without the client's retries on 5xx slowing the tests down."""
        self.repo, self.files, self.failing = repo, files, set(failing)
        self.commits: dict[str, dict[str, bytes]] = {COMMIT: dict(files)}
        self.main = COMMIT
        self.drop_once = dict(drop_once or {})
        self.stall = dict(stall or {})
        self.gated, self.token, self.cdn = gated, token, cdn
        # Bytes served for a file instead of the ones its listing describes (size and hashes).
        self.tamper = dict(tamper or {})
        # File downloads from the start, by path; resumed ones (Range) as (path, first byte).
        self.downloads: list[str] = []
        self.resumed: list[tuple[str, int]] = []
        # The revision of every repository-info request (`main`, a commit id, or None for the default branch).
        self.info_requests: list[str | None] = []
        # Whether each request carried an Authorization header: (where, path, authorized).
        self.authorization: list[tuple[str, str, bool]] = []
        self.stalled = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.cdn_url = f"http://localhost:{self.server.server_port}/cdn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def move_main(self, files: dict[str, bytes] | None = None) -> str:
        """A new commit on `main` (the repository re-uploaded); returns its id. The old commit stays."""
        with self._lock:
            commit = hashlib.sha1(f"{self.main}:{len(self.commits)}".encode()).hexdigest()
            self.commits[commit] = dict(self.files if files is None else files)
            self.main = commit
            self.files = self.commits[commit]
        return commit

    def release(self) -> None:
        self._release.set()

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _commit(self, revision: str) -> str | None:
        if revision == "main":
            return self.main
        return revision if revision in self.commits else None

    def _siblings(self, files: dict[str, bytes], blobs: bool) -> list[dict]:
        siblings = []
        for name, content in files.items():
            entry: dict = {"rfilename": name}
            if blobs:
                if len(content) >= LFS_THRESHOLD:
                    pointer = lfs_pointer(content)
                    entry.update(size=len(content), blobId=git_blob_id(pointer),
                                 lfs={"size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                                      "pointerSize": len(pointer)})
                else:
                    entry.update(size=len(content), blobId=git_blob_id(content))
            siblings.append(entry)
        return siblings

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlsplit(request.path)
        path, query = unquote(url.path), parse_qs(url.query)
        authorized = request.headers.get("Authorization") == f"Bearer {self.token}" if self.token else True
        where = "cdn" if path.startswith("/cdn/") else "hub"
        self.authorization.append((where, path, request.headers.get("Authorization") is not None))
        info_prefix = f"/api/models/{self.repo}/revision/"
        tree_prefix = f"/api/models/{self.repo}/tree/"
        resolve_prefix = f"/{self.repo}/resolve/"
        json_type = {"Content-Type": "application/json"}
        if self.token and not authorized and where == "hub":
            # The Hub answers 401 for private repositories, as for missing ones.
            self._send(request, 401, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
        elif path.startswith(tree_prefix):
            commit = self._commit(path[len(tree_prefix):].split("/", 1)[0])
            if commit is None:
                self._send(request, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"}, body)
                return
            files = self.commits[commit]
            entries = [{"type": "file", "path": name, "size": len(content), "oid": git_blob_id(content)}
                       for name, content in files.items()]
            self._send(request, 200, json.dumps(entries).encode(), json_type, body)
        elif path.startswith(info_prefix) or path == f"/api/models/{self.repo}":
            revision = path[len(info_prefix):] if path.startswith(info_prefix) else None
            self.info_requests.append(revision)
            commit = self._commit(revision or "main")
            if commit is None:
                self._send(request, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"}, body)
                return
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            payload = json.dumps({"_id": "0" * 24, "id": self.repo, "modelId": self.repo, "sha": commit,
                                  "private": bool(self.token), "gated": "auto" if self.gated else False,
                                  "disabled": False, "tags": [],
                                  "siblings": self._siblings(self.commits[commit], blobs)}).encode()
            self._send(request, 200, payload, json_type, body)
        elif path.startswith(resolve_prefix):
            revision, name = path[len(resolve_prefix):].split("/", 1)
            commit = self._commit(revision)
            if commit is None:
                self._send(request, 404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"}, body)
                return
            content = self.commits[commit].get(name)
            if self.gated:
                self._send(request, 403, b"Access to model is restricted", {"X-Error-Code": "GatedRepo"}, body)
                return
            if name in self.failing and body:
                self._send(request, 403, b"link expired", {}, body)
                return
            if content is None:
                self._send(request, 404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
                return
            headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}
            if self.cdn and len(content) >= LFS_THRESHOLD:
                digest = hashlib.sha256(content).hexdigest()
                headers.update({"Location": f"{self.cdn_url}/{digest}?name={quote(name)}",
                                "X-Linked-Size": str(len(content)), "X-Linked-ETag": f'"{digest}"'})
                self._send(request, 302, b"", headers, body)
                return
            self._serve_file(request, name, content, headers, body)
        elif where == "cdn":
            digest = path[len("/cdn/"):]
            found = [(n, c) for files in self.commits.values() for n, c in files.items()
                     if hashlib.sha256(c).hexdigest() == digest]
            if not found:
                self._send(request, 404, b"no such object", {}, body)
                return
            name, content = found[0]
            self._serve_file(request, name, content, {"Content-Type": "application/octet-stream",
                                                      "ETag": f'"{digest}"'}, body)
        else:
            self._send(request, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, body)

    def _serve_file(self, request, name: str, content: bytes, headers: dict, body: bool) -> None:
        content = self.tamper.get(name, content)
        start = 0
        ranged = request.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-"):
            start = int(ranged[len("bytes="):-1])
        if not body:
            self._send(request, 200, content, headers, body)
            return
        with self._lock:
            if start:
                self.resumed.append((name, start))
            else:
                self.downloads.append(name)
            cut = self.drop_once.pop(name, None) if not start else None
        if start:
            headers = {**headers, "Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"}
        status, payload = (206, content[start:]) if start else (200, content)
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            request.send_header(key, value)
        request.end_headers()
        if cut is not None:
            request.wfile.write(payload[:cut])
            request.wfile.flush()
            request.close_connection = True
            return
        if name in self.stall and not start:
            request.wfile.write(payload[:self.stall[name]])
            request.wfile.flush()
            self.stalled.set()
            self._release.wait(timeout=60)
            request.close_connection = True
            return
        request.wfile.write(payload)

    @staticmethod
    def _send(request, status, payload, headers, body):
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(payload)
