"""Facts about Neuron instances and the names the Neuron device plugin and Karpenter agree on.

Defined once here and used by the config validation, the node pool, the device plugin values and the
model Deployments, so a taint, a label or a resource name cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from components.instances import InstanceType

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

# Headroom left on a Neuron node for its DaemonSets (aws-node, kube-proxy, the Pod Identity agent, the Neuron
# device plugin, neuron-monitor, the vLLM image pre-pull) when a model pod is sized to fill the node; their
# requests are summed against it in tests/test_system_nodes.py.
DAEMONSET_CPU_MILLIS = 500
DAEMONSET_MEMORY_MIB = 1024


# NeuronCore generation of each family: compiled artifacts run only on the generation they were compiled
# for. trn1, trn1n and inf2 are NeuronCore-v2; trn2 is NeuronCore-v3 (FACTS section 2).
FAMILY_CORE_VERSION = {"inf2": 2, "trn1": 2, "trn1n": 2, "trn2": 3}
TRAINIUM_FAMILIES = ("trn1", "trn1n", "trn2")
NEURON_FAMILIES = tuple(sorted(FAMILY_CORE_VERSION))


@dataclass(frozen=True)
class NeuronInstanceType(InstanceType):
    """An instance type with Neuron devices."""

    neuron_devices: int
    # NeuronCores the Neuron runtime exposes per device. Trainium2 has 8 physical cores per device,
    # grouped in pairs by the default logical NeuronCore configuration (LNC=2), so 4 usable cores.
    cores_per_device: int
    instance_store: bool

    @property
    def core_version(self) -> int:
        return FAMILY_CORE_VERSION[self.family]

    @property
    def is_trainium(self) -> bool:
        return self.family in TRAINIUM_FAMILIES


def _neuron_type(name: str, vcpus: int, memory_mib: int, devices: int, cores_per_device: int, interfaces: int,
                 ipv4_per_interface: int, instance_store: bool) -> NeuronInstanceType:
    return NeuronInstanceType(name, vcpus, memory_mib, interfaces, ipv4_per_interface, devices, cores_per_device,
                              instance_store)


_CATALOG = (
    _neuron_type("inf2.xlarge", 4, 16384, 1, 2, 4, 15, False),
    _neuron_type("inf2.8xlarge", 32, 131072, 1, 2, 8, 30, False),
    _neuron_type("inf2.24xlarge", 96, 393216, 6, 2, 15, 50, False),
    _neuron_type("inf2.48xlarge", 192, 786432, 12, 2, 15, 50, False),
    _neuron_type("trn1.2xlarge", 8, 32768, 1, 2, 4, 15, True),
    _neuron_type("trn1.32xlarge", 128, 524288, 16, 2, 5, 50, True),
    _neuron_type("trn1n.32xlarge", 128, 524288, 16, 2, 5, 50, True),
    _neuron_type("trn2.3xlarge", 12, 131072, 1, 4, 2, 15, True),
    _neuron_type("trn2.48xlarge", 192, 2097152, 16, 4, 2, 50, True),
)

NEURON_INSTANCE_TYPES: dict[str, NeuronInstanceType] = {t.name: t for t in _CATALOG}


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


def hosts_for(neuron_devices: int, instance_types: Sequence[str], core_version: int) -> list[NeuronInstanceType]:
    """The configured instance types that can run one pod of a model: its NeuronCore generation, enough devices."""
    return [NEURON_INSTANCE_TYPES[n] for n in instance_types
            if NEURON_INSTANCE_TYPES[n].core_version == core_version
            and NEURON_INSTANCE_TYPES[n].neuron_devices >= neuron_devices]


def pod_size(neuron_devices: int, instance_types: Sequence[str], core_version: int) -> PodSize:
    """Fill the smallest host that can take the pod, minus DaemonSet headroom.

    CPU is rounded down to half cores and memory to whole GiB. For trn1.2xlarge + inf2.xlarge this
    gives 3 CPUs and 12Gi, what the workshop measured on an inf2.xlarge (3920m, 14162Mi allocatable).
    """
    hosts = hosts_for(neuron_devices, instance_types, core_version)
    if not hosts:
        raise ValueError(f"no instance type among {list(instance_types)} has {neuron_devices} Neuron devices "
                         f"of NeuronCore-v{core_version}")
    cpu = min(h.allocatable_cpu_millis for h in hosts) - DAEMONSET_CPU_MILLIS
    memory = min(h.allocatable_memory_mib for h in hosts) - DAEMONSET_MEMORY_MIB
    return PodSize(cpu_millis=cpu // 500 * 500, memory_mib=memory // 1024 * 1024)


def families_for(core_version: int, instance_types: Sequence[str]) -> list[str]:
    """The instance families among the configured types that run NeuronCore-v`core_version` artifacts."""
    families = {NEURON_INSTANCE_TYPES[n].family for n in instance_types}
    return sorted(f for f in families if FAMILY_CORE_VERSION[f] == core_version)


@dataclass(frozen=True)
class NodePoolPlan:
    """One Karpenter NodePool: its name, the weight Karpenter orders pools by, and its instance types."""

    name: str
    weight: int
    instance_types: tuple[str, ...]

    @property
    def is_fallback(self) -> bool:
        return self.name != FIRST_CHOICE_POOL


# Karpenter tries NodePools by weight, highest first, and inside one pool launches the cheapest compatible
# on-demand type (karpenter-provider-aws: EC2 Fleet "lowest-price"). inf2.xlarge costs less than
# trn1.2xlarge, so one pool with both always picks Inferentia2: Trainium gets a pool of its own, tried first.
FIRST_CHOICE_POOL = "neuron"
INFERENTIA2_POOL = "neuron-inf2"
FIRST_CHOICE_WEIGHT = 100  # the CRD's maximum
FALLBACK_WEIGHT = 10


def node_pools(instance_types: Sequence[str]) -> tuple[NodePoolPlan, ...]:
    """Trainium types in the first-choice pool `neuron`, Inferentia2 types in a lower-weight fallback pool.

    The first choice is always named `neuron`, as in the EKS workshop, so with only Inferentia2 types
    configured `neuron` holds those.
    """
    trainium = tuple(t for t in instance_types if NEURON_INSTANCE_TYPES[t].is_trainium)
    inferentia = tuple(t for t in instance_types if not NEURON_INSTANCE_TYPES[t].is_trainium)
    if not trainium or not inferentia:
        return (NodePoolPlan(FIRST_CHOICE_POOL, FIRST_CHOICE_WEIGHT, tuple(instance_types)),)
    return (NodePoolPlan(FIRST_CHOICE_POOL, FIRST_CHOICE_WEIGHT, trainium),
            NodePoolPlan(INFERENTIA2_POOL, FALLBACK_WEIGHT, inferentia))


def pool_limits(max_neuron_devices: int, instance_types: Sequence[str]) -> dict[str, str]:
    """One NodePool's limits: enough CPU and memory for `max_neuron_devices` devices on its roomiest type.

    Every pool gets the whole device ceiling, so either can carry all models when the other has no
    capacity; the model namespace's ResourceQuota keeps the pods' total at the ceiling. For trn1.2xlarge
    and 2 devices: neuron 2, cpu 16, memory 64Gi (the workshop's limits).
    """
    types = [NEURON_INSTANCE_TYPES[n] for n in instance_types]
    # Karpenter never launches an instance that would exceed a limit, so at most
    # max_neuron_devices // devices instances of each type; the config rejects types that exceed it alone.
    cpu = max(max_neuron_devices // t.neuron_devices * t.vcpus for t in types)
    memory_gib = max(max_neuron_devices // t.neuron_devices * t.memory_mib // 1024 for t in types)
    return {NEURON_DEVICE_RESOURCE: str(max_neuron_devices), "cpu": str(cpu), "memory": f"{memory_gib}Gi"}
