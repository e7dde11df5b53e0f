"""Three Grafana dashboards, built in code: serving (vLLM), Neuron devices, and capacity (Karpenter).

The serving dashboard covers what vLLM's own dashboard shows (examples/online_serving/prometheus_grafana/
grafana.json, vLLM 0.9.2: latency percentiles, token throughput, scheduler state, finish reasons), per
model instead of one `model_name` at a time. The Neuron dashboard follows the Neuron SDK's neuron-monitor
dashboard (aws-neuron-sdk src/examples/neuron-monitor/neuron-monitor-grafana.json at 81ce03ae), per node.

Every panel and variable uses the `grafana-amazonprometheus-datasource` plugin with uid `amp` (Grafana 13
dropped SigV4 from the built-in Prometheus datasource, FACTS.md section 8); the upstream dashboards select a
datasource of type `prometheus`, which would find nothing. Output is deterministic: sorted keys, fixed uids
and panel ids, so an unchanged stack renders byte-identical ConfigMaps.
"""

from __future__ import annotations

import json
from typing import Sequence

from components.observability import catalog
from components.observability.queries import alternatives, model_pod_regex, model_pods_on_pool, neuron_pool_ratio, selector

DATASOURCE = {"type": "grafana-amazonprometheus-datasource", "uid": "amp"}
RATE = "$__rate_interval"
_WIDTH, _HEIGHT = 12, 8


def _target(expr: str, legend: str) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "range": True}


def _panel(title: str, description: str, targets: list[dict], unit: str, kind: str = "timeseries",
           thresholds: Sequence[tuple[str, float | None]] = (), stack: bool = False) -> dict:
    defaults: dict = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute",
                                  "steps": [{"color": color, "value": value} for color, value in thresholds]}
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 20 if stack else 0, "lineWidth": 1,
                              "stacking": {"mode": "normal" if stack else "none"},
                              "thresholdsStyle": {"mode": "line" if thresholds else "off"}}
    return {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else {},
            "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]}


def _variable(name: str, label: str, metric_selector: str) -> dict:
    query = f"label_values({metric_selector}, {name})"
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "definition": query,
            "query": {"query": query, "refId": "StandardVariableQuery"}, "refresh": 2, "sort": 1,
            "multi": True, "includeAll": True, "allValue": ".+", "current": {}, "options": [], "hide": 0,
            "regex": "", "skipUrlSync": False}


