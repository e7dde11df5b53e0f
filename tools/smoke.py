"""Smoke test: is a deployed model answering through its OpenAI-compatible API, and how fast?

    python -m tools.smoke [--stack dev] [--model NAME] [--wait SECONDS] [--json]
                          [--url URL | --kubeconfig PATH]

Without --url it reaches the model's Service (named after the model, port 8080, namespace vllm.namespace)
through `kubectl port-forward`, with the kubeconfig from `pulumi stack output kubeconfig` (or
--kubeconfig). Then it:
  - waits up to --wait seconds for GET /health to answer 200 (vLLM refuses connections while loading);
  - checks GET /v1/models lists the served model name (the model's name in vllm.models);
  - sends the EKS workshop's completion request (POST /v1/completions) and shows its first line;
  - streams a chat completion (POST /v1/chat/completions) and measures time to first token, output
    tokens per second after the first token, and total latency.

Exit status: 0 all checks passed, 1 a check failed, 2 bad flags or stack settings.
--json prints {"ok", "url", "model", "metrics", "checks"}.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from components import vllm
from components.config import StackConfig
from tools import cli
from tools.cli import Check

SERVICE_PORT = vllm.PORT
DEFAULT_WAIT_SECONDS = 600
POLL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 5.0
# 100 tokens take seconds on one NeuronCore pair; a minute means something is wrong.
REQUEST_TIMEOUT_SECONDS = 60.0
PULUMI_TIMEOUT_SECONDS = 120.0
# kubectl prints its Forwarding line within a second or two once it reaches a running pod.
FORWARD_TIMEOUT_SECONDS = 15.0
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(SERVICE_PORT))

CHAT_MESSAGE = "Name the colors of the rainbow."
MAX_TOKENS = 100


class SmokeFailure(Exception):
    """A check failed; later checks cannot run."""

    def __init__(self, name: str, detail: str):
        super().__init__(detail)
        self.check = Check(name, "fail", detail)


@dataclass
class Metrics:
    ttft_seconds: float | None = None
    output_tokens_per_second: float | None = None
    total_seconds: float | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Target:
    """The model under test and how to reach it."""

    model: str
    namespace: str
    stack: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("smoke", "Check that a deployed model answers through its OpenAI-compatible API, and time it.",
                        "0 pass, 1 a check failed, 2 usage error")
    parser.add_argument("--url", help="base URL of the server, e.g. http://localhost:8080 (default: port-forward "
                        "to the model's Service)")
    parser.add_argument("--model", help="model name from vllm.models (default: the first)")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                        help=f"how long to wait for the model to become ready (default: {DEFAULT_WAIT_SECONDS})")
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH",
                        help="kubeconfig for the port-forward instead of `pulumi stack output kubeconfig`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a report")
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must be zero or more seconds")
    if args.url and not re.match(r"https?://", args.url):
        parser.error(f"--url {args.url}: give a full URL such as http://localhost:8080")
    if args.url and args.kubeconfig:
        parser.error("--url and --kubeconfig exclude each other: --kubeconfig is for the port-forward")
    return args


def pick_model(option: str | None, config: StackConfig) -> str:
    names = [m.name for m in config.vllm.models]
    if option is None:
        return names[0]
    if option not in names:
        raise cli.UsageError(f"--model '{option}' is not in vllm.models of stack '{config.stack}'; "
                             f"choose one of: {', '.join(names)}")
    return option


# --- reaching the server ---------------------------------------------------------------------------


def executable(name: str, install: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SmokeFailure("port-forward", f"{name} not found on PATH: install {install}, or pass --url")
    return path


@contextmanager
def kubeconfig_file(option: Path | None, stack: str) -> Iterator[Path]:
    """The kubeconfig to use: --kubeconfig, else the stack output in a private temporary file."""
    if option is not None:
        yield option
        return
    pulumi = executable("pulumi", "the Pulumi CLI (https://www.pulumi.com/docs/install/)")
    command = [pulumi, "stack", "output", "kubeconfig", "--show-secrets", "--stack", stack]
    try:
        # No stdin: pulumi must fail rather than prompt (to log in, for a passphrase) where nobody sees it.
        result = subprocess.run(command, capture_output=True, text=True, timeout=PULUMI_TIMEOUT_SECONDS,
                                cwd=cli.PROJECT_DIR, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SmokeFailure("kubeconfig", f"`pulumi stack output kubeconfig` took over {PULUMI_TIMEOUT_SECONDS:.0f}s; "
                           "check `pulumi whoami`, or pass --kubeconfig") from None
    if result.returncode != 0 or not result.stdout.strip():
        reason = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SmokeFailure("kubeconfig", f"`pulumi stack output kubeconfig --stack {stack}` failed ({reason[0]}); "
                           "has `pulumi up` run for this stack? Or pass --kubeconfig")
    # mkstemp creates the file readable by its owner only: the kubeconfig is a secret output.
    handle, name = tempfile.mkstemp(prefix="kubeconfig-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(result.stdout)
        yield Path(name)
    finally:
        os.unlink(name)


@contextmanager
def port_forward(kubectl: str, kubeconfig: Path, target: Target, deadline: float) -> Iterator[tuple[str, Check]]:
    """Forward a local port to the model's Service; kubectl always stops when the block ends."""
    command = [kubectl, "--kubeconfig", str(kubeconfig), "port-forward", "-n", target.namespace,
               f"service/{target.model}", f":{SERVICE_PORT}"]
    while True:
        process, port, error = _start_forward(command)
        if port is not None:
            break
        # kubectl refuses while the pod is Pending or initialising: retry until the deadline.
        if time.monotonic() + POLL_SECONDS >= deadline:
            raise SmokeFailure("port-forward", f"kubectl port-forward to service/{target.model} in namespace "
                               f"{target.namespace} failed: {error}; is the pod running? "
                               f"kubectl get pods -n {target.namespace}")
        time.sleep(POLL_SECONDS)
    try:
        yield (f"http://127.0.0.1:{port}",
               Check("port-forward", "pass", f"127.0.0.1:{port} -> service/{target.model}:{SERVICE_PORT} "
                     f"in namespace {target.namespace}"))
    finally:
        _stop(process)


