"""Facts about Neuron instances and the names the Neuron device plugin and Karpenter agree on.

Defined once here and used by the config validation, the node pool, the device plugin values and the
model Deployments, so a taint, a label or a resource name cannot drift between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Extended resources the Neuron device plugin advertises on a node.
NEURON_DEVICE_RESOURCE = "aws.amazon.com/neuron"
NEURON_CORE_RESOURCE = "aws.amazon.com/neuroncore"

# Taint on every Neuron node (so only pods that tolerate it land there) and the label pods select on.
NEURON_TAINT_KEY = "aws.amazon.com/neuron"
NEURON_TAINT_VALUE = "true"
NEURON_NODE_LABEL_KEY = "neuron.amazonaws.com/neuron-device"
NEURON_NODE_LABEL_VALUE = "true"

NEURON_TOLERATION = {"key": NEURON_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
NEURON_NODE_SELECTOR = {NEURON_NODE_LABEL_KEY: NEURON_NODE_LABEL_VALUE}

# Headroom left on a Neuron node for its DaemonSets (aws-node, kube-proxy, the Neuron device plugin,
# the Pod Identity agent) when a model pod is sized to fill the node.
DAEMONSET_CPU_MILLIS = 500
DAEMONSET_MEMORY_MIB = 1024


@dataclass(frozen=True)
class NeuronInstanceType:
    """One EC2 instance type with Neuron devices, as DescribeInstanceTypes reports it."""

    name: str
    vcpus: int
    memory_mib: int
    neuron_devices: int
    # NeuronCores the Neuron runtime exposes per device. Trainium2 has 8 physical cores per device,
    # grouped in pairs by the default logical NeuronCore configuration (LNC=2), so 4 usable cores.
    cores_per_device: int
    network_interfaces: int
    ipv4_per_interface: int
    instance_store: bool

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def max_pods(self) -> int:
        # The VPC CNI's ENI-based limit, which Karpenter uses for kubelet's maxPods by default.
        return self.network_interfaces * (self.ipv4_per_interface - 1) + 2

    @property
    def allocatable_cpu_millis(self) -> int:
        """CPU left for pods after Karpenter's kube-reserved (6%, 1%, 0.5%, 0.5%, then 0.25% per core)."""
        reserved = 0.0
        for core in range(self.vcpus):
            reserved += 1000 * (0.06 if core == 0 else 0.01 if core == 1 else 0.005 if core < 4 else 0.0025)
        return self.vcpus * 1000 - math.ceil(reserved)

    @property
    def allocatable_memory_mib(self) -> int:
        """Memory left for pods: 7.5% VM overhead, kube-reserved (11 MiB per pod + 255 MiB), 100 MiB eviction."""
        capacity = self.memory_mib - math.ceil(self.memory_mib * 0.075)
        return capacity - (11 * self.max_pods + 255) - 100


_CATALOG = (
    NeuronInstanceType("inf2.xlarge", 4, 16384, 1, 2, 4, 15, False),
    NeuronInstanceType("inf2.8xlarge", 32, 131072, 1, 2, 8, 30, False),
    NeuronInstanceType("inf2.24xlarge", 96, 393216, 6, 2, 15, 50, False),
    NeuronInstanceType("inf2.48xlarge", 192, 786432, 12, 2, 15, 50, False),
    NeuronInstanceType("trn1.2xlarge", 8, 32768, 1, 2, 4, 15, True),
    NeuronInstanceType("trn1.32xlarge", 128, 524288, 16, 2, 40, 50, True),
    NeuronInstanceType("trn1n.32xlarge", 128, 524288, 16, 2, 80, 50, True),
    NeuronInstanceType("trn2.3xlarge", 12, 131072, 1, 4, 2, 15, True),
    NeuronInstanceType("trn2.48xlarge", 192, 2097152, 16, 4, 32, 50, True),
)

NEURON_INSTANCE_TYPES: dict[str, NeuronInstanceType] = {t.name: t for t in _CATALOG}
NEURON_FAMILIES = ("inf2", "trn1", "trn1n", "trn2")


@dataclass(frozen=True)
class PodSize:
    """CPU and memory a model pod requests so that it fits every instance type that can host it."""

    cpu_millis: int
    memory_mib: int

    @property
    def cpu(self) -> str:
        return f"{self.cpu_millis}m"

    @property
    def memory(self) -> str:
        return f"{self.memory_mib // 1024}Gi"


def hosts_for(neuron_devices: int, instance_types: list[str] | tuple[str, ...]) -> list[NeuronInstanceType]:
    """The configured instance types with enough Neuron devices for one model pod."""
    return [NEURON_INSTANCE_TYPES[n] for n in instance_types if NEURON_INSTANCE_TYPES[n].neuron_devices >= neuron_devices]


def pod_size(neuron_devices: int, instance_types: list[str] | tuple[str, ...]) -> PodSize:
    """Fill the smallest host that can take the pod, minus DaemonSet headroom.

    CPU is rounded down to half cores and memory to whole GiB. For trn1.2xlarge + inf2.xlarge this
    gives 3 CPUs and 12Gi, what the workshop measured on an inf2.xlarge (3920m, 14162Mi allocatable).
    """
    hosts = hosts_for(neuron_devices, instance_types)
    if not hosts:
        raise ValueError(f"no instance type among {list(instance_types)} has {neuron_devices} Neuron devices")
    cpu = min(h.allocatable_cpu_millis for h in hosts) - DAEMONSET_CPU_MILLIS
    memory = min(h.allocatable_memory_mib for h in hosts) - DAEMONSET_MEMORY_MIB
    return PodSize(cpu_millis=cpu // 500 * 500, memory_mib=memory // 1024 * 1024)


def pool_limits(max_neuron_devices: int, instance_types: list[str] | tuple[str, ...]) -> dict[str, str]:
    """NodePool limits: enough CPU and memory for `max_neuron_devices` devices on the roomiest type.

    For trn1.2xlarge + inf2.xlarge and 2 devices: neuron 2, cpu 16, memory 64Gi (the workshop's limits).
    """
    types = [NEURON_INSTANCE_TYPES[n] for n in instance_types]
    # Karpenter never launches an instance that would exceed a limit, so at most
    # max_neuron_devices // devices instances of each type; the config rejects types that exceed it alone.
    cpu = max(max_neuron_devices // t.neuron_devices * t.vcpus for t in types)
    memory_gib = max(max_neuron_devices // t.neuron_devices * t.memory_mib // 1024 for t in types)
    return {NEURON_DEVICE_RESOURCE: str(max_neuron_devices), "cpu": str(cpu), "memory": f"{memory_gib}Gi"}
