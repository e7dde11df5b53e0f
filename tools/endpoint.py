"""How the operator tools reach a model's server and talk to it; shared by tools.smoke and tools.load.

Reaching it: --url, or `kubectl port-forward` to the model's Service (named after the model, port 8080,
namespace vllm.namespace) with --kubeconfig or the stack's `kubeconfig` output.
The API key: $VLLM_API_KEY, else, when the stack requires one (vllm.requireApiKey), its secret `apiKey` output.
Talking to it: the official `openai` client for the OpenAI API, with its automatic retries off; plain HTTP
for /health and /invocations, which the client has no call for.
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
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import openai

from components import vllm
from components.config import StackConfig
from tools import cli
from tools.cli import Check

SERVICE_PORT = vllm.PORT
POLL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 5.0
# Per socket operation (connect, each read), not per request: a stream that keeps sending is never cut.
# 100 tokens take seconds on one NeuronCore pair; a minute of silence means something is wrong.
REQUEST_TIMEOUT_SECONDS = 60.0
PULUMI_TIMEOUT_SECONDS = 120.0
# kubectl prints its Forwarding line within a second or two once it reaches a running pod.
FORWARD_TIMEOUT_SECONDS = 15.0
FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(SERVICE_PORT))
# What kubectl says when the API server cannot be reached or refuses the credentials: no retry helps.
# ("error dialing backend: dial tcp ..." is the API server failing to reach a kubelet, not us failing to
# reach the API server: that one is left to the retries.)
API_SERVER_UNREACHABLE = re.compile(r"Unable to connect to the server|The connection to the server .* was refused|"
                                    r"You must be logged in to the server|Unauthorized|dial tcp|i/o timeout")
# What kubectl says while the pod is Pending or initialising (and our own timeout while it waits for one).
POD_NOT_RUNNING = re.compile(r"pod is not running|timed out waiting for the condition|no 'Forwarding from")

API_KEY_ENV = "VLLM_API_KEY"
# The client refuses to start without a key; for a server that wants none, vLLM's own examples send "EMPTY".
NO_KEY = "EMPTY"
CHAT_MESSAGE = "Name the colors of the rainbow."

PULUMI = "the Pulumi CLI (https://www.pulumi.com/docs/install/)"
KUBECTL = "kubectl (https://kubernetes.io/docs/tasks/tools/)"


class CheckFailed(Exception):
    """A check failed; later checks cannot run."""

    def __init__(self, name: str, detail: str):
        super().__init__(detail)
        self.check = Check(name, "fail", detail)


@dataclass(frozen=True)
class Target:
    """The model under test and how to reach it."""

    model: str
    namespace: str
    stack: str
    require_api_key: bool


@dataclass(frozen=True)
class Connection:
    url: str
    # Set when the tool port-forwards: the same kubectl and kubeconfig can look at the cluster.
    kubectl: str | None = None
    kubeconfig: Path | None = None


# --- flags and the stack ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags saying which model to reach and how: --url, --kubeconfig, --model, --json."""
    parser.add_argument("--url", help="base URL of the server, e.g. http://localhost:8080 (default: port-forward "
                        "to the model's Service)")
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH",
                        help="kubeconfig for the port-forward instead of `pulumi stack output kubeconfig`")
    parser.add_argument("--model", help="model name from vllm.models (default: the first)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a report")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.url and not re.match(r"https?://", args.url):
        parser.error(f"--url {args.url}: give a full URL such as http://localhost:8080")
    if args.url and args.kubeconfig:
        parser.error("--url and --kubeconfig exclude each other: --kubeconfig is for the port-forward")


def target(args: argparse.Namespace) -> Target:
    """The model the flags name, from the stack's settings; UsageError when they do not fit."""
    config = cli.load_stack(args.stack)
    if args.kubeconfig is not None and not args.kubeconfig.is_file():
        raise cli.UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
    return Target(pick_model(args.model, config), config.vllm.namespace, args.stack, config.vllm.require_api_key)


def pick_model(option: str | None, config: StackConfig) -> str:
    names = [m.name for m in config.vllm.models]
    if option is None:
        return names[0]
    if option not in names:
        raise cli.UsageError(f"--model '{option}' is not in vllm.models of stack '{config.stack}'; "
                             f"choose one of: {', '.join(names)}")
    return option


# --- the stack's outputs: kubeconfig and API key ---------------------------------------------------


