"""Neuron capacity: the NodePool and EC2NodeClass as the CRDs accept them, the device plugin, and ordering."""

from __future__ import annotations

import re

import pytest
import yaml

from components import versions
from components.neuron_capacity import NODE_CONFIG
from tests.schemas import custom_resource_problems

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"


def _pools(deployment):
    return {r.manifest()["metadata"]["name"]: r.manifest() for r in deployment.of_type(NODE_POOL)}


@pytest.fixture(scope="module")
def pools(dev_deployment):
    return _pools(dev_deployment)


@pytest.fixture(scope="module")
def pool(pools):
    """The first-choice pool."""
    return pools["neuron"]


@pytest.fixture(scope="module")
def node_class(dev_deployment):
    return dev_deployment.one(NODE_CLASS).manifest()


def test_every_object_validates_against_the_karpenter_crds(pools, node_class):
    assert len(pools) == 2
    for pool in pools.values():
        assert custom_resource_problems(pool) == []
    assert custom_resource_problems(node_class) == []


def test_crd_validation_catches_a_misspelt_or_mistyped_field(node_class):
    broken = yaml.safe_load(yaml.safe_dump(node_class))
    broken["spec"]["blockDeviceMapping"] = broken["spec"].pop("blockDeviceMappings")
    broken["spec"]["metadataOptions"]["httpTokens"] = "mandatory"
    problems = custom_resource_problems(broken)
    assert any("blockDeviceMapping: unknown field" in p for p in problems)
    assert any("'mandatory' is not one of" in p for p in problems)


def _requirements(pool):
    return {r["key"]: (r["operator"], r["values"]) for r in pool["spec"]["template"]["spec"]["requirements"]}


def test_trainium_is_the_first_choice_and_inferentia2_the_fallback(pools):
    # Karpenter launches the cheapest type inside a pool (inf2.xlarge), so Trainium needs a pool of its own,
    # tried first because of its higher weight.
    common = {"karpenter.sh/capacity-type": ("In", ["on-demand"]), "kubernetes.io/arch": ("In", ["amd64"]),
              "kubernetes.io/os": ("In", ["linux"])}
    assert _requirements(pools["neuron"]) == {"node.kubernetes.io/instance-type": ("In", ["trn1.2xlarge"]), **common}
    assert _requirements(pools["neuron-inf2"]) == {"node.kubernetes.io/instance-type": ("In", ["inf2.xlarge"]),
                                                   **common}
    assert pools["neuron"]["spec"]["weight"] == 100 > pools["neuron-inf2"]["spec"]["weight"] > 0


def test_pool_follows_the_stack_settings(deploy):
    deployment = deploy(neuron={"instanceTypes": ["trn1.32xlarge", "trn1.2xlarge"], "capacityTypes": ["spot", "on-demand"],
                                "maxNeuronDevices": 16})
    (pool,) = _pools(deployment).values()
    assert pool["metadata"]["name"] == "neuron"
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["node.kubernetes.io/instance-type"] == ["trn1.32xlarge", "trn1.2xlarge"]
    assert requirements["karpenter.sh/capacity-type"] == ["spot", "on-demand"]
    # One trn1.32xlarge (16 devices, 128 vCPU, 512 GiB) or sixteen trn1.2xlarge (128 vCPU, 512 GiB).
    assert pool["spec"]["limits"] == {"aws.amazon.com/neuron": "16", "cpu": "128", "memory": "512Gi"}


def test_with_only_inferentia2_the_first_choice_pool_is_still_named_neuron(deploy):
    deployment = deploy(neuron={"instanceTypes": ["inf2.xlarge", "inf2.8xlarge"], "maxNeuronDevices": 2})
    (pool,) = _pools(deployment).values()
    assert pool["metadata"]["name"] == "neuron"
    assert _requirements(pool)["node.kubernetes.io/instance-type"] == ("In", ["inf2.xlarge", "inf2.8xlarge"])
    assert deployment.one(NODE_POOL).name == "neuron-node-pool"  # the resource existing stacks already have


