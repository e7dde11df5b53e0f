"""The stacks the chart and CEL tests run: `dev` (Pulumi.dev.yaml) and a non-default one, each run under the
mocks once per test session, and the nodes those stacks make, for scheduling checks.

The non-default stack changes what the charts and Karpenter objects depend on: another region (where
trn2 is offered), another Kubernetes version, large instance types of three families, spot and a capacity
reservation as well as on-demand, a larger device limit, and an autoscaled model (so KEDA is installed).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from components.config import PROJECT
from tests.scheduling import NODE_GROUP_EFFECTS, Node
from tools import render
from tools.offline import Deployment, run_program, stack_values

STACKS = ("dev", "perf")
NON_DEFAULT_SETTINGS: dict[str, Any] = {
    "aws:region": "us-east-2",
    f"{PROJECT}:clusterName": "trainium-vllm-perf",
    f"{PROJECT}:kubernetesVersion": "1.33",
    f"{PROJECT}:neuron": {
        "instanceTypes": ["trn1.32xlarge", "trn2.48xlarge", "inf2.48xlarge"],
        "capacityTypes": ["on-demand", "spot", "reserved"],
        "capacityReservationIds": ["cr-0123456789abcdef0"],
        "maxNeuronDevices": 16,
    },
    # An autoscaled model: KEDA's chart renders too.
    f"{PROJECT}:vllm": {"models": [{"name": "mistral", "maxReplicas": 2}]},
}
INSTANCE_TYPE = "node.kubernetes.io/instance-type"


def config(stack: str) -> dict[str, Any]:
    values = copy.deepcopy(stack_values("dev"))
    if stack != "dev":
        values.update(copy.deepcopy(NON_DEFAULT_SETTINGS))
    return values


@cache
def deployment(stack: str) -> Deployment:
    return run_program(config(stack), stack=stack)


@cache
def releases(stack: str) -> tuple[render.RenderedRelease, ...]:
    return tuple(render.render_releases(deployment(stack)))


def region(stack: str) -> str:
    return config(stack)["aws:region"]


def kubernetes_version(stack: str) -> str:
    return render.kubernetes_version(deployment(stack))


def objects(deployment_: Deployment, kind: str) -> list[dict[str, Any]]:
    return [r.manifest() for r in deployment_.kubernetes_objects() if r.manifest()["kind"] == kind]


def release(stack: str, name: str) -> render.RenderedRelease:
    (found,) = [r for r in releases(stack) if r.spec.name == name]
    return found


def karpenter_nodes(deployment_: Deployment) -> list[Node]:
    """A node of each instance type each NodePool may launch, with the labels Karpenter sets on it and the
    pool's taints."""
    nodes = []
    for pool in objects(deployment_, "NodePool"):
        template = pool["spec"]["template"]
        requirements = {r["key"]: r for r in template["spec"].get("requirements", [])}
        single = {k: r["values"][0] for k, r in requirements.items() if r["operator"] == "In" and len(r["values"]) == 1}
        for instance_type in requirements[INSTANCE_TYPE]["values"]:
            labels = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", **single,
                      **(template.get("metadata") or {}).get("labels", {}),
                      INSTANCE_TYPE: instance_type, "karpenter.sh/nodepool": pool["metadata"]["name"],
                      "karpenter.k8s.aws/instance-family": instance_type.split(".")[0]}
            nodes.append(Node(f"{pool['metadata']['name']}-{instance_type}", labels,
                              tuple(template["spec"].get("taints", []))))
    return nodes


def system_nodes(deployment_: Deployment) -> list[Node]:
    """A node of each managed node group, with its labels and taints as EKS applies them."""
    nodes = []
    for group in deployment_.of_type("aws:eks/nodeGroup:NodeGroup"):
        inputs = group.inputs
        labels = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  INSTANCE_TYPE: inputs["instanceTypes"][0], "eks.amazonaws.com/nodegroup": group.name,
                  **(inputs.get("labels") or {})}
        taints = tuple({"key": t["key"], "value": t.get("value", ""), "effect": NODE_GROUP_EFFECTS[t["effect"]]}
                       for t in inputs.get("taints") or [])
        nodes.append(Node(group.name, labels, taints))
    return nodes
