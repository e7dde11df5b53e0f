"""The API-key middleware of the model server (components/model_server/api_key_auth.py), offline.

The stub below carries the route table of vLLM 0.9.1's OpenAI-compatible server, read from
vllm/entrypoints/openai/api_server.py at upstream tag v0.9.1 (commit b6553be1bc75f046b00046a4ad7576364d03c835;
api_server.py and cli_args.py are unchanged in aws-neuron/upstreaming-to-vllm main dd417b31, the newest
fork branch readable here). Line numbers below are of that file.

- Always there: every `@router.get/post` at module level, plus `mount_metrics` (L330-356: the
  Instrumentator's `GET /metrics` and a `Mount("/metrics")` whose regex is `^/metrics(?P<path>.*)$`, so
  `/metrics<anything>` reaches the metrics app), plus FastAPI's own `/openapi.json`, `/docs`,
  `/docs/oauth2-redirect` and `/redoc` (FastAPI defaults; `build_app` L1018 drops them only under
  `--disable-fastapi-docs`, which our pod does not pass).
- Only under flags, included here as the worst case: `VLLM_SERVER_DEV_MODE` (L864-911),
  `VLLM_TORCH_PROFILER_DIR` (L955-972), `VLLM_ALLOW_RUNTIME_LORA_UPDATING` (L975-1004).

`build_app` (L1017-1120) is rebuilt in order: CORS (cli_args defaults), vLLM's own key check when a key
is set (L1062-1077, reproduced in `vllm_v1_key_check`: OPTIONS pass, root_path stripped, only paths
starting with `/v1` checked, exact `Bearer <key>`, else 401 `{"error": "Unauthorized"}`), then each
`--middleware` (L1108-1117): import_module + getattr, `app.add_middleware(cls)` for a class.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

MODULE_FILE = Path(__file__).resolve().parents[1] / "components" / "model_server" / "api_key_auth.py"
# What the pod passes to `vllm serve --middleware` (module on PYTHONPATH=/etc/model-server).
MIDDLEWARE_ARG = "api_key_auth.ApiKeyAuth"
KEY = "sk-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
UNAUTHORIZED = b'{"error":"Unauthorized"}'
OPEN = {"/health", "/ping", "/metrics", "/version"}


def _load():
    spec = importlib.util.spec_from_file_location("api_key_auth", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


api_key_auth = _load()
ApiKeyAuth = api_key_auth.ApiKeyAuth

# (path, methods, where it comes from in api_server.py v0.9.1)
ALWAYS = "always"
DEV = "VLLM_SERVER_DEV_MODE"
PROFILER = "VLLM_TORCH_PROFILER_DIR"
LORA = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
DOCS = "FastAPI default, unless --disable-fastapi-docs"
VLLM_091_ROUTES = [
    ("/health", ("GET",), ALWAYS),                    # L408
    ("/load", ("GET",), ALWAYS),                      # L415
    ("/ping", ("GET", "POST"), ALWAYS),               # L434-435
    ("/tokenize", ("POST",), ALWAYS),                 # L441
    ("/detokenize", ("POST",), ALWAYS),               # L479
    ("/v1/models", ("GET",), ALWAYS),                 # L513
    ("/version", ("GET",), ALWAYS),                   # L521
    ("/v1/chat/completions", ("POST",), ALWAYS),      # L527
    ("/v1/completions", ("POST",), ALWAYS),           # L566
    ("/v1/embeddings", ("POST",), ALWAYS),            # L610
    ("/pooling", ("POST",), ALWAYS),                  # L639
    ("/classify", ("POST",), ALWAYS),                 # L667
    ("/score", ("POST",), ALWAYS),                    # L688
    ("/v1/score", ("POST",), ALWAYS),                 # L716
    ("/v1/audio/transcriptions", ("POST",), ALWAYS),  # L736
    ("/rerank", ("POST",), ALWAYS),                   # L777
    ("/v1/rerank", ("POST",), ALWAYS),                # L804
    ("/v2/rerank", ("POST",), ALWAYS),                # L824
    ("/server_info", ("GET",), DEV),                  # L866
    ("/reset_prefix_cache", ("POST",), DEV),          # L871
    ("/sleep", ("POST",), DEV),                       # L885
    ("/wake_up", ("POST",), DEV),                     # L894
    ("/is_sleeping", ("GET",), DEV),                  # L906
    ("/invocations", ("POST",), ALWAYS),              # L913
    ("/start_profile", ("POST",), PROFILER),          # L960
    ("/stop_profile", ("POST",), PROFILER),           # L967
    ("/v1/load_lora_adapter", ("POST",), LORA),       # L980
    ("/v1/unload_lora_adapter", ("POST",), LORA),     # L992
    ("/metrics", ("GET",), ALWAYS),                   # L339-349, Instrumentator.expose
    ("/openapi.json", ("GET",), DOCS),
    ("/docs", ("GET",), DOCS),
    ("/docs/oauth2-redirect", ("GET",), DOCS),
    ("/redoc", ("GET",), DOCS),
]
# The Mount("/metrics") regex (L352-356) answers any method on /metrics<anything>.
METRICS_MOUNT_PROBES = [("/metrics/", "GET"), ("/metrics/anything", "GET"), ("/metrics", "POST")]
CASES = [(path, method) for path, methods, _ in VLLM_091_ROUTES for method in methods]
# Routes that answer SSE when the body asks for a stream, as vLLM's do.
STREAMING = {"/v1/chat/completions", "/v1/completions", "/invocations"}
SSE_CHUNKS = [b'data: {"choices":[{"text":"1."}]}\n\n', b'data: {"choices":[{"text":" Red"}]}\n\n',
              b"data: [DONE]\n\n"]


def _endpoint(path: str):
    async def answer(request: Request):
        body = await request.body()
        if path in STREAMING and body and json.loads(body).get("stream"):
            async def chunks():
                for chunk in SSE_CHUNKS:
                    yield chunk
                    await asyncio.sleep(0)
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return JSONResponse({"route": path, "method": request.method})
    return answer


async def _metrics_mount(scope, receive, send):
    await JSONResponse({"route": "/metrics (mount)", "method": scope["method"]})(scope, receive, send)


async def _ws_echo(websocket: WebSocket):
    # Not a vLLM route (0.9.1 has no websocket route): it shows what a websocket handshake meets.
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def vllm_v1_key_check(token: str):
    """vLLM 0.9.1's own check (api_server.py L1062-1077), rewritten for a plain Starlette app."""

    async def authentication(request: Request, call_next):
        if request.method == "OPTIONS":
            return await call_next(request)
        path = request.url.path
        root = request.scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root):]
        if not path.startswith("/v1"):
            return await call_next(request)
        if request.headers.get("Authorization") != "Bearer " + token:
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await call_next(request)

    return authentication


