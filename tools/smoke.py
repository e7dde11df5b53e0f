"""Smoke test: is a deployed model answering through its OpenAI-compatible API, where from, and how fast?

    python -m tools.smoke [--stack dev] [--model NAME] [--wait SECONDS] [--json]
                          [--url URL | --kubeconfig PATH]

It talks to the server with the official `openai` client and sends the API key (Authorization: Bearer):
$VLLM_API_KEY, else the stack's secret output `apiKey` when the stack requires a key (vllm.requireApiKey).
Without --url it reaches the model's Service (named after the model, port 8080, namespace vllm.namespace)
through `kubectl port-forward`, with the kubeconfig from `pulumi stack output kubeconfig` (or --kubeconfig).
Then it:
  - waits up to --wait seconds for GET /health to answer 200 (vLLM refuses connections while loading);
  - says which instance type the model is served from (its pods' nodes: instance type, Karpenter NodePool,
    capacity type), and warns when that is the Inferentia2 fallback pool; with --url it cannot look;
  - checks GET /v1/models lists the served model name (the model's name in vllm.models);
  - when the stack requires a key, checks that POST /invocations without it is refused with 401 (vLLM's own
    key check guards only /v1 paths; the stack's middleware guards the rest);
  - sends the EKS workshop's completion request (POST /v1/completions) and shows its first line;
  - streams a chat completion (POST /v1/chat/completions) and measures time to first token, output
    tokens per second after the first token, and total latency.

Exit status: 0 all checks passed (warnings allowed), 1 a check failed, 2 bad flags or stack settings.
--json prints {"ok", "url", "model", "metrics", "checks"}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
from dataclasses import asdict, dataclass
from typing import Any

import openai

from components import neuron, vllm
from tools import cli, endpoint
from tools.cli import Check
from tools.endpoint import CheckFailed, Connection, Target

DEFAULT_WAIT_SECONDS = 600
MAX_TOKENS = 100
KUBECTL_TIMEOUT_SECONDS = 30.0
# The label every model pod carries (components/vllm.py), and the node labels that say where it runs.
POD_LABEL = "app.kubernetes.io/instance"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
NODE_POOL_LABEL = "karpenter.sh/nodepool"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"


@dataclass
class Metrics:
    ttft_seconds: float | None = None
    output_tokens_per_second: float | None = None
    total_seconds: float | None = None
    completion_tokens: int | None = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("smoke", "Check that a deployed model answers through its OpenAI-compatible API, and time it.",
                        "0 pass (warnings allowed), 1 a check failed, 2 usage error")
    endpoint.add_arguments(parser)
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS",
                        help=f"how long to wait for the model to become ready (default: {DEFAULT_WAIT_SECONDS})")
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must be zero or more seconds")
    endpoint.check_arguments(parser, args)
    return args


# --- where the model runs ----------------------------------------------------------------------------


class KubectlFailed(Exception):
    pass


def kubectl_json(connection: Connection, *args: str) -> dict[str, Any]:
    command = [str(connection.kubectl), "--kubeconfig", str(connection.kubeconfig), "--request-timeout=15s",
               *args, "-o", "json"]
    what = f"`kubectl {' '.join(args)}`"
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_SECONDS,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KubectlFailed(f"{what} took over {KUBECTL_TIMEOUT_SECONDS:.0f}s") from None
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.returncode}"]
        raise KubectlFailed(f"{what} failed: {reason[0]}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise KubectlFailed(f"{what} printed no JSON: {endpoint.excerpt(result.stdout)}") from None


def check_placement(connection: Connection, target: Target) -> Check:
    """The instance type, NodePool and capacity type of the nodes the model's running pods are on."""
    if connection.kubeconfig is None:
        return Check("placement", "pass", "not looked up: with --url there is no kubeconfig to find the model's "
                     "pods and nodes; run without --url to see the instance type it is served from")
    try:
        pods = kubectl_json(connection, "get", "pods", "-n", target.namespace, "-l",
                            f"{POD_LABEL}={target.model}")["items"]
        running = sorted((pod["metadata"]["name"], pod["spec"]["nodeName"]) for pod in pods
                         if pod.get("status", {}).get("phase") == "Running" and pod["spec"].get("nodeName"))
        if not running:
            return Check("placement", "warn", f"no running pod labelled {POD_LABEL}={target.model} in namespace "
                         f"{target.namespace}, although /health answered")
        # One name gives the Node itself, several a List.
        answer = kubectl_json(connection, "get", "nodes", *sorted({node for _, node in running}))
    except KubectlFailed as failure:
        return Check("placement", "warn", f"could not look up the model's nodes: {failure}")
    nodes = answer["items"] if answer.get("kind") == "List" else [answer]
    labels = {node["metadata"]["name"]: node["metadata"].get("labels") or {} for node in nodes}
    places = []
    fallback_nodes = []
    for pod, node in running:
        node_labels = labels.get(node, {})
        pool = node_labels.get(NODE_POOL_LABEL)
        places.append(f"{node_labels.get(INSTANCE_TYPE_LABEL, 'an unknown instance type')} "
                      f"({f'NodePool {pool}' if pool else 'not a Karpenter node'}, "
                      f"{node_labels.get(CAPACITY_TYPE_LABEL, 'capacity type unknown')}): pod {pod} on node {node}")
        if pool == neuron.INFERENTIA2_POOL:
            fallback_nodes.append(node)
    detail = "served from " + "; ".join(places)
    if not fallback_nodes:
        return Check("placement", "pass", detail)
    # Karpenter never moves a running pod back; a restarted pod could land on the same node unless cordoned.
    cordon = " && ".join(f"kubectl cordon {node}" for node in sorted(set(fallback_nodes)))
    return Check("placement", "warn", f"{detail}. That is the Inferentia2 fallback pool: Trainium had no capacity "
                 f"or quota when the pod was scheduled. Once Trainium capacity/quota exists, move it back: {cordon} "
                 f"&& kubectl rollout restart deployment/{target.model} -n {target.namespace}")


