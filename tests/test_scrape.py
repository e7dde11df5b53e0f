"""The AMP collector's scrape configuration: valid for promtool, within what the collector accepts, and
selecting exactly the pods the stack runs (the vLLM Deployment the program registers, the Karpenter and
kube-state-metrics charts as Helm renders them, the neuron-monitor reference DaemonSet), with the labels
the rules and dashboards read.

Target relabeling is replayed here with Prometheus's semantics (anchored regex, `;`-joined sources,
replacement `$1`, keep/drop, `__` labels removed afterwards) on the labels Kubernetes pod discovery
produces for each container port.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from components.config import PROJECT_DIR
from components.observability import scrape
from components.observability.scrape import scrape_configuration
from tools import render

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SHARED = PROJECT_DIR.parent / "shared"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"

# What the collector accepts (components/observability/scrape.py cites the AMP/CloudWatch pages).
GLOBAL_KEYS = {"scrape_interval", "scrape_timeout", "external_labels"}
JOB_KEYS = {"job_name", "metrics_path", "scheme", "scrape_interval", "scrape_timeout", "kubernetes_sd_configs",
            "relabel_configs", "metric_relabel_configs", "tls_config"}


def _seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def _config(**params) -> dict:
    return yaml.safe_load(scrape_configuration(**params))


def _job(config: dict, name: str) -> dict:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    return job


# --- Kubernetes pod discovery and target relabeling, as Prometheus does them ---------------------------

def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def discover(pod: dict, namespace: str, node: str = "ip-10-0-1-1.ec2.internal", phase: str = "Running") -> list[dict]:
    """The label sets `kubernetes_sd_configs: role: pod` yields: one per container port, one per portless
    container (address without a port), init containers included."""
    meta = pod["metadata"]
    common = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": meta.get("name", "p-0"),
              "__meta_kubernetes_pod_node_name": node, "__meta_kubernetes_pod_phase": phase,
              "__meta_kubernetes_pod_ip": "10.0.9.9"}
    for key, value in meta.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = value
        common[f"__meta_kubernetes_pod_labelpresent_{_sanitize(key)}"] = "true"
    targets = []
    spec = pod["spec"]
    for init, containers in ((False, spec["containers"]), (True, spec.get("initContainers", []))):
        for container in containers:
            base = {**common, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_init": str(init).lower()}
            if not container.get("ports"):
                targets.append({**base, "__address__": "10.0.9.9"})
            for port in container.get("ports", []):
                targets.append({**base, "__address__": f"10.0.9.9:{port['containerPort']}",
                                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                                "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")})
    return targets


def relabel(job: dict, discovered: dict) -> dict | None:
    """The target's final labels, or None when a rule drops it."""
    labels = {"job": job["job_name"], "__metrics_path__": job.get("metrics_path", "/metrics"),
              "__scheme__": job.get("scheme", "http"), **discovered}
    for rule in job.get("relabel_configs", []):
        value = rule.get("separator", ";").join(labels.get(s, "") for s in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep" and not match or action == "drop" and match:
            return None
        if action == "replace" and match:
            result = match.expand(re.sub(r"\$\{?(\d+)\}?", r"\\\1", rule.get("replacement", "$1")))
            if result:
                labels[rule["target_label"]] = result
            else:
                labels.pop(rule["target_label"], None)
        assert action in ("keep", "drop", "replace"), f"replay does not know action {action}"
    labels.setdefault("instance", labels["__address__"])
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def targets(job: dict, pod: dict, namespace: str, **where) -> list[dict]:
    kept = [relabel(job, d) for d in discover(pod, namespace, **where)]
    return [t for t in kept if t is not None]


def test_replay_matches_prometheus_semantics_on_a_known_case():
    """The replay itself: keep is anchored, a missing source is empty, an empty result deletes the label."""
    job = {"job_name": "j", "relabel_configs": [
        {"source_labels": ["a"], "regex": "x", "action": "keep"},
        {"source_labels": ["missing"], "target_label": "gone", "action": "replace"},
        {"source_labels": ["a", "b"], "regex": "(.*);(.*)", "replacement": "$2-$1", "target_label": "c"}]}
    assert relabel(job, {"__address__": "h:1", "a": "xx"}) is None
    assert relabel(job, {"__address__": "h:1", "a": "x", "b": "y", "gone": "1"}) == \
        {"job": "j", "a": "x", "b": "y", "c": "y-x", "instance": "h:1"}


# --- The pods the stack runs ---------------------------------------------------------------------------

def _helm() -> str:
    return render.find_helm()  # `make test` installs it; a clear error names how otherwise


def _chart_pod(chart: str, release: str, namespace: str, *sets: str) -> dict:
    rendered = subprocess.run([_helm(), "template", release, str(SHARED / "charts" / chart), "--namespace", namespace,
                               *[a for s in sets for a in ("--set", s)]], capture_output=True, text=True, check=True,
                              timeout=60).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def vllm_pod(dev_deployment) -> tuple[dict, str]:
    """The model Deployment's pod template as the program registers it (dev stack), and its namespace."""
    (mistral,) = [r.manifest() for r in dev_deployment.of_type(DEPLOYMENT)
                  if r.manifest()["metadata"]["name"] == "mistral"]
    return mistral["spec"]["template"], mistral["metadata"]["namespace"]


def test_vllm_job_scrapes_the_api_port_of_model_pods_with_their_labels(vllm_pod):
    pod, namespace = vllm_pod
    job = _job(_config(model_namespace=namespace), scrape.JOB_VLLM)
    (target,) = targets(job, pod, namespace)  # the API port only: not the init container, no other port
    assert target == {"job": "vllm", "namespace": namespace, "pod": "p-0", "node": "ip-10-0-1-1.ec2.internal",
                      "model": "mistral", "instance": "10.0.9.9:8080"}
    assert job["metrics_path"] == "/metrics"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": [namespace]}}]
    assert targets(job, pod, namespace, phase="Failed") == []
    other = {**pod, "metadata": {**pod["metadata"], "labels": {**pod["metadata"]["labels"],
                                                               "app.kubernetes.io/name": "something-else"}}}
    assert targets(job, other, namespace) == []


def test_karpenter_job_scrapes_the_controller_metrics_port():
    pod = _chart_pod("karpenter-1.14.1", "karpenter", "kube-system", "settings.clusterName=c")
    job = _job(_config(), scrape.JOB_KARPENTER)
    found = targets(job, pod, "kube-system")
    assert [t["instance"] for t in found] == ["10.0.9.9:8080"]
    assert set(found[0]) == {"job", "instance"}  # Karpenter's series carry their own node/namespace labels
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["kube-system"]


def test_kube_state_metrics_job_scrapes_the_metrics_port_not_its_telemetry():
    pod = _chart_pod("kube-state-metrics-8.4.0", "kube-state-metrics", "observability")
    job = _job(_config(kube_state_metrics_namespace="observability"), scrape.JOB_KUBE_STATE_METRICS)
    assert targets(job, pod, "observability") == [{"job": "kube-state-metrics", "instance": "10.0.9.9:8080"}]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["observability"]


def test_neuron_monitor_job_scrapes_port_8000_with_the_node():
    manifest = yaml.safe_load((SHARED / "reference" / "neuron-monitor" / "k8s-neuron-monitor-daemonset.yml").read_text())
    job = _job(_config(neuron_monitor_namespace="nm"), scrape.JOB_NEURON_MONITOR)
    found = targets(job, manifest["spec"]["template"], "nm", node="ip-10-0-3-9")
    assert found == [{"job": "neuron-monitor", "namespace": "nm", "pod": "p-0", "node": "ip-10-0-3-9",
                      "instance": "10.0.9.9:8000"}]


# --- What the collector accepts -------------------------------------------------------------------------

def _for_promtool(config: dict) -> str:
    """Debian's Prometheus is built without Kubernetes discovery ("Kubernetes support has been completely
    removed", /usr/share/doc/prometheus/NEWS.Debian.gz), so its promtool rejects `kubernetes_sd_configs`.
    It checks everything else (global, jobs, relabel rules) with the discovery block swapped for a static
    target; test_kubernetes_discovery_blocks checks that block against Prometheus's schema instead."""
    jobs = []
    for job in config["scrape_configs"]:
        jobs.append({k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
                    | {"static_configs": [{"targets": ["10.0.9.9:8080"]}]})
    return yaml.safe_dump({**config, "scrape_configs": jobs}, sort_keys=False)


@pytest.mark.parametrize("params", [{}, {"model_namespace": "serving", "kube_state_metrics_namespace": "ksm",
                                         "neuron_monitor_namespace": "nm"}])
def test_promtool_accepts_the_configuration(tmp_path, params):
    path = tmp_path / "prometheus.yml"
    path.write_text(_for_promtool(_config(**params)))
    result = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_configuration(tmp_path):
    """Negative control: promtool does check what it is given (here a misspelt relabel action)."""
    config = _config()
    config["scrape_configs"][0]["relabel_configs"][0]["action"] = "keepp"
    path = tmp_path / "prometheus.yml"
    path.write_text(_for_promtool(config))
    assert subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, timeout=60).returncode != 0


def test_kubernetes_discovery_blocks():
    # Prometheus kubernetes_sd_config: role is one of these; namespaces.names is a list of namespace names.
    roles = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
    for job in _config(model_namespace="serving")["scrape_configs"]:
        for sd in job["kubernetes_sd_configs"]:
            assert set(sd) <= {"role", "namespaces"} and sd["role"] in roles
            assert set(sd["namespaces"]) == {"names"}
            assert all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in sd["namespaces"]["names"])


def test_only_what_the_managed_collector_accepts():
    config = _config()
    assert set(config) == {"global", "scrape_configs"}
    assert set(config["global"]) <= GLOBAL_KEYS
    intervals = [config["global"]["scrape_interval"], *(j.get("scrape_interval", "30s") for j in config["scrape_configs"])]
    assert all(_seconds(i) >= 30 for i in intervals), intervals
    assert _seconds(config["global"]["scrape_timeout"]) < _seconds(config["global"]["scrape_interval"])
    names = [j["job_name"] for j in config["scrape_configs"]]
    assert sorted(names) == sorted({scrape.JOB_VLLM, scrape.JOB_KARPENTER, scrape.JOB_KUBE_STATE_METRICS,
                                    scrape.JOB_NEURON_MONITOR})
    for job in config["scrape_configs"]:
        assert set(job) <= JOB_KEYS, job["job_name"]
        assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]
    # Nothing depends on prometheus.io/* annotations, which the collector would not act on anyway.
    assert "annotation" not in scrape_configuration()


def test_deterministic():
    assert scrape_configuration() == scrape_configuration()
