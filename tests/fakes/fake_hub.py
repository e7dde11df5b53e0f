"""A local stand-in for the Hugging Face Hub, enough for `hf download <repo> --local-dir <dir>`.

Serves one public model repository from a dict of files, with the headers the Hub sends (commit, ETag,
size), and counts the completed file downloads so tests can tell a skipped or resumed download from a full one.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "3f5b1c2d4e6f708192a3b4c5d6e7f8091a2b3c4d"


class FakeHub:
    def __init__(self, repo: str, files: dict[str, bytes], failing: tuple[str, ...] = ()):
        """`failing` files are listed but refused when fetched (403, as an expired CDN link): a download
        that stops part way, without the client's retries on 5xx slowing the tests down."""
        self.repo, self.files, self.failing = repo, files, set(failing)
        self.downloads: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                hub._answer(self, body=True)

            def do_HEAD(self):
                hub._answer(self, body=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeHub":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = request.path.split("?")[0]
        info_prefix = f"/api/models/{self.repo}/revision/"
        tree_prefix = f"/api/models/{self.repo}/tree/"
        resolve_prefix = f"/{self.repo}/resolve/"
        if path.startswith(tree_prefix):
            entries = [{"type": "file", "path": name, "size": len(content),
                        "oid": hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()}
                       for name, content in self.files.items()]
            self._send(request, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"}, body)
        elif path.startswith(info_prefix):
            payload = json.dumps({"id": self.repo, "sha": COMMIT, "private": False,
                                  "siblings": [{"rfilename": name} for name in self.files]}).encode()
            self._send(request, 200, payload, {"Content-Type": "application/json"}, body)
        elif path.startswith(resolve_prefix):
            name = path[len(resolve_prefix):].split("/", 1)[1]
            content = self.files.get(name)
            if name in self.failing and body:
                self._send(request, 403, b"link expired", {}, body)
                return
            if content is None:
                self._send(request, 404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
                return
            if body:
                self.downloads.append(name)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}
            self._send(request, 200, content, headers, body)
        else:
            self._send(request, 404, b"not found", {"X-Error-Code": "RepoNotFound"}, body)

    @staticmethod
    def _send(request, status, payload, headers, body):
        request.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            request.send_header(key, value)
        request.end_headers()
        if body:
            request.wfile.write(payload)