# --- the API checks --------------------------------------------------------------------------------


def _failed(name: str, error: openai.APIError) -> CheckFailed:
    return CheckFailed(name, endpoint.request_failed(error).detail)


def check_models(client: openai.OpenAI, model: str) -> Check:
    try:
        served = [card.id for card in client.models.list().data]
    except openai.APIError as error:
        raise _failed("models", error) from None
    if model not in served:
        listed = ", ".join(map(str, served)) or "nothing"
        raise CheckFailed("models", f"'{model}' is not served; /v1/models lists: {listed} "
                          "(vLLM's --served-model-name must be the model's name in vllm.models)")
    return Check("models", "pass", f"/v1/models lists '{model}'")


def check_key_required(base: str, model: str) -> Check:
    """POST /invocations without the key must be refused: vLLM's own key check leaves it open."""
    url = f"{base}/invocations"
    # One token: should /invocations be open after all, the probe costs the server next to nothing.
    body = {"model": model, "prompt": "ping", "max_tokens": 1}
    try:
        with endpoint.plain_request(url, body) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read()
    except OSError as error:
        return Check("auth", "fail", f"POST {url} without the API key failed: {error}")
    if status == 401:
        return Check("auth", "pass", f"POST {url} without the API key is refused (401)")
    return Check("auth", "fail", f"POST {url} without the API key answered {status}, not 401 "
                 f"({endpoint.excerpt(text)}): anyone who reaches the Service can use the model. vLLM's own key "
                 "check guards only /v1 paths; is the stack's API key middleware loaded (vllm serve --middleware)?")


def check_completion(client: openai.OpenAI, model: str) -> Check:
    start = time.monotonic()
    try:
        answer = client.completions.create(**vllm.workshop_completion(model))
    except openai.APIError as error:
        raise _failed("completion", error) from None
    seconds = time.monotonic() - start
    choice = answer.choices[0] if answer.choices else None
    text = (choice.text or "") if choice else ""
    if not text.strip():
        raise CheckFailed("completion", f"POST {client.base_url}completions returned an empty completion: "
                          f"{endpoint.excerpt(answer.model_dump_json())}")
    tokens = answer.usage.completion_tokens if answer.usage else "?"
    first_line = text.strip().splitlines()[0][:100]
    return Check("completion", "pass", f"{tokens} tokens in {seconds:.2f}s, finish_reason "
                 f"{choice.finish_reason}: \"{first_line}\"")


def check_chat_stream(client: openai.OpenAI, model: str) -> tuple[Check, Metrics]:
    try:
        timing = endpoint.stream_chat(client, model, MAX_TOKENS)
    except endpoint.RequestFailed as failure:
        raise CheckFailed("chat stream", failure.detail) from None
    tokens = timing.completion_tokens
    metrics = Metrics(
        ttft_seconds=round(timing.ttft_seconds, 4),
        # Decode speed: tokens after the first over the time after the first.
        output_tokens_per_second=(round((tokens - 1) / timing.decode_seconds, 2)
                                  if tokens > 1 and timing.decode_seconds > 0 else None),
        total_seconds=round(timing.total_seconds, 4),
        completion_tokens=tokens,
    )
    source = "usage" if timing.tokens_from_usage else "content chunks, no usage chunk"
    speed = f"{metrics.output_tokens_per_second} tokens/s" if metrics.output_tokens_per_second else "one token"
    return Check("chat stream", "pass", f"{tokens} tokens ({source}), first after {metrics.ttft_seconds:.3f}s, "
                 f"{speed}, {metrics.total_seconds:.2f}s in all"), metrics


# --- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, target: Target) -> tuple[list[Check], Metrics, str | None]:
    checks: list[Check] = []
    metrics = Metrics()
    base = None
    deadline = time.monotonic() + args.wait
    try:
        key, check = endpoint.api_key(target)
        checks.append(check)
        with endpoint.connect(args, target, deadline, checks) as connection:
            base = connection.url
            print(f"waiting up to {args.wait:.0f}s for {base}/health ...", file=sys.stderr)
            checks.append(endpoint.wait_for_health(
                base, deadline, f"if the model is still loading, wait longer (--wait) and watch "
                f"`kubectl logs deployment/{target.model} -n {target.namespace} -c vllm -f`"))
            checks.append(check_placement(connection, target))
            with endpoint.openai_client(base, key) as client:
                checks.append(check_models(client, target.model))
                if target.require_api_key:
                    checks.append(check_key_required(base, target.model))
                checks.append(check_completion(client, target.model))
                check, metrics = check_chat_stream(client, target.model)
                checks.append(check)
    except CheckFailed as failure:
        checks.append(failure.check)
    return checks, metrics, base


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        target = endpoint.target(args)
    except cli.UsageError as error:
        return cli.usage_error(error)
    checks, metrics, base = run(args, target)
    where = base or f"service/{target.model} in namespace {target.namespace}"
    title = f"Smoke test of model '{target.model}' (stack '{args.stack}') at {where}:"
    return cli.report(title, checks, args.json, {"url": base, "model": target.model, "metrics": asdict(metrics)})


if __name__ == "__main__":
    sys.exit(main())