def build_stub(*, vllm_key: str | None = KEY, ours: bool = True, lifespan=None) -> Starlette:
    """The stub server, assembled in build_app's order."""
    routes = [Route(path, _endpoint(path), methods=list(methods)) for path, methods, _ in VLLM_091_ROUTES]
    metrics = Mount("/metrics", app=_metrics_mount)
    metrics.path_regex = re.compile("^/metrics(?P<path>.*)$")  # vLLM's 307 workaround (L354-355)
    routes += [metrics, WebSocketRoute("/ws-echo", _ws_echo)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=False, allow_methods=["*"],
                       allow_headers=["*"])
    if vllm_key:
        app.add_middleware(BaseHTTPMiddleware, dispatch=vllm_v1_key_check(vllm_key))
    if ours:
        app.add_middleware(ApiKeyAuth)  # exactly what build_app does with a --middleware class
    return app


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", KEY)


def _request(client: TestClient, path: str, method: str, **kwargs):
    if method == "POST":
        kwargs.setdefault("json", {"model": "mistral", "prompt": "hi"})
    return client.request(method, path, **kwargs)


def _refused(response) -> bool:
    return (response.status_code == 401 and response.content == UNAUTHORIZED
            and response.headers.get("www-authenticate") == "Bearer"
            and response.headers.get("content-type") == "application/json")


def _vllm_refused(response) -> bool:
    # vLLM's own refusal: same status and body, no WWW-Authenticate.
    return (response.status_code, response.content) == (401, UNAUTHORIZED)


# --- Raw ASGI calls: paths exactly as a server would hand them over, without a client normalising them.

def _asgi(app, path: str, *, method: str = "GET", headers=(), root_path: str = "", query: bytes = b"",
          raw_path: bytes | None = None):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": raw_path if raw_path is not None else path.encode(),
             "root_path": root_path, "query_string": query,
             "headers": [(b"host", b"mistral.vllm:8080"), *headers],
             "client": ("10.0.0.1", 40000), "server": ("10.0.0.2", 8080)}
    sent: list[dict] = []

    async def run():
        done = asyncio.Event()
        requested = False

        async def receive():
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    asyncio.run(run())
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