def executable(name: str, install: str, check: str, alternative: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CheckFailed(check, f"{name} not found on PATH: install {install}, or {alternative}")
    return path


def stack_output(name: str, stack: str, check: str, alternative: str) -> str:
    """A (secret) output of the stack, from `pulumi stack output`."""
    pulumi = executable("pulumi", PULUMI, check, alternative)
    command = [pulumi, "stack", "output", name, "--show-secrets", "--stack", stack]
    try:
        # No stdin: pulumi must fail rather than prompt (to log in, for a passphrase) where nobody sees it.
        result = subprocess.run(command, capture_output=True, text=True, timeout=PULUMI_TIMEOUT_SECONDS,
                                cwd=cli.PROJECT_DIR, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CheckFailed(check, f"`pulumi stack output {name}` took over {PULUMI_TIMEOUT_SECONDS:.0f}s; "
                          f"check `pulumi whoami`, or {alternative}") from None
    if result.returncode != 0 or not result.stdout.strip():
        reason = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CheckFailed(check, f"`pulumi stack output {name} --stack {stack}` failed ({reason[0]}); "
                          f"has `pulumi up` run for this stack? Or {alternative}")
    return result.stdout


def api_key(target: Target) -> tuple[str | None, Check]:
    """The key to send, and a check saying where it came from (never the key itself)."""
    if key := os.environ.get(API_KEY_ENV):
        return key, Check("api key", "pass", f"from ${API_KEY_ENV}")
    if not target.require_api_key:
        return None, Check("api key", "pass", "none sent: the stack requires none (vllm.requireApiKey: false)")
    key = stack_output("apiKey", target.stack, "api key", f"set {API_KEY_ENV}").strip()
    return key, Check("api key", "pass", f"from `pulumi stack output apiKey --stack {target.stack}`")


@contextmanager
def kubeconfig_file(option: Path | None, stack: str, alternative: str = "pass --kubeconfig PATH") -> Iterator[Path]:
    """The kubeconfig to use: --kubeconfig, else the stack output in a private temporary file."""
    if option is not None:
        yield option
        return
    content = stack_output("kubeconfig", stack, "kubeconfig", alternative)
    # mkstemp creates the file readable by its owner only: the kubeconfig is a secret output.
    handle, name = tempfile.mkstemp(prefix="kubeconfig-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(content)
        yield Path(name)
    finally:
        os.unlink(name)


# --- the port-forward ------------------------------------------------------------------------------


@contextmanager
def connect(args: argparse.Namespace, target: Target, deadline: float, checks: list[Check]) -> Iterator[Connection]:
    """The server: --url, or a port-forward that lasts as long as the block (its check goes to `checks`)."""
    if args.url:
        yield Connection(args.url.rstrip("/"))
        return
    # Look for kubectl first: without it, asking pulumi for the kubeconfig is wasted.
    kubectl = executable("kubectl", KUBECTL, "port-forward", "pass --url")
    if args.kubeconfig is not None:
        try_it = f"kubectl --kubeconfig {args.kubeconfig} get nodes"
    else:
        try_it = (f"pulumi stack output kubeconfig --show-secrets --stack {target.stack} > kubeconfig.json && "
                  "kubectl --kubeconfig kubeconfig.json get nodes")
    with kubeconfig_file(args.kubeconfig, target.stack, "pass --kubeconfig PATH (or --url URL)") as kubeconfig:
        with port_forward(kubectl, kubeconfig, target, deadline, try_it) as (url, check):
            checks.append(check)
            yield Connection(url, kubectl, kubeconfig)


@contextmanager
def port_forward(kubectl: str, kubeconfig: Path, target: Target, deadline: float,
                 try_it: str) -> Iterator[tuple[str, Check]]:
    """Forward a local port to the model's Service; kubectl always stops when the block ends."""
    command = [kubectl, "--kubeconfig", str(kubeconfig), "port-forward", "-n", target.namespace,
               f"service/{target.model}", f":{SERVICE_PORT}"]
    while True:
        process, port, error = _start_forward(command)
        if port is not None:
            break
        if API_SERVER_UNREACHABLE.search(error) and "error dialing backend" not in error:
            raise CheckFailed("port-forward", f"cannot reach the Kubernetes API server ({error}); check the "
                              f"kubeconfig and your credentials: {try_it}")
        # kubectl refuses while the pod is Pending or initialising: retry until the deadline.
        if time.monotonic() + POLL_SECONDS >= deadline:
            pending = POD_NOT_RUNNING.search(error)
            hint = f"; is the pod running? kubectl get pods -n {target.namespace}" if pending else ""
            raise CheckFailed("port-forward", f"kubectl port-forward to service/{target.model} in namespace "
                              f"{target.namespace} failed: {error}{hint}")
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
        stderr.seek(0)
        said = " ".join(stderr.read().split())
        return process, None, (f"no 'Forwarding from 127.0.0.1:...' line within {FORWARD_TIMEOUT_SECONDS:.0f}s"
                               + (f" ({said})" if said else ""))


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


# --- plain HTTP: /health and /invocations ----------------------------------------------------------


def plain_request(url: str, body: dict[str, Any] | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS) -> Any:
    """Open a GET (or a JSON POST), with no credentials; urllib raises HTTPError for non-2xx answers."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    return urllib.request.urlopen(req, timeout=timeout)


def excerpt(body: bytes | str) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:300] or "(empty body)"


def wait_for_health(base: str, deadline: float, not_ready_hint: str) -> Check:
    """Poll /health until 200. Refused or dropped connections and 5xx mean vLLM is still loading."""
    url = f"{base}/health"
    start = time.monotonic()
    last = "no answer yet"
    while True:
        try:
            with plain_request(url, timeout=min(HEALTH_TIMEOUT_SECONDS, max(deadline - time.monotonic(), 0.5))):
                return Check("health", "pass", f"{url} answered 200 after {time.monotonic() - start:.1f}s")
        except urllib.error.HTTPError as error:
            if error.code < 500:
                raise CheckFailed("health", f"{url} answered {error.code}: is this a vLLM server?") from None
            last = f"HTTP {error.code}"
        except urllib.error.URLError as error:
            if isinstance(error.reason, socket.gaierror):
                raise CheckFailed("health", f"cannot resolve the host of {url}: {error.reason}") from None
            last = str(error.reason)
        except OSError as error:
            last = str(error) or type(error).__name__
        if time.monotonic() >= deadline:
            raise CheckFailed("health", f"{url} not ready within {time.monotonic() - start:.0f}s (last: {last}); "
                              f"{not_ready_hint}")
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0)))


# --- the OpenAI API, through the openai client -----------------------------------------------------


def openai_client(base: str, key: str | None) -> openai.OpenAI:
    # The client retries connection errors, 408, 409, 429 and 5xx twice by default, with backoff
    # (openai-python README, "Retries"; _base_client.py `_should_retry`): a smoke test must report the
    # first failure, and a load test count it, not hide it behind a slower success. The key is always
    # passed, so the client never falls back to $OPENAI_API_KEY, a key meant for someone else.
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key or NO_KEY, max_retries=0,
                         timeout=REQUEST_TIMEOUT_SECONDS)


class RequestFailed(Exception):
    """A request to the OpenAI API failed: `kind` groups failures for counting, `detail` says what happened."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def request_failed(error: openai.APIError) -> RequestFailed:
    """The client's exception as a RequestFailed. It raises APIStatusError subclasses for 4xx/5xx answers
    (AuthenticationError for 401, NotFoundError for 404), APITimeoutError, APIConnectionError, and a plain
    APIError for an error event inside a started stream."""
    what = f"{error.request.method} {error.request.url}"
    if isinstance(error, openai.APIStatusError):
        detail = f"{what} answered {error.status_code}: {excerpt(error.response.text)}"
        if error.status_code == 401:
            detail += (f"; the server refused the API key: set ${API_KEY_ENV} to the stack's current key "
                       "(`pulumi stack output apiKey --show-secrets`)")
        return RequestFailed(f"HTTP {error.status_code}", detail)
    if isinstance(error, openai.APITimeoutError):
        return RequestFailed("timeout", f"{what}: no answer within {REQUEST_TIMEOUT_SECONDS:g}s")
    if isinstance(error, openai.APIConnectionError):
        return RequestFailed("connection", f"{what} failed: {error.__cause__ or error}")
    return RequestFailed("error in stream", f"the server sent an error in the stream: {error.message}")


@dataclass(frozen=True)
class ChatTiming:
    ttft_seconds: float
    total_seconds: float
    # From the first content token to the last.
    decode_seconds: float
    completion_tokens: int
    # False when the server sent no usage chunk and the content chunks were counted instead.
    tokens_from_usage: bool


def stream_chat(client: openai.OpenAI, model: str, max_tokens: int) -> ChatTiming:
    """Stream a chat completion and time it from the chunks as they arrive; RequestFailed if it fails."""
    # The client imports its chat module on first use (tens of milliseconds): not the server's time.
    completions = client.chat.completions
    start = time.monotonic()
    first: float | None = None
    last = start
    chunks = 0
    usage_tokens: int | None = None
    finished = False
    url = f"{client.base_url}chat/completions"
    try:
        with completions.create(
                model=model, messages=[{"role": "user", "content": CHAT_MESSAGE}], max_tokens=max_tokens,
                temperature=0, stream=True, stream_options={"include_usage": True}) as stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage_tokens = chunk.usage.completion_tokens
                # The usage chunk has "choices": [].
                for choice in chunk.choices:
                    if choice.delta.content:
                        last = time.monotonic()
                        first = last if first is None else first
                        chunks += 1
                    finished = finished or choice.finish_reason is not None
    except openai.APIError as error:
        raise request_failed(error) from None
    except ValueError as error:
        # An event whose data is not JSON.
        raise RequestFailed("malformed stream", f"POST {url} sent a malformed stream: {error}") from None
    end = time.monotonic()
    if first is None:
        raise RequestFailed("empty completion", f"POST {url} streamed no content (empty completion)")
    # The client stops at `data: [DONE]` and at the end of the body alike: a finish_reason is what tells
    # a complete answer from one cut off.
    if not finished:
        raise RequestFailed("cut off", f"the stream from {url} ended without a finish_reason (cut off)")
    return ChatTiming(ttft_seconds=first - start, total_seconds=end - start, decode_seconds=last - first,
                      completion_tokens=usage_tokens if usage_tokens is not None else chunks,
                      tokens_from_usage=usage_tokens is not None)
