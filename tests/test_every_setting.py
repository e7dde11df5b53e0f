"""A stack where every setting differs from its default: each one reaches what it configures.

A setting the program ignored would pass every test run on the defaults; here each setting has its own check,
and the last test fails if a setting is added without one.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from components import config as stack_config
from components.config import PROJECT
from tools.offline import Deployment, run_program

REVISION = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1-neuronx-py311-sdk2.26.1-ubuntu22.04"
SETTINGS: dict[str, Any] = {
    "clusterName": "llm-prod",
    "kubernetesVersion": "1.33",
    "vpcCidr": "10.40.0.0/18",
    "clusterAdminArns": ["arn:aws:iam::123456789012:role/platform"],
    "apiPublicAccessCidrs": ["203.0.113.0/24"],
    "addonVersions": {"vpc-cni": "v1.20.4-eksbuild.2", "kube-proxy": "v1.33.3-eksbuild.6",
                      "coredns": "v1.12.2-eksbuild.4", "eks-pod-identity-agent": "v1.3.9-eksbuild.3"},
    "systemNodes": {"instanceType": "m7i.xlarge", "count": 4},
    "neuron": {"instanceTypes": ["trn1.32xlarge", "inf2.48xlarge"], "capacityTypes": ["reserved", "spot"],
               "maxNeuronDevices": 48, "capacityReservationIds": ["cr-0123456789abcdef0"]},
    "vllm": {
        "namespace": "llm", "image": IMAGE, "clientNamespaces": ["web"], "rolloutTimeoutMinutes": 20,
        "requireApiKey": False,
        "models": [{"name": "llama", "huggingFaceRepo": "aws-neuron/Llama-3.1-70B-Instruct-seqlen-8192-bs-4-cores-32",
                    "revision": REVISION, "servedModelAliases": ["llama-70b"], "tensorParallelSize": 32,
                    "neuronDevices": 16, "neuronCoreVersion": 2, "maxModelLen": 8192, "maxNumSeqs": 4,
                    "replicas": 2, "maxReplicas": 3, "targetRequestsPerReplica": 3}],
    },
    # `enabled: false` is tested on its own (test_observability.py): autoscaling needs it on.
    "observability": {"enabled": True, "ttftTargetSeconds": 0.5, "alertEmails": ["oncall@example.com"]},
}


@pytest.fixture(scope="module")
def stack() -> Deployment:
    return run_program({"aws:region": "us-east-1", **{f"{PROJECT}:{k}": v for k, v in SETTINGS.items()}},
                       stack="prod")


def _manifest(stack: Deployment, kind: str, name: str) -> dict:
    (found,) = [r.manifest() for r in stack.of_type(kind) if r.manifest()["metadata"]["name"] == name]
    return found


def _pod(stack: Deployment) -> dict:
    return _manifest(stack, "kubernetes:apps/v1:Deployment", "llama")["spec"]["template"]


def _vllm(stack: Deployment) -> dict:
    return next(c for c in _pod(stack)["spec"]["containers"] if c["name"] == "vllm")


def _flag(stack: Deployment, flag: str) -> str:
    command = _vllm(stack)["command"]
    return command[command.index(flag) + 1]


def _pool_requirement(stack: Deployment, pool: str, key: str) -> list[str]:
    spec = _manifest(stack, "kubernetes:karpenter.sh/v1:NodePool", pool)["spec"]
    return next(r["values"] for r in spec["template"]["spec"]["requirements"] if r["key"] == key)


def _scaled(stack: Deployment) -> dict:
    return _manifest(stack, "kubernetes:keda.sh/v1alpha1:ScaledObject", "llama")["spec"]


CHECKS: dict[str, Callable[[Deployment], bool]] = {
    "clusterName": lambda s: s.one("eks:index:Cluster").inputs["name"] == "llm-prod"
    and s.one("aws:sqs/queue:Queue").inputs["name"] == "llm-prod-karpenter",
    "kubernetesVersion": lambda s: s.one("eks:index:Cluster").inputs["version"] == "1.33"
    and _manifest(s, "kubernetes:core/v1:Namespace", "llm")["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce-version"] == "v1.33",
    "vpcCidr": lambda s: s.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"] == "10.40.0.0/18",
    "clusterAdminArns": lambda s: [e.inputs["principalArn"] for e in s.of_type("aws:eks/accessEntry:AccessEntry")
                                   if e.inputs["type"] == "STANDARD"] == SETTINGS["clusterAdminArns"],
    "apiPublicAccessCidrs": lambda s: s.one("eks:index:Cluster").inputs["publicAccessCidrs"] == ["203.0.113.0/24"],
    "addonVersions.vpc-cni": lambda s: s.one("eks:index:Cluster").inputs["vpcCniOptions"]["addonVersion"]
    == "v1.20.4-eksbuild.2",
    "addonVersions.kube-proxy": lambda s: s.one("eks:index:Cluster").inputs["kubeProxyAddonOptions"]["version"]
    == "v1.33.3-eksbuild.6",
    "addonVersions.coredns": lambda s: s.one("aws:eks/addon:Addon", "llm-prod-coredns").inputs["addonVersion"]
    == "v1.12.2-eksbuild.4",
    "addonVersions.eks-pod-identity-agent": lambda s: s.one(
        "aws:eks/addon:Addon", "llm-prod-pod-identity-agent").inputs["addonVersion"] == "v1.3.9-eksbuild.3",
    "systemNodes.instanceType": lambda s: s.one("aws:eks/nodeGroup:NodeGroup").inputs["instanceTypes"] == ["m7i.xlarge"],
    "systemNodes.count": lambda s: s.one("aws:eks/nodeGroup:NodeGroup").inputs["scalingConfig"]["desiredSize"] == 4,
    "neuron.instanceTypes": lambda s: _pool_requirement(s, "neuron", "node.kubernetes.io/instance-type")
    == ["trn1.32xlarge"] and _pool_requirement(s, "neuron-inf2", "node.kubernetes.io/instance-type")
    == ["inf2.48xlarge"],
    "neuron.capacityTypes": lambda s: _pool_requirement(s, "neuron", "karpenter.sh/capacity-type")
    == ["reserved", "spot"],
    "neuron.maxNeuronDevices": lambda s: _manifest(s, "kubernetes:karpenter.sh/v1:NodePool", "neuron")["spec"][
        "limits"]["aws.amazon.com/neuron"] == "48"
    and _manifest(s, "kubernetes:core/v1:ResourceQuota", "neuron-devices")["spec"]["hard"] == {
        "requests.aws.amazon.com/neuron": "48"},
    "neuron.capacityReservationIds": lambda s: _manifest(s, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "neuron")[
        "spec"]["capacityReservationSelectorTerms"] == [{"id": "cr-0123456789abcdef0"}],
    "vllm.namespace": lambda s: _manifest(s, "kubernetes:apps/v1:Deployment", "llama")["metadata"]["namespace"]
    == "llm" and s.exports["models"]["llama"]["url"] == "http://llama.llm:8080",
    "vllm.image": lambda s: _vllm(s)["image"] == IMAGE
    and _manifest(s, "kubernetes:apps/v1:DaemonSet", "vllm-image-prepull")["spec"]["template"]["spec"][
        "containers"][0]["image"] == IMAGE,
    "vllm.clientNamespaces": lambda s: _manifest(s, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "llama")[
        "spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["web"],
    "vllm.rolloutTimeoutMinutes": lambda s: s.one("kubernetes:apps/v1:Deployment").custom_timeouts
    == {"create": "20m", "update": "20m"},
    "vllm.requireApiKey": lambda s: "--middleware" not in _vllm(s)["command"] and "apiKey" not in s.exports,
    "vllm.models[].name": lambda s: _flag(s, "--served-model-name") == "llama",
    # The sync Job copies it; the pod checks the pin it reads is this repository's.
    "vllm.models[].huggingFaceRepo": lambda s: all(
        {"name": "MODEL_REPO", "value": SETTINGS["vllm"]["models"][0]["huggingFaceRepo"]} in container["env"]
        for container in (s.one("kubernetes:batch/v1:Job").manifest()["spec"]["template"]["spec"]["containers"][0],
                          _pod(s)["spec"]["initContainers"][0])),
    "vllm.models[].revision": lambda s: {"name": "MODEL_REVISION", "value": REVISION}
    in _pod(s)["spec"]["initContainers"][0]["env"],
    "vllm.models[].servedModelAliases": lambda s: _vllm(s)["command"][
        _vllm(s)["command"].index("--served-model-name") + 2] == "llama-70b",
    "vllm.models[].tensorParallelSize": lambda s: _flag(s, "--tensor-parallel-size") == "32",
    "vllm.models[].neuronDevices": lambda s: _vllm(s)["resources"]["limits"]["aws.amazon.com/neuron"] == "16",
    "vllm.models[].neuronCoreVersion": lambda s: _pod(s)["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    == ["inf2", "trn1"],
    "vllm.models[].maxModelLen": lambda s: _flag(s, "--max-model-len") == "8192",
    "vllm.models[].maxNumSeqs": lambda s: _flag(s, "--max-num-seqs") == "4",
    "vllm.models[].replicas": lambda s: _scaled(s)["minReplicaCount"] == 2
    and _manifest(s, "kubernetes:apps/v1:Deployment", "llama")["spec"]["replicas"] == 2,
    "vllm.models[].maxReplicas": lambda s: _scaled(s)["maxReplicaCount"] == 3,
    "vllm.models[].targetRequestsPerReplica": lambda s: _scaled(s)["triggers"][0]["metadata"]["threshold"] == "3",
    "observability.enabled": lambda s: bool(s.of_type("aws:amp/scraper:Scraper")),
    "observability.ttftTargetSeconds": lambda s: "> 0.5" in s.one(
        "aws:amp/ruleGroupNamespace:RuleGroupNamespace").inputs["data"],
    "observability.alertEmails": lambda s: [t.inputs["endpoint"] for t in s.of_type(
        "aws:sns/topicSubscription:TopicSubscription")] == ["oncall@example.com"],
}


@pytest.mark.parametrize("setting", sorted(CHECKS))
def test_each_setting_reaches_what_it_configures(stack, setting):
    assert CHECKS[setting](stack), setting


def test_the_settings_really_differ_from_the_defaults():
    defaults = stack_config.parse({}, stack="prod")
    changed = stack_config.parse(SETTINGS, stack="prod", region="us-east-1")
    assert changed.cluster_name != defaults.cluster_name and changed.vpc_cidr != defaults.vpc_cidr
    (model,), (default_model,) = changed.vllm.models, defaults.vllm.models
    different = [f for f in model.__dataclass_fields__ if getattr(model, f) != getattr(default_model, f)]
    # Every model setting but neuronCoreVersion (the only other value, 3, needs trn2: tested on its own).
    assert set(model.__dataclass_fields__) - set(different) == {"neuron_core_version"}
    for section in ("neuron", "vllm", "system_nodes"):
        a, b = getattr(changed, section), getattr(defaults, section)
        assert all(getattr(a, f) != getattr(b, f) for f in a.__dataclass_fields__), section
    assert changed.observability.ttft_target_seconds != defaults.observability.ttft_target_seconds


def test_every_setting_has_a_check():
    """A new setting without a check here fails: add what it configures to CHECKS."""
    settings = set(stack_config._TOP_KEYS) - {"addonVersions", "systemNodes", "neuron", "vllm", "observability"}
    settings |= {f"addonVersions.{a}" for a in stack_config.ADDONS}
    settings |= {f"systemNodes.{k}" for k in stack_config._SYSTEM_NODES_KEYS}
    settings |= {f"neuron.{k}" for k in stack_config._NEURON_KEYS}
    settings |= {f"vllm.{k}" for k in stack_config._VLLM_KEYS if k != "models"}
    settings |= {f"vllm.models[].{k}" for k in stack_config._MODEL_KEYS}
    settings |= {f"observability.{k}" for k in stack_config._OBSERVABILITY_KEYS}
    assert settings == set(CHECKS)
    assert json.dumps(SETTINGS)  # plain data, as a stack file holds it