# --- The route table, with and without the middleware ---

def test_vllm_own_check_leaves_everything_outside_v1_open():
    """The gap, shown on the stub: with VLLM_API_KEY set, vLLM's own check refuses only /v1 paths."""
    client = TestClient(build_stub(ours=False))
    open_without_key = {path for path, method in CASES if _request(client, path, method).status_code == 200}
    refused = {path for path, method in CASES if _vllm_refused(_request(client, path, method))}
    assert refused == {path for path, _ in CASES if path.startswith("/v1")}
    # FACTS section 2: these stay open in 0.9.1.
    assert {"/invocations", "/tokenize", "/detokenize", "/pooling", "/classify", "/score", "/rerank",
            "/v2/rerank", "/docs", "/openapi.json", "/load"} <= open_without_key
    assert open_without_key | refused == {path for path, _ in CASES}


@pytest.mark.parametrize(("path", "method"), CASES + METRICS_MOUNT_PROBES)
def test_every_route_needs_the_key_except_the_allow_list(path, method):
    client = TestClient(build_stub())
    response = _request(client, path, method)
    if path in OPEN:
        assert response.status_code == 200
        assert response.json()["method"] == method
    else:
        assert _refused(response), (response.status_code, response.content)


@pytest.mark.parametrize(("path", "method"), CASES + METRICS_MOUNT_PROBES)
def test_every_route_answers_with_the_key(path, method):
    client = TestClient(build_stub())
    response = _request(client, path, method, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["method"] == method
    assert response.json()["route"] in (path, "/metrics (mount)")


def test_refusal_is_the_same_as_vllms_own():
    theirs = TestClient(build_stub(ours=False)).post("/v1/completions", json={})
    ours = TestClient(build_stub(vllm_key=None)).post("/invocations", json={})
    assert (ours.status_code, ours.content, ours.headers["content-type"]) == \
           (theirs.status_code, theirs.content, theirs.headers["content-type"])
    assert ours.headers["www-authenticate"] == "Bearer"
    assert int(ours.headers["content-length"]) == len(UNAUTHORIZED)


def test_closes_the_gap_without_vllms_own_check():
    # Works whether or not vLLM's own check is on (e.g. a key given only to us).
    client = TestClient(build_stub(vllm_key=None))
    assert _refused(client.post("/v1/completions", json={}))
    assert _refused(client.post("/invocations", json={}))
    assert client.post("/invocations", json={}, headers=AUTH).json() == {"route": "/invocations", "method": "POST"}


def test_cors_preflight_needs_the_key_too():
    # vLLM's own check lets OPTIONS through; ours decides first. No browser calls this server.
    client = TestClient(build_stub())
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    assert _refused(client.options("/invocations", headers=preflight))
    assert client.options("/invocations", headers={**preflight, **AUTH}).status_code == 200


# --- Bypass attempts ---

@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": f"Bearer {KEY[:-1]}"},
    {"Authorization": f"bearer {KEY}"},          # scheme case-sensitive, as vLLM's own check
    {"Authorization": f"BEARER {KEY}"},
    {"Authorization": f"Bearer  {KEY}"},         # one space only, as vLLM's own check
    {"Authorization": f"Bearer\t{KEY}"},
    {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": f"Token {KEY}"},
    {"Authorization": "Bearer "},
    {"Authorization": ""},
    {"X-Api-Key": KEY},
    {"Api-Key": KEY},
    {"Cookie": f"api_key={KEY}"},
], ids=lambda h: repr(h).replace(KEY, "KEY"))
def test_wrong_or_misplaced_credentials_are_refused(headers):
    client = TestClient(build_stub())
    assert _refused(client.post("/invocations", json={}, headers=headers))
    assert _refused(client.post("/v1/completions", json={}, headers=headers))


@pytest.mark.parametrize("query", [f"api_key={KEY}", f"key={KEY}", f"Authorization=Bearer%20{KEY}",
                                   f"access_token={KEY}"])
def test_key_in_query_string_is_refused(query):
    client = TestClient(build_stub())
    assert _refused(client.post(f"/invocations?{query}", json={}))


