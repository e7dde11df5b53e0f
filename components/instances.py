"""EC2 instance types as Kubernetes sees them: how many pods fit and what they may request.

The Neuron catalog (components.neuron) and the system node catalog below share this arithmetic, so
model pods and system add-ons are sized by the same rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type, as DescribeInstanceTypes reports it."""

    name: str
    vcpus: int
    memory_mib: int
    # Network interfaces of the default network card: what the ENI-based pod limit counts (Karpenter's
    # ENILimitedPods, karpenter-provider-aws pkg/providers/instancetype/types.go), not the instance's total.
    network_interfaces: int
    ipv4_per_interface: int

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def max_pods(self) -> int:
        # The VPC CNI's ENI-based limit, which EKS AMIs and Karpenter use for kubelet's maxPods by default.
        return self.network_interfaces * (self.ipv4_per_interface - 1) + 2

    @property
    def allocatable_cpu_millis(self) -> int:
        """CPU left for pods after kube-reserved (6%, 1%, 0.5%, 0.5%, then 0.25% per core), as the EKS AMI and
        Karpenter compute it."""
        reserved = 0.0
        for core in range(self.vcpus):
            reserved += 1000 * (0.06 if core == 0 else 0.01 if core == 1 else 0.005 if core < 4 else 0.0025)
        return self.vcpus * 1000 - math.ceil(reserved)

    @property
    def allocatable_memory_mib(self) -> int:
        """Memory left for pods: 7.5% VM overhead, kube-reserved (11 MiB per pod + 255 MiB), 100 MiB eviction."""
        capacity = self.memory_mib - math.ceil(self.memory_mib * 0.075)
        return capacity - (11 * self.max_pods + 255) - 100


# General-purpose types the system node group may use (setting systemNodes.instanceType).
SYSTEM_INSTANCE_TYPES: dict[str, InstanceType] = {t.name: t for t in (
    InstanceType("m6i.large", 2, 8192, 3, 10),
    InstanceType("m6i.xlarge", 4, 16384, 4, 15),
    InstanceType("m6i.2xlarge", 8, 32768, 4, 15),
    InstanceType("m7i.large", 2, 8192, 3, 10),
    InstanceType("m7i.xlarge", 4, 16384, 4, 15),
    InstanceType("m7i.2xlarge", 8, 32768, 4, 15),
)}
