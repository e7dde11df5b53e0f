"""Which capacity Karpenter launches for the model pod: the rendered NodePools and Deployment, fed to an
independent model of Karpenter 1.14.1's choice (tests/karpenter_model.py, which cites the upstream code).

The "Trainium first" issue: the default stack runs on trn1.2xlarge, falls back to inf2.xlarge only when
Trainium has no capacity or no quota, never puts a NeuronCore-v2 model on trn2, and with Inferentia2 alone
serves from a pool still named `neuron`. The workshop's single mixed pool is the control: it picks inf2.

Each configured scenario runs the real program once per module (the `deploy` fixture's runner, kept for the
module so the file stays fast); the default stack is the shared `dev_deployment`.
"""

from __future__ import annotations

import copy

import pytest

from tests.conftest import with_settings
from tests.karpenter_model import (MIB, NEURON_INSTANCE_TYPES, ON_DEMAND, STATIC_ON_DEMAND_PRICES, Choice, World,
                                   choose, instance_type, static_on_demand_prices)
from tests.schemas import custom_resource_problems
from tools.offline import Deployment, run_program, stack_values

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
MODEL = "mistral"  # the dev stack's model Deployment
TRAINIUM = [n for n in NEURON_INSTANCE_TYPES if n.startswith("trn")]


def node_pools(deployment: Deployment) -> list[dict]:
    return [r.manifest() for r in deployment.of_type(NODE_POOL)]


def model_deployment(deployment: Deployment, name: str = MODEL) -> dict:
    (manifest,) = [r.manifest() for r in deployment.of_type(DEPLOYMENT) if r.manifest()["metadata"]["name"] == name]
    return manifest


def pool_named(deployment: Deployment, name: str) -> dict:
    (pool,) = [p for p in node_pools(deployment) if p["metadata"]["name"] == name]
    return pool


def instance_types_of(pool: dict) -> list[str]:
    (requirement,) = [r for r in pool["spec"]["template"]["spec"]["requirements"]
                      if r["key"] == "node.kubernetes.io/instance-type"]
    return requirement["values"]


def daemonsets(deployment: Deployment) -> list[dict]:
    return [r.manifest() for r in deployment.of_type(DAEMONSET)]


def karpenter_choice(deployment: Deployment, world: World = World(), pod: dict | None = None):
    """The model's answer for the model Deployment's pod (or `pod`), with the rendered pools and DaemonSets."""
    return choose(node_pools(deployment), pod or model_deployment(deployment), world, daemonsets(deployment))


def ice(*instance_types: str, code: str = "InsufficientInstanceCapacity") -> World:
    """The world after CreateFleet answered `code` for these types' on-demand offerings."""
    return World().after_fleet_errors((t, ON_DEMAND, code) for t in instance_types)


def _sixteen_device_model(dev: dict) -> dict:
    vllm = copy.deepcopy(dev["trainium-vllm:vllm"])
    vllm["models"][0]["neuronDevices"] = 16
    return vllm


# Scenario -> the settings it changes, given the dev stack's.
SCENARIOS = {
    "trn2 with a v2 model": lambda dev: {"neuron": {"instanceTypes": ["trn2.3xlarge", "trn1.2xlarge", "inf2.xlarge"]}},
    "inf2 only": lambda dev: {"neuron": {"instanceTypes": ["inf2.xlarge"]}},
    "16 devices": lambda dev: {"neuron": {"instanceTypes": ["trn1.32xlarge", "inf2.48xlarge"], "maxNeuronDevices": 16},
                               "vllm": _sixteen_device_model(dev)},
}


@pytest.fixture(scope="module")
def rendered(dev_deployment):
    """Scenario name -> the program's run with those settings (what `deploy(**settings)` runs)."""
    runs = {"default": dev_deployment}

    def run(name: str) -> Deployment:
        if name not in runs:
            dev = stack_values("dev")
            runs[name] = run_program(with_settings(dev, **SCENARIOS[name](dev)))
        return runs[name]

    return run


# --- The issue's scenarios ---------------------------------------------------------------------------------------


def test_default_stack_launches_trn1_2xlarge_from_the_neuron_pool(dev_deployment):
    decision = karpenter_choice(dev_deployment)
    assert decision.choice == Choice("neuron", "trn1.2xlarge", ON_DEMAND), decision.reason
    assert decision.price == STATIC_ON_DEMAND_PRICES["us-east-1"]["trn1.2xlarge"] == 1.34375
    # Not because it is cheaper: inf2.xlarge is, and is available; the weight puts `neuron` first.
    assert static_on_demand_prices("us-west-2")["inf2.xlarge"] < decision.price


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "UnfulfillableCapacity"])
def test_no_trainium_capacity_falls_back_to_inf2_xlarge(dev_deployment, code):
    decision = karpenter_choice(dev_deployment, ice("trn1.2xlarge", code=code))
    assert decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND), decision.reason


