"""Alert rules for the AMP rule groups namespace (`aws.amp.RuleGroupNamespace.data`).

AMP takes a rules file "in the same format as a rules file in standalone Prometheus" (AMP user guide,
"Create a rules file", AMP-ruler-rulesfile; API reference "RuleGroupsNamespaceData YAML structure").
Groups without `interval` are evaluated every 60 s there (same page). Expressions stay within what
promtool 2.42 parses, and each rule is unit-tested with `promtool test rules` (tests/test_alerts.py).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from components.observability import scrape
from components.observability.queries import (alternatives, model_pod_regex, model_pods_on_pool,
                                              neuron_pool_ratio, selector, with_model)
from components.observability.text import dump_yaml

# Karpenter launch to Ready (1-2 min), model download (2.5-5 min) and image pull (1-2 min) all pass in
# phase Pending (FACTS.md 2b): 15 minutes is longer than a normal cold start.
PENDING_FOR = "15m"
# A Recreate rollout leaves a model without a ready pod for a whole cold start plus the load (1-3 min).
NO_READY_FOR = "10m"
TTFT_WINDOW = "10m"


class ServedModel(Protocol):
    """What the rules need of a model; components.config.ModelConfig has both."""

    name: str
    max_num_seqs: int


def _rule(alert: str, expr: str, severity: str, summary: str, description: str, for_: str | None) -> dict:
    rule: dict = {"alert": alert, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def _serving(namespace: str, models: Sequence[ServedModel], ttft_target_seconds: float,
             ttft_min_requests_per_second: float) -> list[dict]:
    names = [m.name for m in models]
    deployments = {"namespace": namespace, "deployment": f"~{alternatives(names)}"}
    no_ready = (
        f"label_replace(\n"
        f"  max by (namespace, deployment) ({selector('kube_deployment_spec_replicas', **deployments)}) > 0\n"
        f"  unless on (namespace, deployment)\n"
        f"  max by (namespace, deployment) ({selector('kube_deployment_status_replicas_available', **deployments)}) > 0,\n"
        f'  "model", "$1", "deployment", "(.*)")'
    )
    rules = [_rule(
        "VllmModelNoReadyPod", no_ready, "critical",
        "Model {{ $labels.model }} has no ready pod: its API is down",
        f"Deployment {{{{ $labels.namespace }}}}/{{{{ $labels.deployment }}}} wants replicas but none has been "
        f"available for {NO_READY_FOR} (a Deployment scaled to zero does not fire). Look at: "
        "`kubectl get pods -n {{ $labels.namespace }} -l app.kubernetes.io/instance={{ $labels.model }} -o wide`; "
        "Pending: `kubectl describe pod` and the capacity dashboard (Karpenter launch failures); "
        "Init: `kubectl logs deployment/{{ $labels.model }} -n {{ $labels.namespace }} -c model-download`; "
        "Running but not ready or restarting: "
        "`kubectl logs deployment/{{ $labels.model }} -n {{ $labels.namespace }} -c vllm --previous`.",
        NO_READY_FOR)]
    # One rule for all models (promtool rejects two rules of one name and labels): each model's own
    # threshold, carried as a label so the message can say it. vLLM V0 also logs "Pending: N reqs" every
    # few seconds (vllm/engine/metrics.py LoggingStatLogger), which the description points to.
    backlog = "\nor\n".join(
        f'label_replace(max by (namespace, model, pod) '
        f'({selector("vllm:num_requests_waiting", namespace=namespace, model=m.name)}) > {m.max_num_seqs}, '
        f'"max_num_seqs", "{m.max_num_seqs}", "", "")'
        for m in models)
    rules.append(_rule(
        "VllmQueueBacklog", backlog, "warning",
        "Model {{ $labels.model }}: {{ $value }} requests waiting on {{ $labels.pod }}",
        "More requests are queued than the server admits at once (max_num_seqs {{ $labels.max_num_seqs }}) "
        "for 5 minutes: clients wait longer than a full batch. Look at the serving dashboard (running, "
        "waiting, TTFT) and the server's own count: `kubectl logs -n {{ $labels.namespace }} {{ $labels.pod }} "
        "-c vllm --since=15m | grep Pending:`; add replicas "
        "(vllm.models[].replicas) if the NodePool has room, or slow the clients.",
        "5m"))
    buckets = selector("vllm:time_to_first_token_seconds_bucket", namespace=namespace)
    count = selector("vllm:time_to_first_token_seconds_count", namespace=namespace)
    ttft = (
        f"histogram_quantile(0.95, sum by (namespace, model, le) (rate({buckets}[{TTFT_WINDOW}])))"
        f" > {ttft_target_seconds:g}\n"
        f"and on (namespace, model)\n"
        f"sum by (namespace, model) (rate({count}[{TTFT_WINDOW}])) >= {ttft_min_requests_per_second:g}"
    )
    rules.append(_rule(
        "VllmTimeToFirstTokenHigh", ttft, "warning",
        "Model {{ $labels.model }}: p95 time to first token {{ $value | humanizeDuration }}",
        f"p95 TTFT over {TTFT_WINDOW} is above the target of {ttft_target_seconds:g}s while the model serves at "
        f"least {ttft_min_requests_per_second:g} requests/s (fewer requests do not page). Look at the serving "
        "dashboard: waiting requests (queueing), tokens/s; the capacity dashboard: is the model on the "
        "Inferentia2 fallback pool? `kubectl get pods -n {{ $labels.namespace }} "
        "-l app.kubernetes.io/instance={{ $labels.model }} -o wide`.",
        "5m"))
    pending = with_model(selector("kube_pod_status_phase", namespace=namespace, phase="Pending",
                                  pod=f"~{model_pod_regex(names)}"), names)
    rules.append(_rule(
        "VllmModelPodPendingTooLong", f"max by (namespace, model, pod) ({pending}) > 0", "warning",
        "Model pod {{ $labels.pod }} has been Pending for over " + PENDING_FOR,
        "Longer than a cold start (node launch, model download, image pull). Look at: "
        "`kubectl describe pod -n {{ $labels.namespace }} {{ $labels.pod }}` (events: FailedScheduling, "
        "Init:0/1), `kubectl get nodeclaims`, "
        "`kubectl logs -n kube-system deployment/karpenter | grep -iE 'launch|insufficient|quota'` "
        "(a Trn/Inf vCPU quota of 0 fails every launch), "
        "`kubectl logs -n {{ $labels.namespace }} {{ $labels.pod }} -c model-download`.",
        PENDING_FOR))
    return rules


def _neuron() -> list[dict]:
    def errors(error_type: str) -> str:
        return (f"sum by (node) (increase({selector('execution_errors_total', error_type=error_type)}[10m]))"
                " > 0")

    uncorrected_ecc = [
        f"sum by (node) (increase({selector('hardware_ecc_events_total', event_type='~mem_ecc_uncorrected|sram_ecc_uncorrected')}[10m])) > 0",
        *(f"sum by (node) (increase({selector(f'neurondevice_hw_ecc_events_total_{kind}_ecc_uncorrected')}[10m])) > 0"
          for kind in ("mem", "sram")),
    ]
    on_node = ("`kubectl get pods -A -o wide --field-selector spec.nodeName={{ $labels.node }}`, then "
               "`kubectl logs -n <namespace> <pod> -c vllm`")
    return [
        _rule("NeuronExecutionErrors", errors("!hardware"), "warning",
              "Neuron executions fail on node {{ $labels.node }}",
              "neuron-monitor counted failed executions (generic, numerical, transient, model or runtime) in "
              f"the last 10 minutes. The model on this node answers with errors or wrong output. Look at {on_node}, "
              "and the Neuron dashboard (errors by type).",
              "5m"),
        _rule("NeuronHardwareErrors", "\nor\n".join([errors("hardware"), *uncorrected_ecc]), "critical",
              "Neuron hardware errors on node {{ $labels.node }}",
              "Hardware execution errors or uncorrected ECC events: the device is unreliable. Take the node out: "
              "`kubectl cordon {{ $labels.node }}`, then "
              "`kubectl delete nodeclaim $(kubectl get node {{ $labels.node }} "
              "-o jsonpath='{.metadata.labels.karpenter\\.sh/nodeclaim}')` so Karpenter replaces the instance; "
              f"the model pod restarts elsewhere. Pods there: {on_node}.",
              None),
    ]


def _capacity(namespace: str, models: Sequence[ServedModel], trainium_nodepool: str, fallback_nodepool: str,
              neuron_device_limit: int, pool_usage_warning_ratio: float) -> list[dict]:
    names = [m.name for m in models]
    return [
        _rule("VllmModelOnInferentiaFallback", model_pods_on_pool(namespace, names, fallback_nodepool), "warning",
              "Model {{ $labels.model }} runs on the Inferentia2 fallback pool",
              f"Pod {{{{ $labels.pod }}}} is on node {{{{ $labels.node }}}} of NodePool {fallback_nodepool}: Karpenter "
              f"could not launch Trainium capacity from NodePool {trainium_nodepool} (capacity, quota or AZ). "
              "A pod is never moved back by itself. Look at "
              "`kubectl logs -n kube-system deployment/karpenter | grep -iE 'insufficient|VcpuLimitExceeded|launch'` "
              "and the capacity dashboard (launch failures). To move back once Trainium capacity exists: "
              "`kubectl cordon {{ $labels.node }}` then "
              "`kubectl delete pod -n {{ $labels.namespace }} {{ $labels.pod }}`.",
              "5m"),
        _rule("NeuronNodePoolNearLimit",
              f"{neuron_pool_ratio([trainium_nodepool, fallback_nodepool])}\n>= {pool_usage_warning_ratio:g}",
              "warning",
              "NodePool {{ $labels.nodepool }} uses {{ $value | humanizePercentage }} of its Neuron device limit",
              f"The pool's Neuron devices are at or above {pool_usage_warning_ratio:.0%} of its limit "
              f"(configured: {neuron_device_limit} devices, neuron.maxNeuronDevices) for 15 minutes: a rolling "
              "update, an extra replica or a replacement node may not fit. Look at "
              "`kubectl get nodepool {{ $labels.nodepool }} -o jsonpath='{.status.resources}'` and "
              "`kubectl get nodes -l karpenter.sh/nodepool={{ $labels.nodepool }}`; raise neuron.maxNeuronDevices "
              "or remove stray nodes.",
              "15m"),
    ]


def _monitoring() -> list[dict]:
    exporters = alternatives([scrape.JOB_KUBE_STATE_METRICS, scrape.JOB_KARPENTER, scrape.JOB_NEURON_MONITOR])
    return [
        _rule("MonitoringTargetDown", f"{selector('up', job=f'~{exporters}')} == 0", "warning",
              "{{ $labels.job }} target {{ $labels.instance }} cannot be scraped",
              "Alerts that read this exporter cannot fire while it is down. Look at "
              "`kubectl get pods -A -o wide | grep {{ $labels.job }}` and the NetworkPolicies in its namespace "
              "(the AMP collector connects from its network interfaces in the VPC).",
              "10m"),
        _rule("MonitoringTargetsMissing",
              "\nor\n".join(f"absent({selector('up', job=job)})"
                             for job in (scrape.JOB_KUBE_STATE_METRICS, scrape.JOB_VLLM)),
              "warning",
              "No {{ $labels.job }} target is scraped at all",
              "The AMP collector finds no target for this job: the exporter is not running, runs elsewhere, "
              "or the collector is gone. Look at `aws amp list-scrapers` and "
              "`kubectl get pods -A -l app.kubernetes.io/name={{ $labels.job }}`.",
              "15m"),
    ]


def alert_rules(model_namespace: str, models: Sequence[ServedModel], ttft_target_seconds: float, *,
                neuron_device_limit: int, trainium_nodepool: str = "neuron", fallback_nodepool: str = "neuron-inf2",
                ttft_min_requests_per_second: float = 0.05, pool_usage_warning_ratio: float = 0.8) -> str:
    """The rules file (YAML) for `aws.amp.RuleGroupNamespace.data`."""
    if not models:
        raise ValueError("alert_rules needs at least one model")
    groups = [
        {"name": "vllm-serving", "rules": _serving(model_namespace, models, ttft_target_seconds,
                                                   ttft_min_requests_per_second)},
        {"name": "neuron-devices", "rules": _neuron()},
        {"name": "neuron-capacity", "rules": _capacity(model_namespace, models, trainium_nodepool, fallback_nodepool,
                                                       neuron_device_limit, pool_usage_warning_ratio)},
        {"name": "monitoring", "rules": _monitoring()},
    ]
    return dump_yaml({"groups": groups})