def test_two_authorization_headers_are_refused():
    good, bad = (b"authorization", f"Bearer {KEY}".encode()), (b"authorization", b"Bearer nope")
    app = build_stub(vllm_key=None)
    for headers in ([good, bad], [bad, good], [good, good]):
        status, _, body = _asgi(app, "/invocations", method="POST", headers=headers)
        assert (status, body) == (401, UNAUTHORIZED)
    assert _asgi(app, "/invocations", method="POST", headers=[good])[0] == 200


def test_trailing_whitespace_in_the_header_is_refused():
    app = build_stub(vllm_key=None)
    for value in (f"Bearer {KEY} ", f" Bearer {KEY}", f"Bearer {KEY}\x00"):
        assert _asgi(app, "/invocations", method="POST", headers=[(b"authorization", value.encode())])[0] == 401


@pytest.mark.parametrize("path", [
    "/health/", "/ping/", "/version/", "/HEALTH", "/Health", "/METRICS", "/healthz", "/health.json",
    "/health/../invocations", "/metrics/../invocations", "/version/../v1/completions", "/./health/x",
    "/health/./", "/health/..", "/invocations/../health", "//health", "//v1/completions", "//invocations",
    "/health;/invocations", "/health\x00", "/health ", " /health", "health", "", "/",
    "/metrics/x", "/metricsz", "/metrics/../../invocations",
])
def test_path_variations_do_not_bypass(path):
    """ASGI `path` is percent-decoded by the server and not normalised; only exact matches are open."""
    for app in (build_stub(), build_stub(vllm_key=None)):
        status, headers, body = _asgi(app, path, method="POST")
        assert (status, body) == (401, UNAUTHORIZED)
        assert headers[b"www-authenticate"] == b"Bearer"


def test_percent_encoded_dot_segments_are_refused():
    # What the server hands over for GET /health%2F..%2Finvocations: decoded path, raw path kept.
    status, _, body = _asgi(build_stub(), "/health/../invocations", method="POST",
                            raw_path=b"/health%2F..%2Finvocations")
    assert (status, body) == (401, UNAUTHORIZED)
    # And through a client: Starlette's test client percent-decodes the path as uvicorn does.
    client = TestClient(build_stub())
    assert _refused(client.post("/health%2F..%2Finvocations", json={}))
    assert _refused(client.post("/%69nvocations", json={}))


def test_percent_encoded_open_path_is_that_open_path():
    # /%68ealth decodes to /health; the router serves /health for it, so it is open like /health.
    status, _, body = _asgi(build_stub(), "/health", raw_path=b"/%68ealth")
    assert status == 200 and json.loads(body)["route"] == "/health"


def test_root_path_is_stripped_only_as_the_router_strips_it():
    app = build_stub(vllm_key=None)
    assert _asgi(app, "/api/health", root_path="/api")[0] == 200
    assert _asgi(app, "/health", root_path="/api")[0] == 200  # servers that hand over the stripped path
    for path in ("/api/invocations", "/apihealth", "/api//health", "/api/api/health", "/api/health/"):
        assert _asgi(app, path, root_path="/api", method="POST")[0] == 401, path
    # A root_path that looks like an open path opens nothing behind it.
    assert _asgi(app, "/health/invocations", root_path="/health", method="POST")[0] == 401
    with_key = [(b"authorization", f"Bearer {KEY}".encode())]
    status, _, body = _asgi(app, "/api/invocations", root_path="/api", method="POST", headers=with_key)
    assert status == 200 and json.loads(body)["route"] == "/invocations"


@pytest.mark.parametrize("path", sorted(OPEN))
def test_open_paths_need_no_key_whatever_the_headers(path):
    client = TestClient(build_stub())
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
        assert client.get(path, headers=headers).status_code == 200


# --- Streaming ---

