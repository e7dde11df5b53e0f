"""A stand-in for vLLM 0.9's OpenAI-compatible server behind the stack's API key, for the tools' tests.

It answers like the real one: `/health` with an empty 200, `/v1/models` in vLLM's ModelList shape,
`/v1/completions` in the shape the EKS workshop printed, `/v1/chat/completions` as a Server-Sent Events
stream (role chunk, content chunks, finish chunk, a usage chunk with empty choices when the client asks
for `stream_options.include_usage`, `data: [DONE]`), `/invocations` (SageMaker: a completion or a chat by
the body), and 404 with vLLM's error object for a model it does not serve.

With `api_key`, every path but /health, /ping, /metrics and /version needs exactly one
`Authorization: Bearer <key>` header, or gets vLLM's 401 `{"error": "Unauthorized"}`: what the stack's
middleware does. `key_guards_only_v1` keeps vLLM's own check instead, which guards only paths starting
with /v1 and so leaves /invocations open.

While "loading", vLLM has bound its port but does not listen yet, so connections are refused;
`listen_after` does the same. `unhealthy_for` makes /health answer 503 for a while instead.

For the load tool: requests are served concurrently (a thread per connection, `max_in_flight` records the
most chat requests at once); chat requests are numbered as they arrive, and request i waits
`first_token_delays[i % len]` before its first token, answers `chat_status` when `fail_every` divides i + 1,
hangs up without an answer when `hang_up_every` divides i + 1, and breaks off with vLLM's in-stream error
event when `stream_error_every` divides i + 1. `malformed_stream` sends an event that is not JSON instead,
and `cut_off` ends the body after a few tokens.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Sequence
from urllib.parse import urlsplit

MODEL_ROOT = "/models/mistral-7b-v0.3"
# The completion text and usage of the EKS workshop's real answer (testing.md).
COMPLETION_TEXT = ("1. Red 2. Orange 3. Yellow 4. Green 5. Blue 6. Indigo 7. Violet\n\nThe order of the colors "
                   "in a rainbow is determined by the wavelength of the light. Red has the longest wavelength, "
                   "and violet has the shortest. This order is often remembered by the acronym ROYGBIV, which "
                   "stands for Red, Orange, Yellow, Green, Blue, Indigo, and Violet.")
CHAT_PIECES = ["The", " colors", " of", " the", " rainbow", " are", " red,", " orange,", " yellow,", " green,",
               " blue,", " indigo", " and", " violet."]
# Seconds between streamed tokens, so the timings the tools report are measurable.
TOKEN_DELAY = 0.005
# Reachable without the key (the probes, the metrics collector, a version string).
OPEN_PATHS = frozenset({"/health", "/ping", "/metrics", "/version"})
UNAUTHORIZED = {"error": "Unauthorized"}


class Request(NamedTuple):
    method: str
    path: str
    body: Any
    # Header names lower-cased.
    headers: dict[str, str]


class FakeVllm:
    def __init__(self, served_name: str = "mistral", *, api_key: str | None = None,
                 key_guards_only_v1: bool = False, listen_after: float = 0.0, unhealthy_for: float = 0.0,
                 empty_completion: bool = False, chat_status: int = 200, fail_every: int = 0,
                 stream_error_every: int = 0, hang_up_every: int = 0, malformed_stream: bool = False,
                 cut_off: bool = False,
                 first_token_delays: Sequence[float] = ()):
        self.served_name = served_name
        self.api_key = api_key
        self.key_guards_only_v1 = key_guards_only_v1
        self.listen_after = listen_after
        self.unhealthy_for = unhealthy_for
        self.empty_completion = empty_completion
        self.chat_status = chat_status
        self.fail_every = fail_every
        self.stream_error_every = stream_error_every
        self.hang_up_every = hang_up_every
        self.malformed_stream = malformed_stream
        self.cut_off = cut_off
        self.first_token_delays = tuple(first_token_delays)
        # Every request in arrival order, for the tests to inspect.
        self.requests: list[Request] = []
        # Chat requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._chats = itertools.count()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        # A listen backlog above the load tool's concurrency cap: no connection waits for a slot.
        self._server.request_queue_size = 64
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
        return [request.path for request in self.requests]

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def chat_started(self) -> int:
        """The chat request's number, counting from 1."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return next(self._chats) + 1

    def chat_ended(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def guards(self, path: str) -> bool:
        if self.api_key is None:
            return False
        return path.startswith("/v1") if self.key_guards_only_v1 else path not in OPEN_PATHS


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeVllm:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _admit(self, method: str, body: Any) -> str | None:
        """Record the request; the path to serve, or None once it has been refused."""
        path = urlsplit(self.path).path
        self.fake.record(Request(method, path, body, {k.lower(): v for k, v in self.headers.items()}))
        values = self.headers.get_all("Authorization") or []
        if self.fake.guards(path) and values != [f"Bearer {self.fake.api_key}"]:
            self._json(401, UNAUTHORIZED)
            return None
        return path

    def do_GET(self) -> None:
        path = self._admit("GET", None)
        if path is None:
            return
        if path == "/health":
            self._send(200 if self.fake.healthy() else 503, b"")
        elif path == "/v1/models":
            self._json(200, _model_list(self.fake.served_name))
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        # Read the body before any answer: a keep-alive connection must not be left holding it.
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
        path = self._admit("POST", body)
        if path is None:
            return
        if path == "/invocations":
            # vLLM runs a completion for a body with a prompt, a chat for one with messages.
            path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self._json(404, {"detail": "Not Found"})
        elif body.get("model") != self.fake.served_name:
            self._json(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404))
        elif path == "/v1/completions":
            self._json(200, _completion(self.fake.served_name, "" if self.fake.empty_completion else COMPLETION_TEXT))
        else:
            self._chat(body)

    def _chat(self, body: dict[str, Any]) -> None:
        number = self.fake.chat_started()
        try:
            self._answer_chat(body, number)
        finally:
            self.fake.chat_ended()

    def _answer_chat(self, body: dict[str, Any], number: int) -> None:
        if self.fake.hang_up_every and number % self.fake.hang_up_every == 0:
            # Close the connection without a word, as a crashing server or a broken port-forward does.
            self.close_connection = True
            return
        failing = self.fake.chat_status != 200 and (not self.fake.fail_every or number % self.fake.fail_every == 0)
        if failing:
            self._json(self.fake.chat_status, _error("EngineCore encountered an issue.", "InternalServerError",
                                                     self.fake.chat_status))
            return
        delays = self.fake.first_token_delays
        first_delay = delays[(number - 1) % len(delays)] if delays else TOKEN_DELAY
        broken = bool(self.fake.stream_error_every) and number % self.fake.stream_error_every == 0
        self._stream_chat(body, first_delay, broken)

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode())

    def _stream_chat(self, body: dict[str, Any], first_delay: float, broken: bool) -> None:
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
        for i, piece in enumerate(CHAT_PIECES):
            time.sleep(first_delay if i == 0 else TOKEN_DELAY)
            if self.fake.malformed_stream and i == 2:
                self._chunk(b"data: {not json\n\n")
                break
            if self.fake.cut_off and i == 2:
                # The body just ends: no finish chunk, no [DONE] (a dying server or port-forward).
                self._chunk(b"")
                return
            if broken and i == 2:
                # vLLM 0.9 reports an engine failure inside a started stream as an error event, then [DONE].
                self._chunk(("data: " + json.dumps({"error": _error("EngineCore encountered an issue.",
                                                                    "InternalServerError", 500)}) + "\n\n").encode())
                break
            event([{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}])
        else:
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
