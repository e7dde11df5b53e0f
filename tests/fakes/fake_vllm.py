"""A stand-in for vLLM 0.9's OpenAI-compatible server, for the smoke tool's tests.

It answers like the real one: `/health` with an empty 200, `/v1/models` in vLLM's ModelList shape,
`/v1/completions` in the shape the EKS workshop printed, `/v1/chat/completions` as a Server-Sent Events
stream (role chunk, content chunks, finish chunk, a usage chunk with empty choices, `data: [DONE]`), and
404 with vLLM's error object for a model it does not serve.

While "loading", vLLM has bound its port but does not listen yet, so connections are refused;
`listen_after` does the same. `unhealthy_for` makes /health answer 503 for a while instead.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ROOT = "/models/mistral-7b-v0.3"
# The completion text and usage of the EKS workshop's real answer (testing.md).
COMPLETION_TEXT = ("1. Red 2. Orange 3. Yellow 4. Green 5. Blue 6. Indigo 7. Violet\n\nThe order of the colors "
                   "in a rainbow is determined by the wavelength of the light. Red has the longest wavelength, "
                   "and violet has the shortest. This order is often remembered by the acronym ROYGBIV, which "
                   "stands for Red, Orange, Yellow, Green, Blue, Indigo, and Violet.")
CHAT_PIECES = ["The", " colors", " of", " the", " rainbow", " are", " red,", " orange,", " yellow,", " green,",
               " blue,", " indigo", " and", " violet."]
# Seconds between streamed tokens, so the timings the smoke tool reports are measurable.
TOKEN_DELAY = 0.005


class FakeVllm:
    def __init__(self, served_name: str = "mistral", *, listen_after: float = 0.0, unhealthy_for: float = 0.0,
                 empty_completion: bool = False, chat_status: int = 200):
        self.served_name = served_name
        self.listen_after = listen_after
        self.unhealthy_for = unhealthy_for
        self.empty_completion = empty_completion
        self.chat_status = chat_status
        # (method, path, JSON body or None) of every request, for the tests to inspect.
        self.requests: list[tuple[str, str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._serving = threading.Event()
        self._timer: threading.Timer | None = None
        self._started = 0.0

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeVllm":
        # Bind now (the port is taken, connections are refused), listen later: what vLLM does while loading.
        self._server.server_bind()
        self._started = time.monotonic()
        if self.listen_after:
            self._timer = threading.Timer(self.listen_after, self._serve)
            self._timer.start()
        else:
            self._serve()
        return self

    def _serve(self) -> None:
        self._server.server_activate()
        self._serving.set()
        # A short poll interval so stop() returns quickly.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._serving.is_set():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeVllm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def healthy(self) -> bool:
        return time.monotonic() - self._started >= self.listen_after + self.unhealthy_for

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeVllm:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.fake.requests.append(("GET", self.path, None))
        if self.path == "/health":
            self._send(200 if self.fake.healthy() else 503, b"")
        elif self.path == "/v1/models":
            self._json(200, _model_list(self.fake.served_name))
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        self.fake.requests.append(("POST", self.path, body))
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"detail": "Not Found"})
        elif body.get("model") != self.fake.served_name:
            self._json(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404))
        elif self.path == "/v1/completions":
            self._json(200, _completion(self.fake.served_name, "" if self.fake.empty_completion else COMPLETION_TEXT))
        elif self.fake.chat_status != 200:
            self._json(self.fake.chat_status, _error("EngineCore encountered an issue.", "InternalServerError",
                                                     self.fake.chat_status))
        else:
            self._stream_chat(body)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode())

    def _stream_chat(self, body: dict[str, Any]) -> None:
        # uvicorn streams with chunked transfer encoding; so does this.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk_id, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.fake.served_name

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            data = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **extra}
            self._chunk(f"data: {json.dumps(data)}\n\n".encode())

        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
        for piece in CHAT_PIECES:
            time.sleep(TOKEN_DELAY)
            event([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "stop_reason": None}])
        if (body.get("stream_options") or {}).get("include_usage", False):
            event([], usage={"prompt_tokens": 14, "total_tokens": 14 + len(CHAT_PIECES),
                             "completion_tokens": len(CHAT_PIECES)})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _model_list(name: str) -> dict[str, Any]:
    created = int(time.time())
    return {"object": "list", "data": [{
        "id": name, "object": "model", "created": created, "owned_by": "vllm", "root": MODEL_ROOT, "parent": None,
        "max_model_len": 2048,
        "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission", "created": created,
                        "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                        "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                        "organization": "*", "group": None, "is_blocking": False}],
    }]}


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length", "stop_reason": None,
                     "prompt_logprobs": None}],
        "usage": {"prompt_tokens": 13, "total_tokens": 113, "completion_tokens": 100, "prompt_tokens_details": None},
        "kv_transfer_params": None,
    }


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}