@pytest.mark.parametrize("path", sorted(STREAMING))
def test_sse_streams_arrive_in_pieces_unchanged(path):
    client = TestClient(build_stub())
    with client.stream("POST", path, json={"stream": True}, headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        pieces = [piece for piece in response.iter_raw() if piece]
    assert pieces == SSE_CHUNKS


def test_middleware_hands_the_app_the_servers_own_send_and_receive():
    """No wrapping: each chunk reaches the server when the app sends it, not when the response ends."""
    seen = {}

    async def run():
        first_chunk_out = asyncio.Event()

        async def streaming_app(scope, receive, send):
            seen["receive"], seen["send"] = receive, send
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i, chunk in enumerate(SSE_CHUNKS):
                await send({"type": "http.response.body", "body": chunk, "more_body": i < len(SSE_CHUNKS) - 1})
                if i == 0:
                    # A buffering middleware would never let the first chunk out: fail, do not hang.
                    await asyncio.wait_for(first_chunk_out.wait(), timeout=2)

        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)
            if message.get("body") == SSE_CHUNKS[0]:
                first_chunk_out.set()

        scope = {"type": "http", "method": "POST", "path": "/v1/completions", "root_path": "",
                 "headers": [(b"authorization", f"Bearer {KEY}".encode())], "query_string": b""}
        await ApiKeyAuth(streaming_app)(scope, receive, send)
        assert seen["receive"] is receive and seen["send"] is send
        return sent

    sent = asyncio.run(run())
    assert [m.get("body") for m in sent[1:]] == SSE_CHUNKS
    assert [m.get("more_body") for m in sent[1:]] == [True, True, False]


# --- Lifespan, websockets, other scopes ---

def test_lifespan_passes_through_untouched():
    calls = []

    async def inner(scope, receive, send):
        calls.append((scope, receive, send))

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(ApiKeyAuth(inner)(scope, receive, send))
    assert calls == [(scope, receive, send)]


def test_app_startup_and_shutdown_run_through_the_middleware():
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    with TestClient(build_stub(lifespan=lifespan)) as client:
        assert events == ["startup"]
        assert client.get("/health").status_code == 200
    assert events == ["startup", "shutdown"]


@pytest.mark.parametrize("path", ["/ws-echo", "/health", "/v1/realtime"])
def test_websocket_without_key_is_closed_with_policy_violation(path):
    client = TestClient(build_stub())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": KEY}):
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect(path, headers=headers) as ws:
                # Only reached if the handshake was accepted: the echo answers, and the test fails below.
                ws.send_text("hello")
                ws.receive_text()
        assert closed.value.code == 1008


def test_websocket_with_key_is_served():
    client = TestClient(build_stub())
    with client.websocket_connect("/ws-echo", headers=AUTH) as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"


def test_unknown_scope_type_is_refused():
    async def inner(scope, receive, send):
        raise AssertionError("reached the app")

    async def noop(*_):
        return {}

    with pytest.raises(RuntimeError, match="unsupported ASGI scope type"):
        asyncio.run(ApiKeyAuth(inner)({"type": "webtransport", "path": "/health", "headers": []}, noop, noop))


# --- The key ---

