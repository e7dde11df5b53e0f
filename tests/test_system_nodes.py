"""The system node group holds everything that runs on it, even with one node lost.

Every pod that may only run on the system nodes (Karpenter, CoreDNS, KEDA, kube-state-metrics, Grafana, the model
sync Jobs) has CPU and memory requests and a memory limit; their sum, plus each node's DaemonSets, must fit the
nodes that are left when one goes away (a zone outage, an update, a failed instance). CPU limits may overcommit
(a busy pod is throttled, not killed); memory limits may not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from components.config import PROJECT
from components.instances import SYSTEM_INSTANCE_TYPES
from tests.conftest import with_settings
from tests.scheduling import admits
from tests.stacks import system_nodes
from tools import render
from tools.offline import Deployment, run_program, stack_values

# EKS add-ons whose pods are not in the program's render: their requests and limits as the add-ons' default
# manifests set them (coredns: 100m / 70Mi, limit 170Mi; vpc-cni's aws-node: 25m for the CNI and 25m for the
# network policy agent; kube-proxy: 100m). The Pod Identity agent publishes none; 25m / 64Mi is counted for it.
COREDNS = {"replicas": 2, "requests": {"cpu": 100, "memory": 70}, "limits": {"memory": 170}}
ADDON_DAEMON_SETS = {"aws-node": {"cpu": 50, "memory": 0}, "kube-proxy": {"cpu": 100, "memory": 0},
                     "eks-pod-identity-agent": {"cpu": 25, "memory": 64}}


@dataclass(frozen=True)
class Workload:
    name: str
    replicas: int
    requests: dict[str, int]  # millicores, MiB
    limits: dict[str, int]


def _quantity(value: Any, resource: str) -> int:
    """A Kubernetes quantity in millicores (cpu) or MiB (memory)."""
    text = str(value)
    if resource == "cpu":
        return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1000**2 / 1024**2, "G": 1000**3 / 1024**2}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(int(text) / 1024**2)


def _pod_resources(spec: dict[str, Any], field: str) -> dict[str, int]:
    """A pod's effective requests or limits: the larger of its containers' sum and its largest init container."""
    def total(containers: list[dict[str, Any]]) -> dict[str, int]:
        sums = {"cpu": 0, "memory": 0}
        for container in containers:
            for resource in sums:
                value = (container.get("resources") or {}).get(field, {}).get(resource)
                sums[resource] += _quantity(value, resource) if value is not None else 0
        return sums
    main = total(spec["containers"])
    init = [total([c]) for c in spec.get("initContainers") or []]
    return {r: max([main[r], *(i[r] for i in init)]) for r in main}


def _pod_templates(deployment: Deployment) -> Iterator[tuple[str, str, int, dict[str, Any]]]:
    """(kind, name, replicas, pod spec) of every workload the program applies or its charts render."""
    manifests = [r.manifest() for r in deployment.kubernetes_objects()]
    manifests += [m for release in render.render_releases(deployment) for m in release.manifests()]
    for manifest in manifests:
        kind = manifest["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            replicas = manifest["spec"].get("replicas", 1) if kind != "DaemonSet" else 1
            yield kind, f"{kind}/{manifest['metadata']['name']}", replicas, manifest["spec"]["template"]["spec"]


def system_workloads(deployment: Deployment) -> tuple[list[Workload], list[Workload], list[str]]:
    """(pods on the system nodes, DaemonSets on every system node, workloads lacking requests or limits)."""
    (node,) = system_nodes(deployment)
    workloads, daemon_sets, incomplete = [], [], []
    for kind, name, replicas, spec in _pod_templates(deployment):
        if not admits(spec, node):
            continue
        requests, limits = _pod_resources(spec, "requests"), _pod_resources(spec, "limits")
        if not (requests["cpu"] and requests["memory"] and limits["memory"]):
            incomplete.append(name)
        (daemon_sets if kind == "DaemonSet" else workloads).append(Workload(name, replicas, requests, limits))
    workloads.append(Workload("coredns", COREDNS["replicas"], COREDNS["requests"], COREDNS["limits"]))
    daemon_sets += [Workload(name, 1, requests, requests) for name, requests in ADDON_DAEMON_SETS.items()]
    return workloads, daemon_sets, incomplete


def budget(deployment: Deployment) -> dict[str, tuple[int, int]]:
    """resource -> (what the system workloads need, what the nodes left after losing one offer)."""
    group = deployment.one("aws:eks/nodeGroup:NodeGroup").inputs
    node_type = SYSTEM_INSTANCE_TYPES[group["instanceTypes"][0]]
    nodes_left = group["scalingConfig"]["desiredSize"] - 1
    workloads, daemon_sets, _ = system_workloads(deployment)
    per_node = {"cpu": node_type.allocatable_cpu_millis, "memory": node_type.allocatable_memory_mib}
    needed = {
        "cpu requests": sum(w.replicas * w.requests["cpu"] for w in workloads),
        "memory requests": sum(w.replicas * w.requests["memory"] for w in workloads),
        "memory limits": sum(w.replicas * w.limits["memory"] for w in workloads),
    }
    daemon = {"cpu": sum(d.requests["cpu"] for d in daemon_sets),
              "memory": sum(max(d.requests["memory"], d.limits["memory"]) for d in daemon_sets)}
    return {what: (amount, nodes_left * (per_node[what.split()[0]] - daemon[what.split()[0]]))
            for what, amount in needed.items()}


def _busiest(models_autoscale: bool = True, **settings: Any) -> Deployment:
    """Everything on: observability, KEDA (an autoscaled model), two models syncing at once."""
    return run_program(with_settings(
        stack_values("dev"),
        neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 4},
        vllm={"models": [{"name": "mistral", "maxReplicas": 2 if models_autoscale else 1},
                         {"name": "other", "huggingFaceRepo": "aws-neuron/other-model"}]},
        **settings))


@pytest.fixture(scope="module")
def busiest():
    return _busiest()


def test_every_system_workload_has_requests_and_a_memory_limit(busiest):
    workloads, daemon_sets, incomplete = system_workloads(busiest)
    names = {w.name for w in workloads}
    # What the system nodes carry when everything is on: none may escape the budget.
    assert {"Deployment/karpenter", "Deployment/keda-operator", "Deployment/keda-operator-metrics-apiserver",
            "Deployment/keda-admission-webhooks", "Deployment/kube-state-metrics", "Deployment/grafana",
            "coredns"} <= names
    assert len([n for n in names if n.startswith("Job/")]) == 2  # a sync Job per model
    assert incomplete == []
    # Neuron-only pods never count against the system nodes.
    assert not [n for n in names | {d.name for d in daemon_sets}
                if n in ("Deployment/mistral", "DaemonSet/vllm-image-prepull", "DaemonSet/neuron-monitor")]


def test_the_system_nodes_hold_everything_with_one_node_lost(busiest):
    for what, (needed, offered) in budget(busiest).items():
        assert needed <= offered, f"{what}: {needed} needed, {offered} left with one node lost"


def test_two_nodes_would_not_be_enough(busiest):
    """The check has teeth: the default count is the smallest that passes."""
    two = _busiest(**{"systemNodes": {"instanceType": "m6i.large", "count": 2}})
    assert any(needed > offered for needed, offered in budget(two).values())
    assert stack_values("dev")[f"{PROJECT}:systemNodes"]["count"] == 3


def test_larger_system_nodes_count_their_own_allocatable(busiest):
    larger = _busiest(**{"systemNodes": {"instanceType": "m6i.xlarge", "count": 2}})
    assert all(needed <= offered for needed, offered in budget(larger).values())
    cpu_left = budget(larger)["cpu requests"][1]
    assert cpu_left > budget(busiest)["cpu requests"][1] / 2 * 1.9  # one xlarge left ~ two large


def test_the_daemon_sets_of_a_neuron_node_fit_the_headroom_the_model_pod_leaves(busiest):
    """The model pod is sized to fill its node less neuron.DAEMONSET_* (components/neuron.py): everything that
    runs on every Neuron node (the image pre-pull, neuron-monitor, the device plugin, the EKS add-ons) must
    fit in it, or the model pod would not fit the node Karpenter launched for it."""
    from components import neuron
    from tests.stacks import karpenter_nodes
    for node in karpenter_nodes(busiest):
        daemon_sets = [(name, _pod_resources(spec, "requests")) for kind, name, _, spec in _pod_templates(busiest)
                       if kind == "DaemonSet" and admits(spec, node)]
        names = {name for name, _ in daemon_sets}
        assert {"DaemonSet/vllm-image-prepull", "DaemonSet/neuron-monitor", "DaemonSet/neuron-device-plugin"} <= names
        cpu = sum(r["cpu"] for _, r in daemon_sets) + sum(d["cpu"] for d in ADDON_DAEMON_SETS.values())
        memory = sum(r["memory"] for _, r in daemon_sets) + sum(d["memory"] for d in ADDON_DAEMON_SETS.values())
        assert cpu <= neuron.DAEMONSET_CPU_MILLIS, (node.name, cpu)
        assert memory <= neuron.DAEMONSET_MEMORY_MIB, (node.name, memory)