def test_capacity_reservations_are_selected_by_id(deploy):
    ids = ["cr-0123456789abcdef0", "cr-0fedcba9876543210"]
    deployment = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 2,
                                "capacityTypes": ["reserved", "on-demand"], "capacityReservationIds": ids})
    node_class = deployment.one(NODE_CLASS).manifest()
    assert node_class["spec"]["capacityReservationSelectorTerms"] == [{"id": i} for i in ids]
    assert custom_resource_problems(node_class) == []
    for pool in _pools(deployment).values():
        assert _requirements(pool)["karpenter.sh/capacity-type"] == ("In", ["reserved", "on-demand"])


def test_no_reservations_means_no_selector(node_class):
    assert "capacityReservationSelectorTerms" not in node_class["spec"]


def test_neuron_nodes_are_tainted_and_labelled_in_every_pool(pools):
    for pool in pools.values():
        template = pool["spec"]["template"]
        assert template["spec"]["taints"] == [{"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"}]
        assert template["metadata"]["labels"] == {"neuron.amazonaws.com/neuron-device": "true"}


def test_every_pool_may_take_the_whole_device_ceiling(pools):
    # Two devices: two trn1.2xlarge (8 vCPU, 32 GiB each) at most, as the workshop's pool...
    assert pools["neuron"]["spec"]["limits"] == {"aws.amazon.com/neuron": "2", "cpu": "16", "memory": "64Gi"}
    # ... or two inf2.xlarge (4 vCPU, 16 GiB each) when Trainium has no capacity.
    assert pools["neuron-inf2"]["spec"]["limits"] == {"aws.amazon.com/neuron": "2", "cpu": "8", "memory": "32Gi"}


def test_the_model_namespace_quota_is_the_one_ceiling_across_pools(dev_deployment, deploy):
    (quota,) = [r.manifest() for r in dev_deployment.of_type("kubernetes:core/v1:ResourceQuota")]
    assert quota["metadata"]["namespace"] == "vllm"
    assert quota["spec"] == {"hard": {"requests.aws.amazon.com/neuron": "2"}}
    other = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 5})
    assert other.one("kubernetes:core/v1:ResourceQuota").manifest()["spec"]["hard"] == {
        "requests.aws.amazon.com/neuron": "5"}


def test_disruption_does_not_churn_nodes_while_a_model_loads(pools):
    for spec in (pool["spec"] for pool in pools.values()):
        assert spec["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
        minutes = int(re.fullmatch(r"(\d+)m", spec["disruption"]["consolidateAfter"]).group(1))
        assert minutes >= 5
        assert spec["disruption"]["budgets"] == [{"nodes": "1"}]
        assert spec["template"]["spec"]["expireAfter"] == "720h"
        assert spec["template"]["spec"]["terminationGracePeriod"] == "24h"


def test_every_pool_uses_the_node_class(pools, node_class):
    for pool in pools.values():
        ref = pool["spec"]["template"]["spec"]["nodeClassRef"]
        assert ref == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class["metadata"]["name"]}


def test_node_class_ami_is_a_pinned_al2023_release(node_class):
    (term,) = node_class["spec"]["amiSelectorTerms"]  # the CRD allows an alias only on its own
    assert term == {"alias": versions.NODE_AMI_ALIAS}
    assert re.fullmatch(r"al2023@v20\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])", term["alias"]), term["alias"]
    assert not term["alias"].endswith("@latest")


def test_node_class_uses_the_karpenter_node_role_and_discovery_tags(dev_deployment, node_class):
    spec = node_class["spec"]
    assert spec["role"] == dev_deployment.one("aws:iam/role:Role", "karpenter-node").outputs["name"]
    assert "instanceProfile" not in spec  # the CRD allows one or the other
    discovery = [{"tags": {"karpenter.sh/discovery": "trainium-vllm-dev"}}]
    assert spec["subnetSelectorTerms"] == discovery
    assert spec["securityGroupSelectorTerms"] == discovery
    # The same tag is on the private subnets and the cluster security group, nowhere else.
    tagged_subnets = [s for s in dev_deployment.of_type("aws:ec2/subnet:Subnet")
                      if s.inputs["tags"].get("karpenter.sh/discovery") == "trainium-vllm-dev"]
    assert tagged_subnets and all("-private-" in s.name for s in tagged_subnets)
    assert dev_deployment.one("aws:ec2/tag:Tag").inputs["key"] == "karpenter.sh/discovery"