@pytest.mark.parametrize("value", [None, "", "with space", "trailing-newline\n", "\tleading-tab", "ключ"])
def test_missing_empty_or_unusable_key_fails_at_construction(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("VLLM_API_KEY", raising=False)
    else:
        monkeypatch.setenv("VLLM_API_KEY", value)
    with pytest.raises(RuntimeError, match="VLLM_API_KEY"):
        ApiKeyAuth(lambda *a: None)


def test_the_key_file_wins_over_the_environment(monkeypatch, tmp_path):
    """The stack mounts its Secret as a file (VLLM_API_KEY_FILE), keeping the key out of the environment."""
    key_file = tmp_path / "api-key"
    key_file.write_text("from-the-file")
    monkeypatch.setenv("VLLM_API_KEY", "from-the-environment")
    monkeypatch.setenv("VLLM_API_KEY_FILE", str(key_file))
    assert ApiKeyAuth(lambda *a: None)._expected == b"Bearer from-the-file"


@pytest.mark.parametrize("content", [None, "", "trailing-newline\n"])
def test_a_missing_empty_or_unusable_key_file_fails_at_construction(monkeypatch, tmp_path, content):
    key_file = tmp_path / "api-key"
    if content is not None:
        key_file.write_text(content)
    monkeypatch.setenv("VLLM_API_KEY", KEY)  # never a fallback when a file is named
    monkeypatch.setenv("VLLM_API_KEY_FILE", str(key_file))
    with pytest.raises(RuntimeError, match=f"VLLM_API_KEY_FILE \\({key_file}\\)"):
        ApiKeyAuth(lambda *a: None)


def test_without_a_key_the_server_serves_nothing(monkeypatch):
    """Fail closed where vLLM builds it: Starlette constructs middleware on the first ASGI call."""
    monkeypatch.delenv("VLLM_API_KEY")
    client = TestClient(build_stub(vllm_key=None), raise_server_exceptions=False)
    for path in ("/health", "/invocations", "/v1/models"):
        assert client.get(path).status_code == 500
    with pytest.raises(RuntimeError, match="VLLM_API_KEY"):
        with TestClient(build_stub(vllm_key=None)):
            pass


def test_key_is_read_at_construction_and_compared_in_constant_time(monkeypatch):
    compared = []
    real = api_key_auth.hmac.compare_digest

    def spy(a, b):
        compared.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(api_key_auth.hmac, "compare_digest", spy)
    app = build_stub(vllm_key=None)
    assert _asgi(app, "/invocations", method="POST",
                 headers=[(b"authorization", f"Bearer {KEY}".encode())])[0] == 200
    assert compared == [(bytes, bytes)]
    # Changing the variable later changes nothing: the pod's key is fixed at start.
    monkeypatch.setenv("VLLM_API_KEY", "another-key")
    assert _asgi(app, "/invocations", method="POST",
                 headers=[(b"authorization", f"Bearer {KEY}".encode())])[0] == 200


# --- Loading it as the pod does ---

LOADER = textwrap.dedent("""
    import asyncio, importlib, inspect, json, sys

    # vllm/entrypoints/openai/api_server.py v0.9.1 build_app L1108-1117: rsplit, import, getattr, class check.
    module_path, object_name = sys.argv[1].rsplit(".", 1)
    imported = getattr(importlib.import_module(module_path), object_name)
    assert inspect.isclass(imported), "vLLM would not add_middleware() it"

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    async def call(middleware, path, headers):
        out = []
        async def receive():
            return {"type": "http.request", "body": b""}
        async def send(message):
            out.append(message)
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers,
                 "query_string": b""}
        await middleware(scope, receive, send)
        return out[0]["status"]

    # Starlette builds middleware as cls(app) in recent versions and cls(app=app) in older ones.
    results = {}
    for middleware in (imported(inner), imported(app=inner)):
        results.setdefault("invocations", []).append(asyncio.run(call(middleware, "/invocations", [])))
        results.setdefault("health", []).append(asyncio.run(call(middleware, "/health", [])))
        results.setdefault("with_key", []).append(asyncio.run(call(
            middleware, "/invocations", [(b"authorization", b"Bearer " + sys.argv[2].encode())])))
    print(json.dumps({
        "results": results,
        "file": sys.modules[module_path].__file__,
        "modules": sorted(sys.modules),
        "site_on_path": [p for p in sys.path if "site-packages" in p],
        "dont_write_bytecode": sys.dont_write_bytecode,
    }))
""")


def test_import_path_loads_as_the_pod_loads_it():
    """A read-only directory holding only the mounted file, on PYTHONPATH; no site-packages at all."""
    mount = Path(tempfile.mkdtemp(prefix="model-server-"))
    cwd = Path(tempfile.mkdtemp(prefix="cwd-"))
    try:
        shutil.copyfile(MODULE_FILE, mount / "api_key_auth.py")
        (mount / "api_key_auth.py").chmod(0o444)
        mount.chmod(0o555)  # a ConfigMap volume is read-only (only enforced for non-root)
        cwd.chmod(0o555)
        before = sorted(p.name for p in mount.iterdir())
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(mount),
               "PYTHONDONTWRITEBYTECODE": "1", "VLLM_API_KEY": KEY}
        # -S: no site module, so no site-packages: only the standard library and the mount are importable.
        run = subprocess.run([sys.executable, "-S", "-c", LOADER, MIDDLEWARE_ARG, KEY], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["results"] == {"invocations": [401, 401], "health": [200, 200], "with_key": [200, 200]}
        assert report["file"] == str(mount / "api_key_auth.py")
        assert report["site_on_path"] == [] and report["dont_write_bytecode"] is True
        assert not {"starlette", "fastapi", "anyio", "pydantic"} & set(report["modules"])
        assert sorted(p.name for p in mount.iterdir()) == before  # nothing written (no __pycache__)

        # The same load without the key fails when vLLM (Starlette) constructs it, naming the variable.
        env.pop("VLLM_API_KEY")
        run = subprocess.run([sys.executable, "-S", "-c", LOADER, MIDDLEWARE_ARG, KEY], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "VLLM_API_KEY is missing or empty" in run.stderr
    finally:
        for directory in (mount, cwd):
            directory.chmod(stat.S_IRWXU)
            shutil.rmtree(directory)