def _start_forward(command: list[str]) -> tuple[subprocess.Popen[str], int | None, str]:
    """Start kubectl and read its Forwarding line: (process, port, "") or (stopped process, None, why)."""
    # A file, not a pipe, for stderr: nobody reads it until kubectl has exited.
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                   text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        # Keep draining stdout ("Handling connection for 8080" per request) so kubectl never blocks on it.
        threading.Thread(target=_drain, args=(process, lines), daemon=True).start()
        give_up = time.monotonic() + FORWARD_TIMEOUT_SECONDS
        while (remaining := give_up - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                process.wait()
                stderr.seek(0)
                return process, None, " ".join(stderr.read().split()) or f"kubectl exited with {process.returncode}"
            if match := FORWARDING.search(line):
                return process, int(match.group(1)), ""
        _stop(process)
        return process, None, f"no 'Forwarding from 127.0.0.1:...' line within {FORWARD_TIMEOUT_SECONDS:.0f}s"


def _drain(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            lines.put(line)
    lines.put(None)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the API checks --------------------------------------------------------------------------------


def request(url: str, body: dict[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS) -> Any:
    """Open a GET (or a JSON POST); urllib raises HTTPError for non-2xx answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    return urllib.request.urlopen(req, timeout=timeout)


def get_json(name: str, url: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON answer of a request, or a SmokeFailure naming what went wrong."""
    what = f"{'POST' if body is not None else 'GET'} {url}"
    try:
        with request(url, body) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise SmokeFailure(name, f"{what} answered {error.code}: {_excerpt(error.read())}") from None
    except (OSError, ValueError) as error:
        raise SmokeFailure(name, f"{what} failed: {error}") from None


def _excerpt(body: bytes) -> str:
    return " ".join(body.decode(errors="replace").split())[:300] or "(empty body)"


def wait_for_health(base: str, deadline: float, target: Target) -> Check:
    """Poll /health until 200. Refused or dropped connections and 5xx mean vLLM is still loading."""
    url = f"{base}/health"
    start = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            with request(url, timeout=min(HEALTH_TIMEOUT_SECONDS, max(deadline - time.monotonic(), 0.5))):
                return Check("health", "pass", f"{url} answered 200 after {time.monotonic() - start:.1f}s")
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise SmokeFailure("health", f"{url} answered {error.code}: is this a vLLM server?") from None
            last = f"HTTP {error.code}"
        except urllib.error.URLError as error:
            if isinstance(error.reason, socket.gaierror):
                raise SmokeFailure("health", f"cannot resolve the host of {url}: {error.reason}") from None
            last = str(error.reason)
        except OSError as error:
            last = str(error) or type(error).__name__
        if time.monotonic() >= deadline:
            raise SmokeFailure("health", f"{url} not ready within {time.monotonic() - start:.0f}s (last: {last}); "
                               f"if the model is still loading, wait longer (--wait) and watch "
                               f"`kubectl logs deployment/{target.model} -n {target.namespace} -c vllm -f`")
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))


def check_models(base: str, model: str) -> Check:
    listing = get_json("models", f"{base}/v1/models")
    served = [card.get("id") for card in listing.get("data", [])] if isinstance(listing, dict) else []
    if model not in served:
        listed = ", ".join(map(str, served)) or "nothing"
        raise SmokeFailure("models", f"'{model}' is not served; /v1/models lists: {listed} "
                           "(vLLM's --served-model-name must be the model's name in vllm.models)")
    return Check("models", "pass", f"/v1/models lists '{model}'")


def check_completion(base: str, model: str) -> Check:
    body = vllm.workshop_completion(model)
    start = time.monotonic()
    answer = get_json("completion", f"{base}/v1/completions", body)
    seconds = time.monotonic() - start
    choices = answer.get("choices") if isinstance(answer, dict) else None
    text = (choices[0].get("text") or "") if choices else ""
    if not text.strip():
        raise SmokeFailure("completion", f"POST {base}/v1/completions returned an empty completion: "
                           f"{_excerpt(json.dumps(answer).encode())}")
    tokens = (answer.get("usage") or {}).get("completion_tokens", "?")
    first_line = text.strip().splitlines()[0][:100]
    return Check("completion", "pass", f"{tokens} tokens in {seconds:.2f}s, finish_reason "
                 f"{choices[0].get('finish_reason')}: \"{first_line}\"")


def check_chat_stream(base: str, model: str) -> tuple[Check, Metrics]:
    """Stream a chat completion and time it from the Server-Sent Events as they arrive."""
    url = f"{base}/v1/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": CHAT_MESSAGE}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.monotonic()
    try:
        with request(url, body) as answer:
            stream = _read_stream(answer)
    except urllib.error.HTTPError as error:
        raise SmokeFailure("chat stream", f"POST {url} answered {error.code}: {_excerpt(error.read())}") from None
    except (OSError, ValueError) as error:
        raise SmokeFailure("chat stream", f"POST {url} failed while streaming: {error}") from None
    end = time.monotonic()
    if stream.error:
        raise SmokeFailure("chat stream", f"the server sent an error in the stream: {stream.error}")
    if stream.first is None:
        raise SmokeFailure("chat stream", f"POST {url} streamed no content (empty completion)")
    if not stream.done:
        raise SmokeFailure("chat stream", f"the stream from {url} ended without 'data: [DONE]'")
    tokens = stream.usage_tokens if stream.usage_tokens is not None else stream.chunks
    decode = stream.last - stream.first
    metrics = Metrics(
        ttft_seconds=round(stream.first - start, 4),
        # Decode speed: tokens after the first over the time after the first.
        output_tokens_per_second=round((tokens - 1) / decode, 2) if tokens > 1 and decode > 0 else None,
        total_seconds=round(end - start, 4),
        completion_tokens=tokens,
    )
    source = "usage" if stream.usage_tokens is not None else "content chunks, no usage chunk"
    speed = f"{metrics.output_tokens_per_second} tokens/s" if metrics.output_tokens_per_second else "one token"
    return Check("chat stream", "pass", f"{tokens} tokens ({source}), first after {metrics.ttft_seconds:.3f}s, "
                 f"{speed}, {metrics.total_seconds:.2f}s in all"), metrics


