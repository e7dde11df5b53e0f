"""Load test: a bounded burst of concurrent streamed chat requests, to see how a model holds up and scales.

    python -m tools.load [--stack dev] [--model NAME] [--concurrency N] [--requests N] [--duration SECONDS]
                         [--max-tokens N] [--max-error-rate RATE] [--json] [--url URL | --kubeconfig PATH]

It reaches the model as tools.smoke does (a port-forward or --url, the same API key), checks /health once,
then keeps --concurrency streamed chat completions in flight (POST /v1/chat/completions through the
official `openai` client, retries off) until --requests have been sent or --duration seconds have passed,
whichever comes first; requests already in flight then finish. It reports the time to first token and
the end-to-end latency of the answered requests (p50, p90, p99, nearest rank), throughput over the wall
time of the run (answered requests and output tokens per second), and the failures by kind.

Every flag has a hard cap, so that a typo cannot turn a load test into an outage.

Exit status: 0 the run completed with an error rate of at most --max-error-rate, 1 more errors than that,
nothing answered, or the server not reached, 2 bad flags or stack settings.
--json prints {"ok", "url", "model", "settings", "result", "checks"}.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import openai

from tools import cli, endpoint
from tools.cli import Check
from tools.endpoint import CheckFailed, ChatTiming, RequestFailed

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Bound:
    default: float
    minimum: float
    cap: float


# The caps: one model server admits a handful of sequences (vllm.models[].maxNumSeqs, 4 by default), so 32
# in flight already queues; 2000 requests or 30 minutes is a long test; 1024 tokens fit the 2048-token
# context of the workshop's model with room for the prompt.
CONCURRENCY = Bound(4, 1, 32)
REQUESTS = Bound(100, 1, 2000)
DURATION = Bound(300, 0.1, 1800)
MAX_TOKENS = Bound(100, 1, 1024)
MAX_ERROR_RATE = Bound(0.01, 0, 1)


def _bounded(kind: Callable[[str], float], bound: Bound, unit: str = "") -> Callable[[str], float]:
    """An argparse type that enforces the bound; argparse names the flag and exits with status 2."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'a whole' if kind is int else 'a'} number") from None
        if value > bound.cap:
            raise argparse.ArgumentTypeError(f"{text}{unit} is over the cap of {bound.cap:g}{unit}")
        if value < bound.minimum:
            raise argparse.ArgumentTypeError(f"{text}{unit} is below the minimum of {bound.minimum:g}{unit}")
        return value
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("load", "Send a bounded burst of concurrent streamed chat requests to a deployed model and "
                        "report latency percentiles, throughput and errors.",
                        "0 completed within --max-error-rate, 1 too many errors or nothing answered, 2 usage error")
    endpoint.add_arguments(parser)
    parser.add_argument("--concurrency", type=_bounded(int, CONCURRENCY), default=int(CONCURRENCY.default),
                        metavar="N", help=f"requests in flight at once (default: {CONCURRENCY.default:g}, "
                        f"cap {CONCURRENCY.cap:g})")
    parser.add_argument("--requests", type=_bounded(int, REQUESTS), default=int(REQUESTS.default), metavar="N",
                        help=f"stop after sending this many (default: {REQUESTS.default:g}, cap {REQUESTS.cap:g})")
    parser.add_argument("--duration", type=_bounded(float, DURATION, "s"), default=DURATION.default,
                        metavar="SECONDS", help=f"stop sending after this long, whichever of --requests and "
                        f"--duration comes first (default: {DURATION.default:g}, cap {DURATION.cap:g})")
    parser.add_argument("--max-tokens", type=_bounded(int, MAX_TOKENS), default=int(MAX_TOKENS.default),
                        metavar="N", help=f"max_tokens of each request (default: {MAX_TOKENS.default:g}, "
                        f"cap {MAX_TOKENS.cap:g})")
    parser.add_argument("--max-error-rate", type=_bounded(float, MAX_ERROR_RATE), default=MAX_ERROR_RATE.default,
                        metavar="RATE", help=f"the share of failed requests still counted a success, 0 to 1 "
                        f"(default: {MAX_ERROR_RATE.default:g})")
    args = parser.parse_args(argv)
    endpoint.check_arguments(parser, args)
    return args


def percentile(values: Sequence[float], p: int) -> float:
    """Nearest rank: the smallest value that at least p percent of the values are at or below."""
    ordered = sorted(values)
    # p * n first: an exact integer, so no float rounding moves the rank.
    return ordered[max(math.ceil(p * len(ordered) / 100), 1) - 1]


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    return {f"p{p}": round(percentile(values, p), 4) for p in PERCENTILES} if values else None


@dataclass
class Burst:
    sent: int = 0
    timings: list[ChatTiming] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # The first failure of each kind, to show what it looked like.
    examples: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0