def test_node_class_disk_is_encrypted_gp3_sized_for_the_image_and_model(node_class):
    spec = node_class["spec"]
    assert spec["instanceStorePolicy"] == "RAID0"
    (root,) = spec["blockDeviceMappings"]
    assert root["deviceName"] == "/dev/xvda" and root["rootVolume"] is True
    assert root["ebs"] == {"volumeSize": "256Gi", "volumeType": "gp3", "iops": 16000, "throughput": 1000,
                           "encrypted": True, "deleteOnTermination": True}


def test_node_class_requires_imdsv2_with_hop_limit_one(node_class):
    options = node_class["spec"]["metadataOptions"]
    assert options["httpTokens"] == "required"
    assert options["httpPutResponseHopLimit"] == 1


def test_node_class_turns_on_fast_image_pull(node_class):
    assert node_class["spec"]["userData"] == NODE_CONFIG
    node_config = yaml.safe_load(NODE_CONFIG)
    assert node_config["kind"] == "NodeConfig" and node_config["apiVersion"] == "node.eks.aws/v1alpha1"
    assert node_config["spec"]["featureGates"] == {"FastImagePull": True}


def test_node_class_tags_are_ones_karpenter_accepts(node_class):
    tags = node_class["spec"]["tags"]
    assert tags["karpenter.sh/discovery"] == "trainium-vllm-dev"
    # The CRD's rules refuse the tags Karpenter sets itself.
    reserved = ("eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.sh/nodeclaim", "karpenter.k8s.aws/ec2nodeclass")
    assert not [k for k in tags if k in reserved or k.startswith("kubernetes.io/cluster")]


def test_pool_and_node_class_depend_on_the_karpenter_release(dev_deployment):
    release = dev_deployment.one(RELEASE, "karpenter-controller")
    for resource in dev_deployment.of_type(NODE_POOL) + dev_deployment.of_type(NODE_CLASS):
        # Created after the CRDs; deleted while the controller runs, so finalizers end the instances.
        assert release.urn in resource.dependencies
        assert dev_deployment.depends_on(resource, dev_deployment.one(RELEASE, "karpenter-crds"))
        # Time for Karpenter to drain and terminate the nodes before Pulumi gives up on the delete.
        assert resource.custom_timeouts == {"delete": "20m"}


def test_device_plugin_release_is_pinned_and_tolerates_the_neuron_taint(dev_deployment, pool):
    plugin = dev_deployment.one(RELEASE, "neuron-device-plugin")
    assert plugin.inputs["chart"] == "oci://public.ecr.aws/neuron/neuron-helm-chart"
    assert plugin.inputs["version"] == versions.NEURON_CHART_VERSION == "1.5.0"
    assert plugin.inputs["namespace"] == "kube-system"
    values = plugin.inputs["values"]
    assert values["devicePlugin"]["enabled"] is True
    (taint,) = pool["spec"]["template"]["spec"]["taints"]
    (toleration,) = values["devicePlugin"]["tolerations"]
    assert (toleration["key"], toleration["operator"], toleration["effect"]) == (taint["key"], "Exists", taint["effect"])
    assert values["scheduler"] == {"enabled": False}
    assert values["npd"] == {"enabled": False}


def test_every_kubernetes_object_uses_the_cluster_provider(dev_deployment):
    provider = dev_deployment.one("pulumi:providers:kubernetes")
    kubernetes = [r for r in dev_deployment.resources if r.type.startswith("kubernetes:")]
    assert kubernetes
    for resource in kubernetes:
        assert resource.provider.startswith(provider.urn + "::"), resource.name
