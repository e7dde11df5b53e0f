"""The Neuron instance catalog against EC2's own data, and the sizing derived from it."""

from __future__ import annotations

import gzip
import json
from importlib import resources

import pytest

from components import neuron
from components.instances import SYSTEM_INSTANCE_TYPES

# Trainium2 exposes its 8 physical cores per device as 4 logical ones at the default LNC=2.
LOGICAL_CORE_SIZE = {"trn2": 2}


@pytest.fixture(scope="module")
def ec2_instance_types():
    """DescribeInstanceTypes data as moto ships it (recorded from EC2)."""
    data = resources.files("moto.ec2.resources").joinpath("instance_types.json.gz").read_bytes()
    return json.loads(gzip.decompress(data))


@pytest.mark.parametrize("name", sorted(neuron.NEURON_INSTANCE_TYPES))
def test_catalog_matches_ec2(ec2_instance_types, name):
    ours, theirs = neuron.NEURON_INSTANCE_TYPES[name], ec2_instance_types[name]
    (device,) = theirs["NeuronInfo"]["NeuronDevices"]
    assert ours.vcpus == theirs["VCpuInfo"]["DefaultVCpus"]
    assert ours.memory_mib == theirs["MemoryInfo"]["SizeInMiB"]
    assert ours.neuron_devices == device["Count"]
    assert ours.cores_per_device == device["CoreInfo"]["Count"] // LOGICAL_CORE_SIZE.get(ours.family, 1)
    network = theirs["NetworkInfo"]
    (default_card,) = [c for c in network["NetworkCards"] if c["NetworkCardIndex"] == network["DefaultNetworkCardIndex"]]
    assert ours.network_interfaces == default_card["MaximumNetworkInterfaces"]
    assert ours.ipv4_per_interface == theirs["NetworkInfo"]["Ipv4AddressesPerInterface"]
    assert ours.instance_store == ("InstanceStorageInfo" in theirs)


def test_catalog_covers_every_neuron_type_of_the_supported_families(ec2_instance_types):
    offered = {name for name, info in ec2_instance_types.items()
               if name.split(".")[0] in neuron.NEURON_FAMILIES and "NeuronInfo" in info}
    assert offered == set(neuron.NEURON_INSTANCE_TYPES)


def test_allocatable_matches_what_the_workshop_saw_on_an_inf2_xlarge():
    inf2 = neuron.NEURON_INSTANCE_TYPES["inf2.xlarge"]
    assert (inf2.max_pods, inf2.allocatable_cpu_millis, inf2.allocatable_memory_mib) == (58, 3920, 14162)


def test_pod_size_fits_the_smallest_host_that_can_take_it():
    assert neuron.pod_size(1, ["trn1.2xlarge", "inf2.xlarge"], 2) == neuron.PodSize(3000, 12 * 1024)
    assert neuron.pod_size(1, ["trn1.2xlarge"], 2) == neuron.PodSize(7000, 27 * 1024)
    # inf2.xlarge cannot host two devices, so it does not shrink the pod.
    assert neuron.pod_size(2, ["trn1.32xlarge", "inf2.xlarge"], 2) == neuron.pod_size(2, ["trn1.32xlarge"], 2)
    with pytest.raises(ValueError):
        neuron.pod_size(2, ["trn1.2xlarge", "inf2.xlarge"], 2)


def test_pod_size_counts_only_hosts_of_the_models_neuroncore_generation():
    # A trn2.3xlarge (12 vCPU, 128 GiB) never hosts a NeuronCore-v2 model, so it does not shrink or grow it.
    assert neuron.pod_size(1, ["trn2.3xlarge", "trn1.2xlarge"], 2) == neuron.pod_size(1, ["trn1.2xlarge"], 2)
    assert neuron.pod_size(1, ["trn2.3xlarge", "trn1.2xlarge"], 3) == neuron.pod_size(1, ["trn2.3xlarge"], 3)
    with pytest.raises(ValueError):
        neuron.pod_size(1, ["trn2.3xlarge"], 2)


def test_trainium_types_go_first_and_inferentia2_to_the_fallback_pool():
    assert neuron.node_pools(["inf2.xlarge", "trn1.2xlarge", "trn2.3xlarge"]) == (
        neuron.NodePoolPlan("neuron", 100, ("trn1.2xlarge", "trn2.3xlarge")),
        neuron.NodePoolPlan("neuron-inf2", 10, ("inf2.xlarge",)))
    assert neuron.node_pools(["inf2.xlarge"]) == (neuron.NodePoolPlan("neuron", 100, ("inf2.xlarge",)),)
    assert neuron.node_pools(["trn1.32xlarge"]) == (neuron.NodePoolPlan("neuron", 100, ("trn1.32xlarge",)),)


def test_families_of_a_generation():
    types = ["trn1.2xlarge", "trn1n.32xlarge", "trn2.3xlarge", "inf2.xlarge", "inf2.8xlarge"]
    assert neuron.families_for(2, types) == ["inf2", "trn1", "trn1n"]
    assert neuron.families_for(3, types) == ["trn2"]


def test_pool_limits_allow_max_devices_on_the_roomiest_type():
    assert neuron.pool_limits(2, ["trn1.2xlarge", "inf2.xlarge"]) == {
        "aws.amazon.com/neuron": "2", "cpu": "16", "memory": "64Gi"}
    assert neuron.pool_limits(1, ["inf2.xlarge"]) == {"aws.amazon.com/neuron": "1", "cpu": "4", "memory": "16Gi"}


@pytest.mark.parametrize("name", sorted(SYSTEM_INSTANCE_TYPES))
def test_system_node_catalog_matches_ec2(ec2_instance_types, name):
    ours, theirs = SYSTEM_INSTANCE_TYPES[name], ec2_instance_types[name]
    network = theirs["NetworkInfo"]
    assert (ours.vcpus, ours.memory_mib) == (theirs["VCpuInfo"]["DefaultVCpus"], theirs["MemoryInfo"]["SizeInMiB"])
    assert (ours.network_interfaces, ours.ipv4_per_interface) == (
        network["NetworkCards"][network["DefaultNetworkCardIndex"]]["MaximumNetworkInterfaces"],
        network["Ipv4AddressesPerInterface"])


def test_multi_card_types_count_pods_on_the_default_card_only():
    # Karpenter's ENILimitedPods: 5 interfaces x 49 addresses + 2 on a trn1.32xlarge, not 40 interfaces.
    assert neuron.NEURON_INSTANCE_TYPES["trn1.32xlarge"].max_pods == 247