def run_burst(client: openai.OpenAI, model: str, concurrency: int, requests: int, duration: float,
              max_tokens: int) -> Burst:
    """`concurrency` workers send one request after another until `requests` are sent or `duration` is up."""
    burst = Burst()
    lock = threading.Lock()
    start = time.monotonic()
    stop_sending_at = start + duration

    def worker() -> None:
        while True:
            with lock:
                if burst.sent >= requests or time.monotonic() >= stop_sending_at:
                    return
                burst.sent += 1
            try:
                timing = endpoint.stream_chat(client, model, max_tokens)
            except RequestFailed as failure:
                with lock:
                    burst.errors[failure.kind] += 1
                    burst.examples.setdefault(failure.kind, failure.detail)
            else:
                with lock:
                    burst.timings.append(timing)

    # Daemon threads: Ctrl-C ends the run at once, without waiting for the requests in flight.
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    burst.wall_seconds = time.monotonic() - start
    return burst


def summarize(burst: Burst, args: argparse.Namespace) -> tuple[dict[str, Any], list[Check]]:
    """The JSON result and the report's checks."""
    answered = len(burst.timings)
    failed = sum(burst.errors.values())
    error_rate = failed / burst.sent if burst.sent else 0.0
    tokens = sum(t.completion_tokens for t in burst.timings)
    wall = burst.wall_seconds
    stopped_by = "requests" if burst.sent >= args.requests else "duration"
    result = {
        "stopped_by": stopped_by,
        "sent": burst.sent,
        "answered": answered,
        "failed": failed,
        "error_rate": round(error_rate, 4),
        "errors": dict(burst.errors),
        "wall_seconds": round(wall, 3),
        "ttft_seconds": percentiles([t.ttft_seconds for t in burst.timings]),
        "latency_seconds": percentiles([t.total_seconds for t in burst.timings]),
        "requests_per_second": round(answered / wall, 2) if wall > 0 else None,
        "output_tokens": tokens,
        "output_tokens_per_second": round(tokens / wall, 1) if wall > 0 else None,
    }
    stop = f"--requests {args.requests}" if stopped_by == "requests" else f"--duration {args.duration:g}s"
    detail = (f"{burst.sent} sent in {wall:.1f}s, {args.concurrency} at a time (stopped by {stop}): "
              f"{answered} answered, {failed} failed ({error_rate:.1%}; at most {args.max_error_rate:.1%} allowed)")
    if burst.errors:
        detail += "; failures: " + "; ".join(f"{kind} x{count} (first: {burst.examples[kind]})"
                                            for kind, count in burst.errors.most_common())
    if not answered:
        return result, [Check("requests", "fail", f"nothing answered: {detail}")]
    checks = [Check("requests", "pass" if error_rate <= args.max_error_rate else "fail", detail)]
    for name, values in (("time to first token", result["ttft_seconds"]), ("latency", result["latency_seconds"])):
        checks.append(Check(name, "pass", ", ".join(f"{p} {seconds:.3f}s" for p, seconds in values.items())))
    checks.append(Check("throughput", "pass", f"{result['requests_per_second']} requests/s, "
                        f"{result['output_tokens_per_second']} output tokens/s ({tokens} tokens)"))
    return result, checks


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        target = endpoint.target(args)
    except cli.UsageError as error:
        return cli.usage_error(error)
    checks: list[Check] = []
    result = None
    base = None
    # No waiting for a model still loading: that is tools.smoke's job. One port-forward attempt, a few
    # seconds for /health.
    deadline = time.monotonic() + endpoint.HEALTH_TIMEOUT_SECONDS
    try:
        key, check = endpoint.api_key(target)
        checks.append(check)
        with endpoint.connect(args, target, deadline, checks) as connection:
            base = connection.url
            checks.append(endpoint.wait_for_health(
                base, deadline, f"is the model ready? `python -m tools.smoke --stack {target.stack}` waits for it"))
            print(f"sending up to {args.requests} requests, {args.concurrency} at a time, for at most "
                  f"{args.duration:g}s ...", file=sys.stderr)
            with endpoint.openai_client(base, key) as client:
                burst = run_burst(client, target.model, args.concurrency, args.requests, args.duration,
                                  args.max_tokens)
            result, burst_checks = summarize(burst, args)
            checks += burst_checks
    except CheckFailed as failure:
        checks.append(failure.check)
    where = base or f"service/{target.model} in namespace {target.namespace}"
    title = (f"Load test of model '{target.model}' (stack '{args.stack}') at {where}: up to {args.requests} "
             f"requests or {args.duration:g}s, {args.concurrency} at a time, max_tokens {args.max_tokens}:")
    settings = {"concurrency": args.concurrency, "requests": args.requests, "duration_seconds": args.duration,
                "max_tokens": args.max_tokens, "max_error_rate": args.max_error_rate}
    return cli.report(title, checks, args.json,
                      {"url": base, "model": target.model, "settings": settings, "result": result})


if __name__ == "__main__":
    sys.exit(main())