@dataclass
class _Stream:
    first: float | None = None
    last: float = 0.0
    chunks: int = 0
    usage_tokens: int | None = None
    done: bool = False
    error: str | None = None


def _read_stream(answer: Any) -> _Stream:
    stream = _Stream()
    for raw in answer:
        line = raw.decode().strip()
        if not line.startswith("data:"):
            continue
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            stream.done = True
            break
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError(f"unexpected event: {payload[:200]}")
        # vLLM reports a failure mid-stream as an error object, then [DONE].
        error = chunk.get("error") or (chunk if chunk.get("object") == "error" else None)
        if error:
            stream.error = error.get("message", json.dumps(error)) if isinstance(error, dict) else str(error)
        if chunk.get("usage"):
            stream.usage_tokens = chunk["usage"].get("completion_tokens")
        # The usage chunk has "choices": [].
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                now = time.monotonic()
                stream.first = now if stream.first is None else stream.first
                stream.last = now
                stream.chunks += 1
    return stream


# --- main ------------------------------------------------------------------------------------------


@contextmanager
def endpoint(args: argparse.Namespace, target: Target, deadline: float, checks: list[Check]) -> Iterator[str]:
    """The server's base URL: --url, or a port-forward that lasts as long as the block."""
    if args.url:
        yield args.url.rstrip("/")
        return
    # Look for kubectl first: without it, asking pulumi for the kubeconfig is wasted.
    kubectl = executable("kubectl", "kubectl (https://kubernetes.io/docs/tasks/tools/)")
    with kubeconfig_file(args.kubeconfig, target.stack) as kubeconfig:
        with port_forward(kubectl, kubeconfig, target, deadline) as (url, check):
            checks.append(check)
            yield url


