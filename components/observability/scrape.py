"""The scrape configuration of the AMP managed collector (`aws.amp.Scraper.scrape_configuration`).

What the collector accepts (read, not guessed):
- Prometheus's own scrape-config format, with `global` (scrape_interval, scrape_timeout, external_labels)
  and `scrape_configs` entries carrying `relabel_configs` (Amazon CloudWatch user guide, "Scraper
  configuration" of managed Prometheus collectors; the AMP user guide "Using an AWS managed collector"
  defers to the Prometheus configuration documentation).
- Discovery in an EKS cluster is Kubernetes service discovery (`kubernetes_sd_configs`); the collector
  has no file or Consul discovery (same CloudWatch page, "Limitations"; FACTS.md section 8).
- The minimum scrape_interval is 30 seconds (same page, "Limitations"; FACTS.md section 8).
- `prometheus.io/*` annotations mean nothing unless a relabel rule reads them (FACTS.md section 8), so
  every job here selects its targets by pod label and port explicitly.

Each job keeps only the labels a rule or dashboard reads. The vLLM and neuron-monitor jobs add
`namespace`, `pod` and `node` (vLLM also `model`); kube-state-metrics and Karpenter get no target labels
beyond `job` and `instance`, because their series carry `namespace`, `pod` and `node` of the objects they
describe and a target label of the same name would rename those to `exported_*`.
"""

from __future__ import annotations

import yaml

SCRAPE_INTERVAL = "30s"  # the collector's minimum, and what Grafana's $__rate_interval assumes

JOB_VLLM = "vllm"
JOB_KARPENTER = "karpenter"
JOB_KUBE_STATE_METRICS = "kube-state-metrics"
JOB_NEURON_MONITOR = "neuron-monitor"

# Labels the model Deployments carry (components/vllm.py, VllmModel) and the container port that serves
# /metrics: vLLM mounts its Prometheus app at /metrics on the API port (vllm/entrypoints/openai/
# api_server.py, `Mount("/metrics", ...)`, aws-neuron/upstreaming-to-vllm main at dd417b311).
VLLM_POD_NAME_LABEL = "app.kubernetes.io/name"
VLLM_POD_NAME = "vllm"
VLLM_MODEL_LABEL = "app.kubernetes.io/instance"
VLLM_PORT_NAME = "http"

# Karpenter chart 1.14.1: pods labelled app.kubernetes.io/name=karpenter (templates/_helpers.tpl,
# karpenter.selectorLabels), container port `http-metrics` = controller.metrics.port, 8080
# (templates/deployment.yaml, values.yaml).
KARPENTER_NAMESPACE = "kube-system"
KARPENTER_POD_NAME = "karpenter"
KARPENTER_PORT_NAME = "http-metrics"

# kube-state-metrics chart 8.4.0: pods labelled app.kubernetes.io/name=kube-state-metrics (the chart
# name, templates/_helpers.tpl, kube-state-metrics.selectorLabels), metrics on container port `http`,
# 8080 (templates/deployment.yaml); the telemetry port `metrics` (8081) is the exporter's own health.
KSM_POD_NAME = "kube-state-metrics"
KSM_PORT_NAME = "http"

# neuron-monitor DaemonSet (aws-neuron-sdk src/k8/k8s-neuron-monitor-daemonset.yml at 81ce03ae):
# namespace neuron-monitor, pod label app=neuron-monitor, an unnamed containerPort 8000 (`--port 8000`).
NEURON_MONITOR_POD_LABEL = "app"
NEURON_MONITOR_POD_NAME = "neuron-monitor"
NEURON_MONITOR_PORT = 8000


def _meta_label(kubernetes_label: str) -> str:
    """The discovery meta label Prometheus derives from a pod label (invalid characters become `_`)."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in kubernetes_label)


def _keep(source: str, regex: str) -> dict:
    return {"source_labels": [source], "regex": regex, "action": "keep"}


def _copy(source: str, target: str) -> dict:
    return {"source_labels": [source], "target_label": target, "action": "replace"}


# Pods that finished or failed keep their IP in discovery for a while; nothing listens there.
_LIVE_PODS = {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"}
_WHERE = [_copy("__meta_kubernetes_namespace", "namespace"), _copy("__meta_kubernetes_pod_name", "pod"),
          _copy("__meta_kubernetes_pod_node_name", "node")]


def _pod_job(name: str, namespace: str, selection: list[dict], labels: list[dict]) -> dict:
    return {
        "job_name": name,
        "metrics_path": "/metrics",
        "scheme": "http",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": [*selection, _LIVE_PODS, *labels],
    }


def scrape_configuration(model_namespace: str = "vllm", kube_state_metrics_namespace: str = "monitoring",
                         neuron_monitor_namespace: str = "neuron-monitor") -> str:
    """The collector's YAML: jobs `vllm`, `karpenter`, `kube-state-metrics` and `neuron-monitor`."""
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "10s"},
        "scrape_configs": [
            _pod_job(JOB_VLLM, model_namespace, [
                _keep(_meta_label(VLLM_POD_NAME_LABEL), VLLM_POD_NAME),
                _keep("__meta_kubernetes_pod_container_port_name", VLLM_PORT_NAME),
            ], [*_WHERE, _copy(_meta_label(VLLM_MODEL_LABEL), "model")]),
            _pod_job(JOB_KARPENTER, KARPENTER_NAMESPACE, [
                _keep(_meta_label("app.kubernetes.io/name"), KARPENTER_POD_NAME),
                _keep("__meta_kubernetes_pod_container_port_name", KARPENTER_PORT_NAME),
            ], []),
            _pod_job(JOB_KUBE_STATE_METRICS, kube_state_metrics_namespace, [
                _keep(_meta_label("app.kubernetes.io/name"), KSM_POD_NAME),
                _keep("__meta_kubernetes_pod_container_port_name", KSM_PORT_NAME),
            ], []),
            _pod_job(JOB_NEURON_MONITOR, neuron_monitor_namespace, [
                _keep(_meta_label(NEURON_MONITOR_POD_LABEL), NEURON_MONITOR_POD_NAME),
                _keep("__meta_kubernetes_pod_container_port_number", str(NEURON_MONITOR_PORT)),
            ], _WHERE),
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)