def _dashboard(uid: str, title: str, description: str, panels: list[dict], variables: list[dict]) -> dict:
    laid_out = []
    for i, panel in enumerate(panels):
        laid_out.append({**panel, "id": i + 1,
                         "gridPos": {"h": _HEIGHT, "w": _WIDTH, "x": (i % 2) * _WIDTH, "y": (i // 2) * _HEIGHT}})
    return {"uid": uid, "title": title, "description": description, "tags": ["trainium-vllm"],
            "editable": True, "graphTooltip": 1, "refresh": "1m", "schemaVersion": 39, "version": 1,
            "time": {"from": "now-6h", "to": "now"}, "timezone": "browser",
            "annotations": {"list": []}, "links": [], "templating": {"list": variables}, "panels": laid_out}


def _quantiles(metric: str, by: str, match: dict[str, str], quantiles: Sequence[float]) -> list[dict]:
    return [_target(f"histogram_quantile({q:g}, sum by ({by}, le) (rate({selector(metric, **match)}[{RATE}])))",
                    f"{{{{{by}}}}} p{q * 100:g}") for q in quantiles]


def _serving(namespace: str, ttft_target_seconds: float) -> dict:
    m = {"namespace": namespace, "model": "~$model"}

    def per_model(metric: str, **extra: str) -> str:
        return selector(metric, **m, **extra)

    panels = [
        _panel("Time to first token", "p50/p95/p99 per model over the rate interval; the red line is the stack's "
               "target (observability.ttftTargetSeconds), which VllmTimeToFirstTokenHigh pages on at p95.",
               _quantiles("vllm:time_to_first_token_seconds_bucket", "model", m, (0.5, 0.95, 0.99)), "s",
               thresholds=[("green", None), ("red", ttft_target_seconds)]),
        _panel("End-to-end request latency", "p50/p95/p99 per model, from arrival to the last token.",
               _quantiles("vllm:e2e_request_latency_seconds_bucket", "model", m, (0.5, 0.95, 0.99)), "s"),
        _panel("Time per output token", "p50/p95 per model: decode speed as a client sees it.",
               _quantiles("vllm:time_per_output_token_seconds_bucket", "model", m, (0.5, 0.95)), "s"),
        _panel("Tokens per second", "Prompt (prefill) and generated tokens per second, per model.",
               [_target(f"sum by (model) (rate({per_model('vllm:prompt_tokens_total')}[{RATE}]))", "{{model}} prompt"),
                _target(f"sum by (model) (rate({per_model('vllm:generation_tokens_total')}[{RATE}]))",
                        "{{model}} generated")], "short"),
        _panel("Requests running and waiting", "Running requests are in the batch (at most max_num_seqs per pod); "
               "waiting ones queue. VllmQueueBacklog pages when waiting stays above max_num_seqs.",
               [_target(f"sum by (model) ({per_model('vllm:num_requests_running')})", "{{model}} running"),
                _target(f"sum by (model) ({per_model('vllm:num_requests_waiting')})", "{{model}} waiting")], "short"),
        _panel("Queue time", "p95 time a request waited before its first scheduling, per model.",
               _quantiles("vllm:request_queue_time_seconds_bucket", "model", m, (0.95,)), "s"),
        _panel("Successful requests", "Finished requests per second by finish reason (stop, length, abort).",
               [_target(f"sum by (model, finished_reason) (rate({per_model('vllm:request_success_total')}[{RATE}]))",
                        "{{model}} {{finished_reason}}")], "reqps"),
        _panel("Errors", "API responses with status 4xx and 5xx per second (vLLM's HTTP instrumentation; /health "
               "and /metrics are not counted). 5xx with no ready pod: the engine died.",
               [_target(f"sum by (model, status) (rate({per_model('http_requests_total', status='~4xx|5xx')}[{RATE}]))",
                        "{{model}} {{status}}")], "reqps"),
        _panel("Batch slot occupancy", "vllm:gpu_cache_usage_perc. On Neuron a block is a whole sequence "
               "(block size = max_model_len), so this is the share of batch slots in use, not token-level KV use.",
               [_target(f"max by (model) ({per_model('vllm:gpu_cache_usage_perc')})", "{{model}}")], "percentunit"),
        _panel("Available model pods", "Ready pods per model Deployment (kube-state-metrics). "
               "VllmModelNoReadyPod pages when a model wants replicas and has none.",
               [_target(f"max by (deployment) ({selector('kube_deployment_status_replicas_available', namespace=namespace, deployment='~$model')})",
                        "{{deployment}}")], "short"),
    ]
    model_variable = _variable("model", "Model", selector("vllm:num_requests_running", namespace=namespace))
    return _dashboard("trainium-vllm-serving", "vLLM serving",
                      "Latency, throughput and queueing per model (vLLM 0.9.1 V0 metrics).", panels, [model_variable])


def _neuron() -> dict:
    def on(metric: str, **extra: str) -> str:
        return selector(metric, node="~$node", **extra)

    memory_kinds = ("model_code", "tensors", "constants", "model_shared_scratchpad", "runtime_memory")
    panels = [
        _panel("NeuronCore utilization", "Per node and NeuronCore (neuron-monitor).",
               [_target(f"avg by (node, neuroncore) ({on('neuroncore_utilization_ratio')})",
                        "{{node}} nc{{neuroncore}}")], "percentunit"),
        _panel("NeuronCore utilization per node", "Average over the node's NeuronCores.",
               [_target(f"avg by (node) ({on('neuroncore_utilization_ratio')})", "{{node}}")], "percentunit"),
        _panel("Neuron runtime memory", "Memory the Neuron runtime holds on the device and on the host, per node.",
               [_target(f"sum by (node, memory_location) ({on('neuron_runtime_memory_used_bytes')})",
                        "{{node}} {{memory_location}}")], "bytes"),
        _panel("Device memory by use", "NeuronCore memory by what it holds (model code, tensors, ...), per node.",
               [_target(f"sum by (node) ({on(f'neuroncore_memory_usage_{kind}')})", f"{{{{node}}}} {kind}")
                for kind in memory_kinds], "bytes", stack=True),
        _panel("Execution errors", "Failed executions per second by error type. NeuronExecutionErrors pages on any, "
               "NeuronHardwareErrors on `hardware`.",
               [_target(f"sum by (node, error_type) (rate({on('execution_errors_total')}[{RATE}]))",
                        "{{node}} {{error_type}}")], "short"),
        _panel("Execution outcomes", "Executions per second by outcome (completed, timed_out, ...).",
               [_target(f"sum by (node, status_type) (rate({on('execution_status_total')}[{RATE}]))",
                        "{{node}} {{status_type}}")], "short"),
        _panel("Execution latency", "p50 and p99 of one model execution on the device, as neuron-monitor reports.",
               [_target(f"max by (node, percentile) ({on('execution_latency_seconds', percentile='~p50|p99')})",
                        "{{node}} {{percentile}}")], "s"),
        _panel("ECC events", "Corrected and uncorrected memory/SRAM ECC events in the interval. Two targets: "
               "neuron-monitor versions name these differently; one of them stays empty.",
               [_target(f"sum by (node, event_type) (increase({on('hardware_ecc_events_total')}[{RATE}]))",
                        "{{node}} {{event_type}}"),
                *[_target(f"sum by (node) (increase({on(f'neurondevice_hw_ecc_events_total_{event}')}[{RATE}]))",
                          f"{{{{node}}}} {event}")
                  for event in ("mem_ecc_corrected", "mem_ecc_uncorrected", "sram_ecc_corrected",
                                "sram_ecc_uncorrected")]], "short"),
        _panel("Host memory and vCPU", "The Neuron node's host memory use and vCPU use.",
               [_target(f"max by (node) ({on('system_memory_used_bytes')}) / max by (node) ({on('system_memory_total_bytes')})",
                        "{{node}} memory"),
                _target(f"sum by (node) ({on('system_vcpu_usage_ratio')})", "{{node}} vCPU")], "percentunit"),
    ]
    node_variable = _variable("node", "Node", selector("neuroncore_utilization_ratio"))
    return _dashboard("trainium-vllm-neuron", "Neuron devices",
                      "NeuronCore utilization, device memory and execution errors per node (neuron-monitor 1.3.0).",
                      panels, [node_variable])


def _capacity(namespace: str, model_names: Sequence[str], trainium_nodepool: str, fallback_nodepool: str) -> dict:
    pools = [trainium_nodepool, fallback_nodepool]
    neuron = {"resource_type": catalog.NEURON_RESOURCE_TYPE, "nodepool": f"~{alternatives(pools)}"}
    model_pods = {"namespace": namespace, "pod": f"~{model_pod_regex(model_names)}"}
    family, capacity_type = catalog.INSTANCE_FAMILY_LABEL, catalog.CAPACITY_TYPE_LABEL
    panels = [
        _panel("Neuron nodes by instance family and capacity type",
               f"Nodes of NodePools {trainium_nodepool} and {fallback_nodepool} (kube-state-metrics node labels).",
               [_target(f"count by ({family}, {capacity_type}) "
                        f"({selector('kube_node_labels', **{catalog.NODEPOOL_LABEL: '~' + alternatives(pools)})})",
                        f"{{{{{family}}}}} {{{{{capacity_type}}}}}")], "short", stack=True),
        _panel("Neuron devices: used and limit", "Per NodePool, as Karpenter accounts them.",
               [_target(f"max by (nodepool) ({selector('karpenter_nodepools_usage', **neuron)})", "{{nodepool}} used"),
                _target(f"max by (nodepool) ({selector('karpenter_nodepools_limit', **neuron)})", "{{nodepool}} limit")],
               "short"),
        _panel("Neuron device limit used", "Used over limit per NodePool; NeuronNodePoolNearLimit pages at 80%.",
               [_target(neuron_pool_ratio(pools), "{{nodepool}}")], "percentunit", kind="gauge",
               thresholds=[("green", None), ("orange", 0.8), ("red", 1.0)]),
        _panel("Model pods per NodePool", f"Model pods on Trainium ({trainium_nodepool}) and on the Inferentia2 "
               f"fallback ({fallback_nodepool}); VllmModelOnInferentiaFallback pages on the second.",
               [_target(f"count by (model) ({model_pods_on_pool(namespace, model_names, trainium_nodepool)})",
                        f"{{{{model}}}} on {trainium_nodepool}"),
                _target(f"count by (model) ({model_pods_on_pool(namespace, model_names, fallback_nodepool)})",
                        f"{{{{model}}}} on {fallback_nodepool}")], "short"),
        _panel("Instance launch failures", "Failed CreateFleet offerings by reason, capacity type and zone "
               "(InsufficientInstanceCapacity, VcpuLimitExceeded, ...). Karpenter then tries the next offering.",
               [_target(f"sum by (reason, capacity_type, zone) "
                        f"(increase({selector('karpenter_cloudprovider_instance_launch_failures_total')}[{RATE}]))",
                        "{{reason}} {{capacity_type}} {{zone}}")], "short"),
        _panel("NodeClaims created and disrupted", "Per Neuron NodePool and reason.",
               [_target(f"sum by (nodepool, reason) (increase({selector('karpenter_nodeclaims_created_total', nodepool=neuron['nodepool'])}[{RATE}]))",
                        "created {{nodepool}} {{reason}}"),
                _target(f"sum by (nodepool, reason) (increase({selector('karpenter_nodeclaims_disrupted_total', nodepool=neuron['nodepool'])}[{RATE}]))",
                        "disrupted {{nodepool}} {{reason}}")], "short"),
        _panel("Model pod startup", "Seconds from pod creation to ready, per model pod: node launch, download, "
               "image pull and model load together.",
               [_target(f"max by (pod) ({selector('kube_pod_status_ready_time', **model_pods)})"
                        f" - max by (pod) ({selector('kube_pod_created', **model_pods)})", "{{pod}}")], "s"),
        _panel("Pod startup (all pods Karpenter placed)", "Karpenter's summary of pod creation to running, cluster-wide.",
               [_target(f"max by (quantile) ({selector('karpenter_pods_startup_duration_seconds', quantile='~0.5|0.9|0.99')})",
                        "p{{quantile}}")], "s"),
    ]
    return _dashboard("trainium-vllm-capacity", "Neuron capacity",
                      "Which Neuron nodes exist, how close the NodePools are to their limits, and why launches fail.",
                      panels, [])


def dashboards(*, model_names: Sequence[str], ttft_target_seconds: float, model_namespace: str = "vllm",
               trainium_nodepool: str = "neuron", fallback_nodepool: str = "neuron-inf2") -> dict[str, str]:
    """File name -> dashboard JSON, for ConfigMaps labelled `grafana_dashboard: "1"`."""
    if not model_names:
        raise ValueError("dashboards needs at least one model name")
    built = {
        "trainium-vllm-serving.json": _serving(model_namespace, ttft_target_seconds),
        "trainium-vllm-neuron.json": _neuron(),
        "trainium-vllm-capacity.json": _capacity(model_namespace, model_names, trainium_nodepool, fallback_nodepool),
    }
    return {name: json.dumps(board, indent=2, sort_keys=True) + "\n" for name, board in built.items()}