def test_a_trn_vcpu_quota_of_zero_falls_back_to_inf2_xlarge(dev_deployment):
    # "Running On-Demand Trn instances" = 0: every trn offering fails with VcpuLimitExceeded, in every zone.
    decision = karpenter_choice(dev_deployment, ice(*TRAINIUM, code="VcpuLimitExceeded"))
    assert decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND), decision.reason


def test_a_launch_error_that_is_not_about_capacity_does_not_fall_back(dev_deployment):
    # pkg/errors: only the unfulfillable-capacity codes mark an offering; Karpenter retries the same choice.
    decision = karpenter_choice(dev_deployment, ice("trn1.2xlarge", code="UnauthorizedOperation"))
    assert decision.choice == Choice("neuron", "trn1.2xlarge", ON_DEMAND), decision.reason


def test_trn2_configured_with_the_default_model_never_gets_trn2(rendered):
    deployment = rendered("trn2 with a v2 model")
    assert "trn2.3xlarge" in instance_types_of(pool_named(deployment, "neuron"))  # the pool would launch it...
    # ...and the static table has no trn2 price, which alone would keep trn2 out. Make trn2 priced, the
    # cheapest of all and available, so only the pod's NeuronCore-v2 placement can keep it off trn2.
    assert "trn2.3xlarge" not in static_on_demand_prices("us-west-2")
    trn2_cheapest = {**static_on_demand_prices("us-west-2"), "trn2.3xlarge": 0.01}
    world = World(prices=trn2_cheapest)
    assert karpenter_choice(deployment, world).choice == Choice("neuron", "trn1.2xlarge", ON_DEMAND)

    without_trn1 = world.after_fleet_errors([("trn1.2xlarge", ON_DEMAND, "InsufficientInstanceCapacity")])
    decision = karpenter_choice(deployment, without_trn1)
    assert decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND), decision.reason

    # Control: the same pod without its instance-family affinity would get trn2, the cheapest in `neuron`.
    pod = copy.deepcopy(model_deployment(deployment))
    del pod["spec"]["template"]["spec"]["affinity"]
    assert karpenter_choice(deployment, world, pod).choice == Choice("neuron", "trn2.3xlarge", ON_DEMAND)


def test_inferentia2_only_is_served_from_a_pool_named_neuron(rendered):
    decision = karpenter_choice(rendered("inf2 only"))
    assert decision.choice == Choice("neuron", "inf2.xlarge", ON_DEMAND), decision.reason


def test_control_the_workshops_single_mixed_pool_chooses_inf2(dev_deployment):
    """The defect the issue fixes: one pool with both types launches the cheaper one, Inferentia2."""
    workshop_pool = {  # FACTS section 4, "Workshop pool"
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "neuron"},
        "spec": {
            "template": {
                "metadata": {"labels": {"neuron.amazonaws.com/neuron-device": "true"}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "neuron"},
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In",
                         "values": ["trn1.2xlarge", "inf2.xlarge"]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                    "taints": [{"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}],
                    "expireAfter": "720h",
                },
            },
            "limits": {"aws.amazon.com/neuron": "2", "cpu": "16", "memory": "64Gi"},
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "300s"},
        },
    }
    assert custom_resource_problems(workshop_pool) == []
    decision = choose([workshop_pool], model_deployment(dev_deployment), World(), daemonsets(dev_deployment))
    assert decision.choice == Choice("neuron", "inf2.xlarge", ON_DEMAND), decision.reason


def test_limits_reached_on_neuron_fall_back_and_on_both_pools_launch_nothing(dev_deployment):
    # Two trn1.2xlarge already in `neuron` use its 2 devices (and 16 CPUs): another would exceed its limits.
    full = World(pool_nodes={"neuron": ["trn1.2xlarge", "trn1.2xlarge"]})
    decision = karpenter_choice(dev_deployment, full)
    assert decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND), decision.reason

    both_full = World(pool_nodes={"neuron": ["trn1.2xlarge"] * 2, "neuron-inf2": ["inf2.xlarge"] * 2})
    decision = karpenter_choice(dev_deployment, both_full)
    assert decision.choice is None
    assert "neuron: all instance types exceed the pool's remaining limits" in decision.reason
    assert "neuron-inf2: all instance types exceed the pool's remaining limits" in decision.reason


