"""API key on every path of the vLLM server except the probes and metrics.

vLLM 0.9.1's own key check (`authentication` in `build_app`, vllm/entrypoints/openai/api_server.py at
tag v0.9.1, commit b6553be1; identical in aws-neuron/upstreaming-to-vllm main dd417b31) guards only paths
that start with `/v1`: `/invocations`, `/tokenize`, `/pooling`, `/score`, `/docs`, ... stay open.
This middleware closes that gap.

How the pod loads it: the file is mounted at /etc/model-server/api_key_auth.py, /etc/model-server is on
PYTHONPATH and `vllm serve ... --middleware api_key_auth.ApiKeyAuth`. In 0.9.1 `build_app` does
`getattr(importlib.import_module("api_key_auth"), "ApiKeyAuth")` and, because it is a class,
`app.add_middleware(ApiKeyAuth)` (cli_args.py `--middleware`: a class goes to add_middleware, a coroutine
function to `@app.middleware("http")`). It is added last, so it wraps vLLM's CORS, metrics and key
middlewares and decides before any of them. Starlette builds the middleware stack, and so calls
`ApiKeyAuth(app)`, on the first ASGI call (the lifespan startup), not at import.

Standard library only: it runs on whatever Python the vLLM image has, from a read-only mount.

The key is read from the file named by `VLLM_API_KEY_FILE` (the stack mounts its Secret there: a key in a
file stays out of the process environment), else from `VLLM_API_KEY`, the variable vLLM's own check reads
(vllm/envs.py); `--api-key` wins over that in vLLM, so never pass both.
"""

from __future__ import annotations

import hmac
import json
import os

ENV_VAR = "VLLM_API_KEY"
FILE_ENV_VAR = "VLLM_API_KEY_FILE"

# Exact paths reachable without the key: the kubelet probes (/health; /ping is the SageMaker alias of
# it), the metrics collector, and /version (a version string only). Nothing is matched by prefix:
# vLLM mounts /metrics with the regex ^/metrics(.*)$, so a prefix rule would open /metrics<anything>.
OPEN_PATHS = frozenset({"/health", "/ping", "/metrics", "/version"})

# Byte for byte what vLLM 0.9.1 answers (JSONResponse({"error": "Unauthorized"}, 401)).
UNAUTHORIZED_BODY = json.dumps({"error": "Unauthorized"}, separators=(",", ":")).encode()
UNAUTHORIZED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
    (b"www-authenticate", b"Bearer"),
]
WS_POLICY_VIOLATION = 1008  # RFC 6455 close code


class ApiKeyAuth:
    """Pure ASGI middleware: decides before calling the app and never wraps `send`, so streamed (SSE)
    responses pass through as the app sends them.

    Accepted credential: exactly one `Authorization` header whose value is exactly `Bearer <key>`
    (what the OpenAI client sends). The scheme is case-sensitive with one space, as in vLLM's own
    check, so a client accepted here is accepted by it on /v1 too. Keys in query strings or in
    `X-Api-Key` are not read.
    """

    def __init__(self, app):
        key, source = read_key()
        # Fail closed: without a key the server must not serve at all.
        if not key:
            raise RuntimeError(f"{source} is missing or empty: refusing to serve the model without an API key")
        # A header cannot carry spaces around the token or control characters (a trailing newline from
        # a Secret made with --from-file is the usual one); nobody could ever authenticate.
        if not all("\x21" <= ch <= "\x7e" for ch in key):
            raise RuntimeError(f"{source} must be printable ASCII without spaces or newlines")
        self.app = app
        self._expected = b"Bearer " + key.encode("ascii")

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
        elif kind == "http":
            if _route_path(scope) in OPEN_PATHS or self._authorized(scope):
                await self.app(scope, receive, send)
            else:
                await send({"type": "http.response.start", "status": 401, "headers": UNAUTHORIZED_HEADERS})
                await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
        elif kind == "websocket":
            # No exceptions for websockets: the open paths are plain HTTP.
            if self._authorized(scope):
                await self.app(scope, receive, send)
            else:
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
        else:
            # A scope type nobody has reviewed is refused rather than passed through.
            raise RuntimeError(f"api_key_auth: unsupported ASGI scope type {kind!r}")

    def _authorized(self, scope) -> bool:
        values = [value for name, value in scope.get("headers", ()) if name == b"authorization"]
        # Two Authorization headers: ambiguous (layers may read different ones), so refused.
        if len(values) != 1:
            return False
        return hmac.compare_digest(values[0], self._expected)


def read_key() -> tuple[str, str]:
    """The key, and where it came from (for messages): the file named by VLLM_API_KEY_FILE, else VLLM_API_KEY."""
    path = os.environ.get(FILE_ENV_VAR)
    if path:
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                return file.read(), f"{FILE_ENV_VAR} ({path})"
        except OSError:
            return "", f"{FILE_ENV_VAR} ({path})"
    return os.environ.get(ENV_VAR, ""), ENV_VAR


def _route_path(scope) -> str:
    """The path the router will match. ASGI `path` is already percent-decoded and the router does not
    normalise it (no dot segments, no case folding, no slash merging), so an exact match here means the
    router serves that same route. `root_path` (unset in our pod) is stripped as Starlette's router strips
    it: only when followed by "/"."""
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root + "/"):
        return path[len(root):]
    return path