def run(args: argparse.Namespace, target: Target) -> tuple[list[Check], Metrics, str | None]:
    checks: list[Check] = []
    metrics = Metrics()
    base = None
    deadline = time.monotonic() + args.wait
    try:
        with endpoint(args, target, deadline, checks) as base:
            print(f"waiting up to {args.wait:.0f}s for {base}/health ...", file=sys.stderr)
            checks.append(wait_for_health(base, deadline, target))
            checks.append(check_models(base, target.model))
            checks.append(check_completion(base, target.model))
            check, metrics = check_chat_stream(base, target.model)
            checks.append(check)
    except SmokeFailure as failure:
        checks.append(failure.check)
    return checks, metrics, base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = cli.load_stack(args.stack)
        target = Target(pick_model(args.model, config), config.vllm.namespace, args.stack)
        if args.kubeconfig is not None and not args.kubeconfig.is_file():
            raise cli.UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
    except cli.UsageError as error:
        return cli.usage_error(error)
    checks, metrics, base = run(args, target)
    where = base or f"service/{target.model} in namespace {target.namespace}"
    title = f"Smoke test of model '{target.model}' (stack '{args.stack}') at {where}:"
    return cli.report(title, checks, args.json, {"url": base, "model": target.model, "metrics": asdict(metrics)})


if __name__ == "__main__":
    sys.exit(main())
