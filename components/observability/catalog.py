"""The metric names the pinned exporters emit, each with the scrape job that collects it, the labels the
exporter itself puts on it (target labels come from scrape.py) and where the name was read.

Rules and dashboards may only use names listed here (tests/test_metric_names.py parses every expression).
Histograms appear as their `_bucket`/`_sum`/`_count` series, summaries as the quantile series plus
`_sum`/`_count`, as Prometheus exposes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.observability import scrape


@dataclass(frozen=True)
class Metric:
    name: str
    job: str
    kind: str  # counter, gauge, histogram, summary or info, as the exporter declares it
    labels: tuple[str, ...]
    source: str


VLLM = ("vllm/engine/metrics.py (V0 `Metrics`), aws-neuron/upstreaming-to-vllm main at dd417b311, "
        "2025-06-24, upstream vLLM merged through 2025-06-13 (v0.9.1 is 2025-06-10); the 2.26.0 branch "
        "was not in the snapshot read. Label model_name = served_model_name (llm_engine.py)")
HTTP = ("prometheus_fastapi_instrumentator/metrics.py default() 7.1.0; vLLM installs it with "
        "Instrumentator(...).add().instrument(app) (api_server.py, same commit as above), "
        "status grouped as 2xx/4xx/5xx")
NEURON_MONITOR = ("neuron-monitor-prometheus.py (aws-neuronx-tools, installed in /opt/aws/neuron/bin; "
                  "copies read through the code index); names also used by aws-neuron-sdk "
                  "src/examples/neuron-monitor/neuron-monitor-grafana.json at 81ce03ae")
NEURON_MONITOR_ECC_ALT = ("not confirmed for neuron-monitor 1.3.0: FACTS.md section 8 and the "
                          "opentelemetry-collector-contrib awscontainerinsightreceiver neuron test fixture "
                          "show these per-event-type series; the Python exporter emits "
                          "hardware_ecc_events_total{event_type} instead. Rules accept either")
KARPENTER = "kubernetes-sigs/karpenter at 6e7eab7a0f48 (the core pinned by karpenter-provider-aws v1.14.1 go.mod)"
KARPENTER_AWS = "aws/karpenter-provider-aws v1.14.1 pkg/providers/instance/metrics.go"
KSM = "kubernetes/kube-state-metrics v2.20.0 (chart 8.4.0 appVersion)"
ANY_JOB = "*"
PROMETHEUS = "written by the scraper for every target (Prometheus 'Jobs and instances' documentation)"

# kube-state-metrics exposes node labels only when allow-listed; the lead sets the chart's
# metricLabelsAllowlist to this. Label names become `label_` + the key with every character outside
# [a-zA-Z0-9_] replaced by `_` (internal/store/utils.go labelName/SanitizeLabelName, v2.20.0).
KSM_NODE_LABELS = ("karpenter.sh/nodepool", "karpenter.k8s.aws/instance-family", "karpenter.sh/capacity-type",
                   "node.kubernetes.io/instance-type")
KSM_METRIC_LABELS_ALLOWLIST = f"nodes=[{','.join(KSM_NODE_LABELS)}]"
NODEPOOL_LABEL = "label_karpenter_sh_nodepool"
INSTANCE_FAMILY_LABEL = "label_karpenter_k8s_aws_instance_family"
CAPACITY_TYPE_LABEL = "label_karpenter_sh_capacity_type"
INSTANCE_TYPE_LABEL = "label_node_kubernetes_io_instance_type"

# Karpenter's resource_type value for Neuron devices: the resource name lower-cased, `-` -> `_`
# (pkg/controllers/metrics/nodepool/controller.go buildMetrics).
NEURON_RESOURCE_TYPE = "aws.amazon.com/neuron"

_INSTANCE = ("instance_name", "instance_id", "instance_type", "availability_zone", "region", "subnet_id")
_RUNTIME = (*_INSTANCE, "runtime_tag")
_POD = ("namespace", "pod", "uid")


def _one(name: str, job: str, kind: str, labels: tuple[str, ...], source: str) -> list[Metric]:
    return [Metric(name, job, kind, labels, source)]


def _histogram(name: str, job: str, labels: tuple[str, ...], source: str) -> list[Metric]:
    return [Metric(f"{name}_bucket", job, "histogram", (*labels, "le"), source),
            Metric(f"{name}_sum", job, "histogram", labels, source),
            Metric(f"{name}_count", job, "histogram", labels, source)]


def _summary(name: str, job: str, labels: tuple[str, ...], source: str) -> list[Metric]:
    return [Metric(name, job, "summary", (*labels, "quantile"), source),
            Metric(f"{name}_sum", job, "summary", labels, source),
            Metric(f"{name}_count", job, "summary", labels, source)]


_V = scrape.JOB_VLLM
_N = scrape.JOB_NEURON_MONITOR
_K = scrape.JOB_KARPENTER
_S = scrape.JOB_KUBE_STATE_METRICS
_M = ("model_name",)

_ENTRIES: list[Metric] = [
    # vLLM 0.9.1, V0 engine
    *_one("vllm:num_requests_running", _V, "gauge", _M, VLLM),
    *_one("vllm:num_requests_waiting", _V, "gauge", _M, VLLM),
    *_one("vllm:gpu_cache_usage_perc", _V, "gauge", _M, VLLM),
    *_one("vllm:num_preemptions_total", _V, "counter", _M, VLLM),
    *_one("vllm:prompt_tokens_total", _V, "counter", _M, VLLM),
    *_one("vllm:generation_tokens_total", _V, "counter", _M, VLLM),
    *_histogram("vllm:iteration_tokens_total", _V, _M, VLLM),
    *_histogram("vllm:time_to_first_token_seconds", _V, _M, VLLM),
    *_histogram("vllm:time_per_output_token_seconds", _V, _M, VLLM),
    *_histogram("vllm:e2e_request_latency_seconds", _V, _M, VLLM),
    *_histogram("vllm:request_queue_time_seconds", _V, _M, VLLM),
    *_histogram("vllm:request_inference_time_seconds", _V, _M, VLLM),
    *_histogram("vllm:request_prefill_time_seconds", _V, _M, VLLM),
    *_histogram("vllm:request_decode_time_seconds", _V, _M, VLLM),
    *_histogram("vllm:request_prompt_tokens", _V, _M, VLLM),
    *_histogram("vllm:request_generation_tokens", _V, _M, VLLM),
    *_histogram("vllm:request_max_num_generation_tokens", _V, _M, VLLM),
    *_histogram("vllm:request_params_n", _V, _M, VLLM),
    *_histogram("vllm:request_params_max_tokens", _V, _M, VLLM),
    *_one("vllm:request_success_total", _V, "counter", (*_M, "finished_reason"), VLLM),
    # The API server's HTTP metrics, same target
    *_one("http_requests_total", _V, "counter", ("handler", "method", "status"), HTTP),
    *_histogram("http_request_duration_seconds", _V, ("handler", "method"), HTTP),
    *_histogram("http_request_duration_highr_seconds", _V, (), HTTP),
    # neuron-monitor 1.3.0
    *_one("neuroncore_utilization_ratio", _N, "gauge", (*_RUNTIME, "neuroncore"), NEURON_MONITOR),
    *_one("neuron_runtime_vcpu_usage_ratio", _N, "gauge", (*_RUNTIME, "usage_type"), NEURON_MONITOR),
    *_one("neuron_runtime_memory_used_bytes", _N, "gauge", (*_RUNTIME, "memory_location"), NEURON_MONITOR),
    *[m for usage in ("constants", "model_code", "model_shared_scratchpad", "runtime_memory", "tensors")
      for m in _one(f"neuroncore_memory_usage_{usage}", _N, "gauge",
                    (*_RUNTIME, "memory_location", "neuroncore"), NEURON_MONITOR)],
    *_one("execution_errors_total", _N, "counter", (*_RUNTIME, "error_type"), NEURON_MONITOR),
    *_one("execution_status_total", _N, "counter", (*_RUNTIME, "status_type"), NEURON_MONITOR),
    *_one("execution_latency_seconds", _N, "gauge", (*_RUNTIME, "percentile"), NEURON_MONITOR),
    *_one("hardware_ecc_events_total", _N, "counter", (*_INSTANCE, "event_type", "neuron_device_index"),
          NEURON_MONITOR),
    *[m for event in ("mem_ecc_corrected", "mem_ecc_uncorrected", "sram_ecc_corrected", "sram_ecc_uncorrected")
      for m in _one(f"neurondevice_hw_ecc_events_total_{event}", _N, "gauge",
                    (*_RUNTIME, "neuron_device_index"), NEURON_MONITOR_ECC_ALT)],
    *_one("system_vcpu_count", _N, "gauge", _INSTANCE, NEURON_MONITOR),
    *_one("system_vcpu_usage_ratio", _N, "gauge", (*_INSTANCE, "usage_type"), NEURON_MONITOR),
    *[m for stat in ("memory_total_bytes", "memory_used_bytes", "swap_total_bytes", "swap_used_bytes")
      for m in _one(f"system_{stat}", _N, "gauge", _INSTANCE, NEURON_MONITOR)],
    *_one("instance_info", _N, "info", _INSTANCE, NEURON_MONITOR),
    *_one("neuron_hardware_info", _N, "info", (*_INSTANCE, "neuron_device_count", "neuroncore_per_device_count"),
          NEURON_MONITOR),
    # Karpenter 1.14.1
    *_one("karpenter_nodepools_usage", _K, "gauge", ("resource_type", "nodepool"),
          f"{KARPENTER} pkg/controllers/metrics/nodepool/controller.go"),
    *_one("karpenter_nodepools_limit", _K, "gauge", ("resource_type", "nodepool"),
          f"{KARPENTER} pkg/controllers/metrics/nodepool/controller.go"),
    *_one("karpenter_nodeclaims_created_total", _K, "counter", ("reason", "nodepool", "min_values_relaxed"),
          f"{KARPENTER} pkg/metrics/metrics.go"),
    *_one("karpenter_nodeclaims_disrupted_total", _K, "counter", ("reason", "nodepool", "capacity_type"),
          f"{KARPENTER} pkg/metrics/metrics.go"),
    *_one("karpenter_nodes_created_total", _K, "counter", ("nodepool", "zone"), f"{KARPENTER} pkg/metrics/metrics.go"),
    *_summary("karpenter_pods_startup_duration_seconds", _K, (),
              f"{KARPENTER} pkg/controllers/metrics/pod/controller.go (a Summary without labels)"),
    *_one("karpenter_cloudprovider_instance_launch_failures_total", _K, "counter",
          ("zone", "zone_id", "capacity_type", "reason"), KARPENTER_AWS),
    # kube-state-metrics 2.20.0
    *_one("kube_pod_info", _S, "gauge", (*_POD, "host_ip", "pod_ip", "node", "created_by_kind", "created_by_name",
                                          "priority_class", "host_network"),
          f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_pod_status_phase", _S, "gauge", (*_POD, "phase"), f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_pod_status_ready", _S, "gauge", (*_POD, "condition"), f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_pod_created", _S, "gauge", _POD, f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_pod_status_ready_time", _S, "gauge", _POD,
          f"{KSM} docs/metrics/workload/pod-metrics.md (EXPERIMENTAL)"),
    *_one("kube_pod_container_status_waiting_reason", _S, "gauge", (*_POD, "container", "reason"),
          f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_pod_container_status_restarts_total", _S, "counter", (*_POD, "container"),
          f"{KSM} docs/metrics/workload/pod-metrics.md"),
    *_one("kube_node_labels", _S, "gauge",
          ("node", NODEPOOL_LABEL, INSTANCE_FAMILY_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL),
          f"{KSM} docs/metrics/cluster/node-metrics.md, with KSM_METRIC_LABELS_ALLOWLIST"),
    *_one("kube_node_status_condition", _S, "gauge", ("node", "condition", "status"),
          f"{KSM} docs/metrics/cluster/node-metrics.md"),
    *_one("kube_deployment_spec_replicas", _S, "gauge", ("namespace", "deployment"),
          f"{KSM} docs/metrics/workload/deployment-metrics.md"),
    *_one("kube_deployment_status_replicas_available", _S, "gauge", ("namespace", "deployment"),
          f"{KSM} docs/metrics/workload/deployment-metrics.md"),
    # Not an exporter's series: the scraper writes it for every target of every job.
    *_one("up", ANY_JOB, "gauge", (), PROMETHEUS),
]

CATALOG: dict[str, Metric] = {m.name: m for m in _ENTRIES}