def test_a_sixteen_device_pod_gets_trn1_32xlarge(rendered):
    deployment = rendered("16 devices")
    requests = model_deployment(deployment)["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["aws.amazon.com/neuron"] == "16"
    decision = karpenter_choice(deployment)
    assert decision.choice == Choice("neuron", "trn1.32xlarge", ON_DEMAND), decision.reason
    # inf2.48xlarge has 12 devices: no fallback for this pod.
    decision = karpenter_choice(deployment, ice("trn1.32xlarge"))
    assert decision.choice is None
    assert "inf2.48xlarge (too small)" in decision.reason


def test_nothing_available_means_no_launch_and_says_why(dev_deployment):
    everything_out = ice(*NEURON_INSTANCE_TYPES)
    decision = karpenter_choice(dev_deployment, everything_out)
    assert decision.choice is None and not decision
    assert "trn1.2xlarge (no available offering: on-demand marked unavailable)" in decision.reason
    assert "inf2.xlarge (no available offering: on-demand marked unavailable)" in decision.reason


@pytest.mark.parametrize("scenario", ["default", *SCENARIOS])
def test_every_node_pool_and_node_class_validates_against_the_crds(rendered, scenario):
    deployment = rendered(scenario)
    objects = [r.manifest() for r in deployment.of_type(NODE_POOL) + deployment.of_type(NODE_CLASS)]
    assert len(deployment.of_type(NODE_CLASS)) == 1 and deployment.of_type(NODE_POOL)
    for manifest in objects:
        assert custom_resource_problems(manifest) == [], manifest["metadata"]["name"]


# --- Karpenter behaviour the choice depends on --------------------------------------------------------------------


def test_the_models_allocatable_is_what_a_real_node_reported():
    # FACTS section 3: an inf2.xlarge in the workshop reported cpu 3920m, memory 14162Mi allocatable.
    inf2 = instance_type("inf2.xlarge", "us-west-2")
    assert inf2.allocatable["cpu"] * 1000 == 3920
    assert inf2.allocatable["memory"] == 14162 * MIB
    # ENILimitedPods counts the default network card only: 5 interfaces on trn1.32xlarge, not its 40.
    assert instance_type("trn1.32xlarge", "us-west-2").capacity["pods"] == 5 * (50 - 1) + 2


def test_equal_weights_go_by_name_descending_so_neuron_inf2_would_come_first(dev_deployment):
    # pkg/utils/nodepool OrderByWeight: ties put the name later in the alphabet first. Were both pools given
    # the same weight, Inferentia2 would win: the weights must differ.
    pools = copy.deepcopy(node_pools(dev_deployment))
    for pool in pools:
        pool["spec"]["weight"] = 50
    decision = choose(pools, model_deployment(dev_deployment), World(), daemonsets(dev_deployment))
    assert decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND), decision.reason


def test_a_pod_without_the_neuron_toleration_gets_no_node(dev_deployment):
    pod = copy.deepcopy(model_deployment(dev_deployment))
    pod["spec"]["template"]["spec"]["tolerations"] = []
    decision = karpenter_choice(dev_deployment, pod=pod)
    assert decision.choice is None
    assert "does not tolerate taint aws.amazon.com/neuron=true:NoSchedule" in decision.reason


@pytest.mark.parametrize(("others", "fits"), [({"cpu": "500m", "memory": "1Gi"}, True),
                                              ({"cpu": "1", "memory": "1Gi"}, False)])
def test_the_pod_fits_the_fallback_next_to_the_node_daemonsets(dev_deployment, others, fits):
    # The pod is sized to the smallest host (inf2.xlarge: 3920m, 14162Mi allocatable) less room for the
    # node's DaemonSets. Karpenter adds their requests to the pod's: the rendered ones (image pre-pull) as
    # the model matches them, plus `others` for those installed by charts and add-ons (aws-node,
    # kube-proxy, the Neuron device plugin, the Pod Identity agent): 500m and 1Gi of those still fit.
    world = World(daemonset_overhead=others).after_fleet_errors([("trn1.2xlarge", ON_DEMAND, "VcpuLimitExceeded")])
    decision = karpenter_choice(dev_deployment, world)
    assert (decision.choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND)) is fits, decision.reason
    if not fits:
        assert "inf2.xlarge (too small)" in decision.reason


def test_a_pool_that_does_not_set_the_label_the_pod_selects_gets_no_pod(dev_deployment):
    # requirements.go Compatible: a custom label the pod selects must be one the pool defines.
    pools = copy.deepcopy(node_pools(dev_deployment))
    for pool in pools:
        pool["spec"]["template"]["metadata"]["labels"] = {}
    decision = choose(pools, model_deployment(dev_deployment), World(), daemonsets(dev_deployment))
    assert decision.choice is None
    assert "label 'neuron.amazonaws.com/neuron-device' is not defined by the pool" in decision.reason


def test_only_daemonsets_that_would_run_on_the_node_count(dev_deployment):
    def daemonset(name: str, cpu: str, tolerations: list) -> dict:
        return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
                "spec": {"template": {"spec": {"tolerations": tolerations, "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}}}

    neuron_toleration = [{"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}]
    on_neuron = daemonset("big", "1", neuron_toleration)  # with the pod's 3 CPUs, more than inf2.xlarge's 3920m
    elsewhere = daemonset("big-elsewhere", "1", [])  # does not tolerate the Neuron taint
    world = ice("trn1.2xlarge")
    pools, pod = node_pools(dev_deployment), model_deployment(dev_deployment)
    assert choose(pools, pod, world, [elsewhere]).choice == Choice("neuron-inf2", "inf2.xlarge", ON_DEMAND)
    assert choose(pools, pod, world, [on_neuron]).choice is None
