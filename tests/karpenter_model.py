"""A small, independent model of how Karpenter 1.14.1 picks capacity for one pending pod.

It reads what the program renders (NodePool manifests and a Deployment's pod template), never the stack
settings or the program's pool planning, and answers: which NodePool, instance type and capacity type would
Karpenter launch, or why none. Everything it does is read from the sources below (read, not copied; the
controller the chart installs is aws/karpenter-provider-aws v1.14.1, whose go.mod pins
sigs.k8s.io/karpenter at commit 6e7eab7a0f48, the commit tagged v1.14.1 in kubernetes-sigs/karpenter):

kubernetes-sigs/karpenter, tag v1.14.1
  [order]     pkg/controllers/provisioning/provisioner.go `NewScheduler` sorts the Ready NodePools with
              pkg/utils/nodepool/nodepool.go `OrderByWeight`: larger `spec.weight` first, equal weights by
              name *later in the alphabet first* (`nps[a].Name > nps[b].Name`); pools with `spec.replicas`
              (static) or being deleted are left out.
  [first]     pkg/controllers/provisioning/scheduling/scheduler.go `addToNewNodeClaim`: tries every pool
              and keeps the successful one with the lowest index, i.e. the first pool in weight order that can
              take the pod, even if a later pool is cheaper.
  [limits]    same function: `filterByRemainingResources` drops the types whose capacity exceeds, for any
              resource in `spec.limits`, the limit less the capacity of the pool's existing nodes
              (`NewScheduler` seeds `remainingResources` from `spec.limits`; `updateRemainingResources`
              subtracts `node.Capacity()`); a `nodes` limit of zero skips the pool.
  [taints]    scheduling/nodeclaim.go `CanAdd` -> pkg/scheduling/taints.go `Tolerates`: the pod must tolerate
              every taint of `spec.template.spec.taints` (Kubernetes' ToleratesTaint matching).
  [compat]    `CanAdd` -> pkg/scheduling/requirements.go `Compatible(..., AllowUndefinedWellKnownLabels)`:
              a pod requirement on a label that is not well known must be defined by the pool (its
              requirements, or its template labels, which scheduling/nodeclaimtemplate.go
              `NewNodeClaimTemplate` turns into requirements along with `karpenter.sh/nodepool`), and the
              keys both define must intersect (`Intersects`, pkg/scheduling/requirement.go `HasIntersection`).
  [pod]       pkg/scheduling/requirements.go `newPodRequirements`: nodeSelector, the heaviest preferred
              node-affinity term, and the *first* required nodeSelectorTerm; scheduling/preferences.go
              `Relax` then drops the first required term (while more than one is left) or the heaviest
              preferred term, one at a time, and the pod is tried again.
  [types]     scheduling/nodeclaim.go `filterInstanceTypesByRequirements`: a type is kept when its
              requirements intersect the pool's + pod's (`compatible`), and pod requests + DaemonSet
              overhead fit its allocatable with an *available* offering compatible with them (`fits`,
              pkg/cloudprovider/types.go `precompute` takes `Offerings.Available()`).
  [requests]  pkg/utils/resources/resources.go `RequestsForPods` / `Ceiling`: Kubernetes' PodRequests
              (containers summed, init containers as a maximum, sidecars added) plus `pods: 1`.
  [daemons]   scheduler.go `buildDaemonOverheadGroups` / `isDaemonPodCompatible`: a DaemonSet's pod counts
              against a pool's instance type when it tolerates the pool's taints (PreferNoSchedule always
              tolerated) and its nodeSelector + a required node-affinity term are compatible with the pool's
              requirements and intersect the type's labels; its requests add to the pod's.

aws/karpenter-provider-aws, tag v1.14.1 (commit bde00654cd316fddb3dccfba3f5ac07039865429)
  [launch]    pkg/providers/instance/instance.go `getCapacityType`: reserved, then spot, else on-demand;
              pkg/providers/instance/types.go `Build`: on-demand CreateFleet uses `lowest-price`
              (`prioritized` only with NodeOverlays), spot `price-capacity-optimized`. So on-demand lands on
              the cheapest available offering among the pool's remaining types.
  [available] pkg/providers/instancetype/offering/base_resolver.go `ResolveOfferings`: an offering is
              available only if it is not in the unavailable-offerings cache, has a price, and is offered in
              a zone of the node class's subnets.
  [ice]       pkg/providers/instance/instance.go `updateUnavailableOfferingsCache` marks (type, zone,
              capacity type) unavailable for every CreateFleet error that pkg/errors/errors.go
              `IsUnfulfillableCapacity` accepts: InsufficientInstanceCapacity, MaxSpotInstanceCountExceeded,
              VcpuLimitExceeded, UnfulfillableCapacity, Unsupported, InsufficientFreeAddressesInSubnet,
              MaxFleetCountExceeded, ReservationCapacityExceeded; pkg/cache/cache.go
              `UnavailableOfferingsTTL = 3 * time.Minute` (pkg/cache/unavailableofferings.go). Other errors
              mark nothing. The NodeClaim fails, the pod is scheduled again, and [types] finds that offering
              gone, so the next type of the pool, or the next pool, is taken.
  [prices]    pkg/providers/pricing/zz_generated.pricing_aws.go: the static on-demand table, and
              pkg/providers/pricing/pricing.go `Reset`: a region without an entry uses us-east-1's.
  [labels]    pkg/providers/instancetype/types.go `computeRequirements` (labels), `computeCapacity`,
              `ENILimitedPods` (default network card's interfaces x (IPv4 per interface - 1) + 2),
              `kubeReservedResources` (CPU 6%/1%/0.5%/0.25%, memory 11 MiB per pod + 255 MiB),
              `evictionThreshold` (100Mi), `memory` (less VM overhead, pkg/operator/options
              `VMMemoryOverheadPercent` 0.075); pkg/apis/v1/labels.go (well-known labels).

What is not modelled, and how the model says so:
  - spot (price-capacity-optimized is EC2's choice, not a price order) and reserved capacity (offerings from
    capacity reservations): when Karpenter would launch spot, `choose` raises NotModelled; reserved
    offerings exist only when the EC2NodeClass selects reservations, which this world never has.
  - zones: an offering stands for every zone of the cluster's subnets; a requirement on a zone raises
    NotModelled. Existing nodes with room, topology spread, pod (anti-)affinity, volumes, DRA and
    minValues are ignored: the pod is pending, no node has room, a new node is needed.
  - DaemonSets: the rendered ones passed to `choose` are matched as [daemons] does; DaemonSets the program
    does not render as objects (charts, EKS add-ons) are a flat world input, `daemonset_overhead`, none by
    default.
  - the world knows the Neuron catalog only; a resource or well-known label it has no figure for raises
    NotModelled rather than guessing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

# Catalog facts (vCPU, memory, Neuron devices, network interfaces), checked against EC2's data in
# tests/test_neuron_catalog.py. Nothing else of the program is used.
from components.neuron import NEURON_INSTANCE_TYPES

ON_DEMAND, SPOT, RESERVED = "on-demand", "spot", "reserved"

# --- Prices ----------------------------------------------------------------------------------------------

# Source: aws/karpenter-provider-aws tag v1.14.1 (commit bde00654cd316fddb3dccfba3f5ac07039865429),
# pkg/providers/pricing/zz_generated.pricing_aws.go ("generated at 2026-07-06T14:20:29Z for us-east-1"), map
# InitialOnDemandPricesAWS, block "us-east-1" (line 25): inf2 at line 251, trn1 at line 579, trn1n at line 581.
# The file has no other region (no us-west-2 block) and no trn2 entry.
# USD per hour. Only these types matter here.
STATIC_ON_DEMAND_PRICES: dict[str, dict[str, float]] = {
    "us-east-1": {
        "inf2.xlarge": 0.758200, "inf2.8xlarge": 1.967860, "inf2.24xlarge": 6.490630, "inf2.48xlarge": 12.981270,
        "trn1.2xlarge": 1.343750, "trn1.32xlarge": 21.500000,
        "trn1n.32xlarge": 24.780000,
        # trn2.3xlarge, trn2.48xlarge: absent from the v1.14.1 table, so no static price.
    },
}


def static_on_demand_prices(region: str) -> dict[str, float]:
    """What Karpenter prices on-demand offerings at before (or without) a Pricing API update.

    pricing.go `Reset`: the region's block, else us-east-1's. us-west-2 has no block at v1.14.1, so it gets
    us-east-1's prices (the same list prices for these types: FACTS section 1).
    """
    return dict(STATIC_ON_DEMAND_PRICES.get(region, STATIC_ON_DEMAND_PRICES["us-east-1"]))


# --- Launch errors -----------------------------------------------------------------------------------------

# pkg/errors/errors.go `unfulfillableCapacityErrorCodes` at v1.14.1.
UNFULFILLABLE_CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "MaxSpotInstanceCountExceeded", "VcpuLimitExceeded", "UnfulfillableCapacity",
    "Unsupported", "InsufficientFreeAddressesInSubnet", "MaxFleetCountExceeded", "ReservationCapacityExceeded",
})
UNAVAILABLE_OFFERINGS_TTL_SECONDS = 180  # pkg/cache/cache.go UnavailableOfferingsTTL


class NotModelled(Exception):
    """The pods or pools use something this model does not decide (see the module docstring)."""


# --- Quantities and requirements ----------------------------------------------------------------------------

_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
             "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": 1,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: Any) -> Fraction:
    """A Kubernetes resource quantity ("3", "3000m", "12Gi", 1.5) as an exact number."""
    if isinstance(value, (int, float)):
        return Fraction(value)
    match = re.fullmatch(r"([+-]?[0-9.]+)(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)", str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, exponent, suffix = match.groups()
    scale = Fraction(10) ** int(exponent) if exponent else Fraction(_SUFFIXES[suffix or ""])
    return Fraction(number) * scale


Resources = dict[str, Fraction]


def _max(a: Mapping[str, Fraction], b: Mapping[str, Fraction]) -> Resources:
    return {k: max(a.get(k, Fraction(0)), b.get(k, Fraction(0))) for k in a.keys() | b.keys()}


def _add(*lists: Mapping[str, Fraction]) -> Resources:
    total: Resources = {}
    for resources in lists:
        for name, amount in resources.items():
            total[name] = total.get(name, Fraction(0)) + amount
    return total


@dataclass(frozen=True)
class Requirement:
    """One label's allowed values, as pkg/scheduling/requirement.go keeps it: a set or its complement, and
    integer bounds (Gt/Lt)."""

    values: frozenset[str] = frozenset()
    complement: bool = False
    gte: int | None = None
    lte: int | None = None

    @classmethod
    def of(cls, operator: str, values: Sequence[str] = ()) -> Requirement:
        values = [str(v) for v in values or ()]
        if operator == "In":
            return cls(frozenset(values))
        if operator == "NotIn":
            return cls(frozenset(values), complement=True)
        if operator == "Exists":
            return cls(complement=True)
        if operator == "DoesNotExist":
            return cls()
        if operator in ("Gt", "Gte"):
            return cls(complement=True, gte=int(values[0]) + (operator == "Gt"))
        if operator in ("Lt", "Lte"):
            return cls(complement=True, lte=int(values[0]) - (operator == "Lt"))
        raise ValueError(f"unknown operator {operator!r}")

    @property
    def negative(self) -> bool:
        """NotIn or DoesNotExist: the operators `Compatible`/`Intersects` let through undefined or disjoint."""
        return (self.complement and bool(self.values)) or (not self.complement and not self.values)

    def _within(self, value: str, gte: int | None, lte: int | None) -> bool:
        if gte is None and lte is None:
            return True
        try:
            number = int(value)
        except ValueError:
            return False
        return (gte is None or number >= gte) and (lte is None or number <= lte)

    def _bounds(self, other: Requirement) -> tuple[int | None, int | None]:
        gte = max((b for b in (self.gte, other.gte) if b is not None), default=None)
        lte = min((b for b in (self.lte, other.lte) if b is not None), default=None)
        return gte, lte

    def intersects(self, other: Requirement) -> bool:
        """requirement.go `HasIntersection`."""
        gte, lte = self._bounds(other)
        if gte is not None and lte is not None and gte > lte:
            return False
        if self.complement and other.complement:
            return True
        if self.complement:
            return any(v not in self.values and self._within(v, gte, lte) for v in other.values)
        if other.complement:
            return any(v not in other.values and self._within(v, gte, lte) for v in self.values)
        return any(v in other.values and self._within(v, gte, lte) for v in self.values)

    def intersection(self, other: Requirement) -> Requirement:
        """requirement.go `Intersection` (what `Requirements.Add` keeps for a key given twice)."""
        gte, lte = self._bounds(other)
        if self.complement and other.complement:
            return Requirement(self.values | other.values, True, gte, lte)
        if self.complement:
            kept = other.values - self.values
        elif other.complement:
            kept = self.values - other.values
        else:
            kept = self.values & other.values
        return Requirement(frozenset(v for v in kept if self._within(v, gte, lte)))

    def allows(self, value: str) -> bool:
        return (value not in self.values if self.complement else value in self.values) and \
            self._within(value, self.gte, self.lte)


class Requirements(dict):
    """Label key -> Requirement, intersected per key as requirements are added."""

    def add(self, key: str, requirement: Requirement) -> Requirements:
        key = NORMALIZED_LABELS.get(key, key)
        self[key] = self[key].intersection(requirement) if key in self else requirement
        return self

    def add_all(self, other: Mapping[str, Requirement]) -> Requirements:
        for key, requirement in other.items():
            self.add(key, requirement)
        return self

    @classmethod
    def from_expressions(cls, expressions: Iterable[Mapping[str, Any]]) -> Requirements:
        out = cls()
        for e in expressions or ():
            out.add(e["key"], Requirement.of(e["operator"], e.get("values") or ()))
        return out

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Requirements:
        return cls.from_expressions({"key": k, "operator": "In", "values": [v]} for k, v in (labels or {}).items())

    def copy(self) -> Requirements:
        return Requirements(self)

    def first_disjoint_key(self, other: Mapping[str, Requirement]) -> str | None:
        """requirements.go `Intersects`: a key both define whose values do not overlap (two negative ones do)."""
        for key in sorted(self.keys() & other.keys()):
            mine, theirs = self[key], other[key]
            if not mine.intersects(theirs) and not (mine.negative and theirs.negative):
                return key
        return None

    def incompatibility(self, pod: Mapping[str, Requirement]) -> str | None:
        """requirements.go `Compatible` with AllowUndefinedWellKnownLabels, `self` being the pool's."""
        for key, requirement in sorted(pod.items()):
            if key not in WELL_KNOWN_LABELS and key not in self and not requirement.negative:
                return f"label {key!r} is not defined by the pool"
        key = self.first_disjoint_key(pod)
        return f"the pool allows no value of {key!r} the pod accepts" if key else None


# pkg/apis/v1/labels.go (core `WellKnownLabels`) + the provider's pkg/apis/v1/labels.go `init`.
_AWS = "karpenter.k8s.aws/"
WELL_KNOWN_LABELS = frozenset({
    "karpenter.sh/nodepool", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type", "kubernetes.io/arch", "kubernetes.io/os", "karpenter.sh/capacity-type",
    "node.kubernetes.io/windows-build", "topology.k8s.aws/zone-id",
    "karpenter.k8s.aws/capacity-reservation-id", "karpenter.k8s.aws/capacity-reservation-type",
    "karpenter.k8s.aws/capacity-reservation-interruptible",
    *(_AWS + s for s in (
        "instance-hypervisor", "instance-encryption-in-transit-supported", "instance-category",
        "instance-capability-flex", "instance-family", "instance-generation", "instance-size", "instance-local-nvme",
        "instance-cpu", "instance-cpu-manufacturer", "instance-cpu-sustained-clock-speed-mhz", "instance-memory",
        "instance-ebs-bandwidth", "instance-network-bandwidth", "instance-gpu-name", "instance-gpu-manufacturer",
        "instance-gpu-count", "instance-gpu-memory", "instance-accelerator-name",
        "instance-accelerator-manufacturer", "instance-accelerator-count", "instance-tenancy")),
})
# pkg/apis/v1/labels.go `NormalizedLabels`: deprecated keys are read as their successors.
NORMALIZED_LABELS = {
    "beta.kubernetes.io/arch": "kubernetes.io/arch", "beta.kubernetes.io/os": "kubernetes.io/os",
    "beta.kubernetes.io/instance-type": "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone": "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region": "topology.kubernetes.io/region",
}
ZONE_LABELS = frozenset({"topology.kubernetes.io/zone", "topology.k8s.aws/zone-id"})

# --- Instance types as Karpenter sees them -------------------------------------------------------------------

# lowerKabobCase of EC2's NeuronInfo device name (types.go `computeRequirements`; FACTS section 4).
ACCELERATOR_NAME = {"inf2": "inferentia2", "trn1": "trainium", "trn1n": "trainium", "trn2": "trainium2"}
# `ENILimitedPods` counts the default network card's interfaces, not the instance's total. For the
# multi-card types that differ: zz_generated.vpclimits.go at v1.14.1 (trn1.32xlarge line 18777,
# trn1n.32xlarge line 18827: MaximumNetworkInterfaces 5 on card 0). Others: the catalog's count.
DEFAULT_CARD_INTERFACES = {"trn1.32xlarge": 5, "trn1n.32xlarge": 5}
# Labels every one of these types has no value for (DoesNotExist): they have no GPU and no reservation here.
_ABSENT = ("node.kubernetes.io/windows-build", _AWS + "instance-gpu-name", _AWS + "instance-gpu-manufacturer",
           _AWS + "instance-gpu-count", _AWS + "instance-gpu-memory", _AWS + "capacity-reservation-id",
           _AWS + "capacity-reservation-type", _AWS + "capacity-reservation-interruptible")
MIB = 2**20


@dataclass(frozen=True)
class InstanceType:
    name: str
    labels: Requirements
    capacity: Resources
    allocatable: Resources


def instance_type(name: str, region: str) -> InstanceType:
    """One catalog type with the labels, capacity and allocatable Karpenter computes for it (AL2023)."""
    facts = NEURON_INSTANCE_TYPES[name]
    family, size = name.split(".")
    labels = Requirements.from_labels({
        "node.kubernetes.io/instance-type": name, "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
        "topology.kubernetes.io/region": region,
        _AWS + "instance-family": family, _AWS + "instance-size": size,
        _AWS + "instance-cpu": str(facts.vcpus), _AWS + "instance-memory": str(facts.memory_mib),
        _AWS + "instance-accelerator-name": ACCELERATOR_NAME[family],
        _AWS + "instance-accelerator-manufacturer": "aws",
        _AWS + "instance-accelerator-count": str(facts.neuron_devices),
    })
    for key in _ABSENT:
        labels.add(key, Requirement.of("DoesNotExist"))
    pods = DEFAULT_CARD_INTERFACES.get(name, facts.network_interfaces) * (facts.ipv4_per_interface - 1) + 2
    memory_mib = facts.memory_mib - math.ceil(facts.memory_mib * 0.075)
    capacity = {"cpu": Fraction(facts.vcpus), "memory": Fraction(memory_mib * MIB), "pods": Fraction(pods),
                "aws.amazon.com/neuron": Fraction(facts.neuron_devices)}
    cpu_reserved_millis = sum(int(min(max(facts.vcpus * 1000 - start, 0), end - start) * share)
                              for start, end, share in ((0, 1000, 0.06), (1000, 2000, 0.01), (2000, 4000, 0.005),
                                                        (4000, 1 << 31, 0.0025)))
    overhead = {"cpu": Fraction(cpu_reserved_millis, 1000), "memory": Fraction((11 * pods + 255 + 100) * MIB)}
    allocatable = {k: v - overhead.get(k, 0) for k, v in capacity.items()}
    return InstanceType(name, labels, capacity, allocatable)


# --- The world ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """What Karpenter knows besides the manifests.

    `unavailable` holds (instance type, capacity type) pairs in the unavailable-offerings cache (for its
    3 minutes), in every zone: a regional vCPU quota error hits every zone's override alike.
    `pool_nodes` lists the instance types of the nodes each pool already has (their capacity counts
    against its limits). `prices` defaults to the static table for `region`. `daemonset_overhead` stands
    for the DaemonSets on every node that are not among the rendered ones (aws-node, kube-proxy, ...).
    """

    region: str = "us-west-2"
    prices: Mapping[str, float] | None = None
    offered: frozenset[str] = frozenset(NEURON_INSTANCE_TYPES)
    unavailable: frozenset[tuple[str, str]] = frozenset()
    pool_nodes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    daemonset_overhead: Mapping[str, str] = field(default_factory=dict)

    def price(self, name: str) -> float | None:
        prices = static_on_demand_prices(self.region) if self.prices is None else self.prices
        return prices.get(name)

    def available(self, name: str, capacity_type: str) -> bool:
        """base_resolver.go: offered here, priced, and not in the unavailable-offerings cache."""
        return (name in self.offered and self.price(name) is not None
                and (name, capacity_type) not in self.unavailable and capacity_type in (ON_DEMAND, SPOT))

    def after_fleet_errors(self, errors: Iterable[tuple[str, str, str]]) -> World:
        """The world after CreateFleet returned (instance type, capacity type, error code) errors: only the
        codes `IsUnfulfillableCapacity` accepts mark the offering unavailable."""
        marked = {(t, c) for t, c, code in errors if code in UNFULFILLABLE_CAPACITY_CODES}
        return World(self.region, self.prices, self.offered, self.unavailable | marked, self.pool_nodes,
                     self.daemonset_overhead)

    def instance_types(self) -> list[InstanceType]:
        return [instance_type(n, self.region) for n in sorted(NEURON_INSTANCE_TYPES)]


# --- The pod --------------------------------------------------------------------------------------------------------


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment (or any workload with spec.template), a Pod, or a pod spec."""
    if "template" in workload.get("spec", {}):
        return workload["spec"]["template"]["spec"]
    if "containers" in workload.get("spec", {}):
        return workload["spec"]
    return dict(workload)


def _container_requests(container: Mapping[str, Any]) -> Resources:
    resources = container.get("resources") or {}
    # The API server defaults a missing request to the limit.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: quantity(value) for name, value in merged.items()}


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """Kubernetes PodRequests, as `resources.Ceiling` uses it: regular containers and sidecars (init
    containers with restartPolicy Always) add up; each other init container needs its own request plus
    the sidecars started before it; the pod takes the larger. Plus spec.overhead and one pod."""
    total = _add(*(_container_requests(c) for c in spec.get("containers") or ()))
    sidecars: Resources = {}
    init_peak: Resources = {}
    for container in spec.get("initContainers") or ():
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, requests)
            total = _add(total, requests)
            requests = sidecars
        else:
            requests = _add(requests, sidecars)
        init_peak = _max(init_peak, requests)
    effective = _add(_max(total, init_peak), {k: quantity(v) for k, v in (spec.get("overhead") or {}).items()})
    return {**{k: v for k, v in effective.items() if v}, "pods": Fraction(1)}


@dataclass
class _Pod:
    """The parts of a pod Karpenter's provisioning reads, with the relaxations it may still apply."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    required_terms: list[list[dict[str, Any]]]
    preferred_terms: list[tuple[int, list[dict[str, Any]]]]
    requests: Resources

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> _Pod:
        node_affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = (node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
        preferred = node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        return cls(node_selector=dict(spec.get("nodeSelector") or {}),
                   tolerations=list(spec.get("tolerations") or []),
                   required_terms=[list(t.get("matchExpressions") or []) for t in required or []],
                   preferred_terms=sorted(((p.get("weight", 0), list((p.get("preference") or {}).get("matchExpressions")
                                                                      or [])) for p in preferred),
                                          key=lambda p: -p[0]),
                   requests=pod_requests(spec))

    def requirements(self) -> Requirements:
        """requirements.go `newPodRequirements`."""
        out = Requirements.from_labels(self.node_selector)
        if self.preferred_terms:
            out.add_all(Requirements.from_expressions(self.preferred_terms[0][1]))
        if self.required_terms:
            out.add_all(Requirements.from_expressions(self.required_terms[0]))
        return out

    def relax(self) -> str | None:
        """preferences.go `Relax`, the node-affinity steps: one removal, or None when nothing is left."""
        if len(self.required_terms) > 1:
            self.required_terms.pop(0)
            return "dropped the first required node-affinity term"
        if self.preferred_terms:
            self.preferred_terms.pop(0)
            return "dropped the heaviest preferred node-affinity term"
        return None


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes Toleration.ToleratesTaint."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    if toleration.get("operator") == "Exists":
        return True
    return toleration.get("operator") in (None, "", "Equal") and toleration.get("value", "") == taint.get("value", "")


# --- The choice -----------------------------------------------------------------------------------------------------


class Choice(NamedTuple):
    node_pool: str
    instance_type: str
    capacity_type: str


@dataclass(frozen=True)
class Decision:
    """What Karpenter would launch (`choice`), or None, and why."""

    choice: Choice | None
    reason: str
    price: float | None = None

    def __bool__(self) -> bool:
        return self.choice is not None


def ordered_pools(node_pools: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """[order]: static and deleted pools out; weight descending, then name descending."""
    pools = [p for p in node_pools if p.get("spec", {}).get("replicas") is None
             and not p.get("metadata", {}).get("deletionTimestamp")]
    by_name = sorted(pools, key=lambda p: p["metadata"]["name"], reverse=True)
    return sorted(by_name, key=lambda p: -(p["spec"].get("weight") or 0))  # stable: names stay descending


def _pool_requirements(pool: Mapping[str, Any]) -> Requirements:
    """nodeclaimtemplate.go `NewNodeClaimTemplate`: spec requirements, template labels, the pool's name."""
    template = pool["spec"]["template"]
    out = Requirements.from_expressions(template["spec"].get("requirements") or ())
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels["karpenter.sh/nodepool"] = pool["metadata"]["name"]
    node_class = template["spec"].get("nodeClassRef") or {}
    if node_class.get("name"):
        labels["karpenter.k8s.aws/ec2nodeclass"] = node_class["name"]
    return out.add_all(Requirements.from_labels(labels))


def _remaining_limits(pool: Mapping[str, Any], world: World) -> Resources | None:
    """[limits]: the pool's limits less the capacity of its existing nodes; None when it has no limits."""
    limits = pool["spec"].get("limits")
    if not limits:
        return None
    unknown = sorted(set(limits) - set(instance_type("inf2.xlarge", world.region).capacity) - {"nodes"})
    if unknown:
        raise NotModelled(f"limits on {unknown}: the model has no capacity figure for them")
    used = _add(*(instance_type(n, world.region).capacity for n in world.pool_nodes.get(pool["metadata"]["name"], ())),
                {"nodes": Fraction(len(world.pool_nodes.get(pool["metadata"]["name"], ())))})
    return {name: quantity(value) - used.get(name, Fraction(0)) for name, value in limits.items()}


def _check_modelled(requirements: Mapping[str, Requirement], types: Sequence[InstanceType]) -> None:
    unknown = sorted(k for k in requirements if k.startswith(_AWS) and k in WELL_KNOWN_LABELS
                     and k not in types[0].labels)
    if unknown:
        raise NotModelled(f"requirements on {unknown}: the model has no catalog value for them")
    if requirements.keys() & ZONE_LABELS:
        raise NotModelled("requirements on zones: the model does not place offerings in zones")


def _daemon_overhead(daemons: Sequence[_Pod], taints: Sequence[Mapping[str, Any]], pool_requirements: Requirements,
                     it: InstanceType, world: World) -> Resources:
    """[daemons]: the requests of the DaemonSet pods that would run on a node of this pool and type."""
    counted = [{k: quantity(v) for k, v in world.daemonset_overhead.items()}]
    for daemon in daemons:
        if not all(any(_tolerates(t, taint) for t in daemon.tolerations) or taint.get("effect") == "PreferNoSchedule"
                   for taint in taints):
            continue
        for term in daemon.required_terms or [[]]:
            requirements = Requirements.from_labels(daemon.node_selector).add_all(Requirements.from_expressions(term))
            fits_pool = pool_requirements.incompatibility(requirements) is None
            if fits_pool and it.labels.first_disjoint_key(requirements) is None:
                counted.append(daemon.requests)
                break
    return _add(*counted)


def _try_pool(pool: Mapping[str, Any], pod: _Pod, world: World, types: list[InstanceType],
              daemons: Sequence[_Pod]) -> tuple[Decision | None, str]:
    """One pool, as `addToNewNodeClaim` + `CanAdd` + the provider's launch see it."""
    name = pool["metadata"]["name"]
    remaining = _remaining_limits(pool, world)
    if remaining is not None:
        if "nodes" in remaining and remaining["nodes"] <= 0:
            return None, f"{name}: node limits exhausted"
        types = [t for t in types if all(t.capacity.get(r, 0) <= left for r, left in remaining.items())]
        if not types:
            return None, f"{name}: all instance types exceed the pool's remaining limits"
    taints = pool["spec"]["template"]["spec"].get("taints") or []
    for taint in taints:
        if not any(_tolerates(t, taint) for t in pod.tolerations):
            shown = f"{taint.get('key')}={taint.get('value', '')}:{taint.get('effect')}"
            return None, f"{name}: the pod does not tolerate taint {shown}"
    pool_requirements = _pool_requirements(pool)
    pod_requirements = pod.requirements()
    problem = pool_requirements.incompatibility(pod_requirements)
    if problem:
        return None, f"{name}: incompatible requirements, {problem}"
    requirements = pool_requirements.copy().add_all(pod_requirements)
    _check_modelled(requirements, types)
    capacity_types = requirements.get("karpenter.sh/capacity-type", Requirement.of("Exists"))
    allowed = [c for c in (RESERVED, SPOT, ON_DEMAND) if capacity_types.allows(c)]

    why_not: list[str] = []
    fitting: list[InstanceType] = []
    for t in types:
        key = t.labels.first_disjoint_key(requirements)
        if key:
            if t.name in _mentioned(requirements):  # other types are simply not allowed: no need to list them
                why_not.append(f"{t.name} (its {key} is not allowed)")
            continue
        needed = _add(pod.requests, _daemon_overhead(daemons, taints, pool_requirements, t, world))
        if set(needed) - set(t.allocatable):
            raise NotModelled(f"requests for {sorted(set(needed) - set(t.allocatable))}: the model has no capacity "
                              "figure for them")
        if any(needed[r] > t.allocatable.get(r, 0) for r in needed):
            why_not.append(f"{t.name} (too small)")
            continue
        if not any(world.available(t.name, c) for c in allowed):
            why_not.append(f"{t.name} (no available offering: {_unavailability(t.name, allowed, world)})")
            continue
        fitting.append(t)
    if not fitting:
        return None, f"{name}: no instance type fits" + (f": {', '.join(why_not)}" if why_not else "")

    # [launch] getCapacityType: reserved (none in this world), then spot, else on-demand.
    if SPOT in allowed and any(world.available(t.name, SPOT) for t in fitting):
        raise NotModelled(f"{name}: Karpenter would launch spot (price-capacity-optimized), which is out of scope")
    offers = [(world.price(t.name), t.name) for t in fitting if world.available(t.name, ON_DEMAND)]
    if not offers:
        return None, f"{name}: no on-demand offering available"
    # EC2 Fleet lowest-price: the cheapest override; equal prices broken by name here, for determinism.
    price, chosen = min(offers)
    return Decision(Choice(name, chosen, ON_DEMAND), f"{name}: cheapest available on-demand type {chosen} "
                    f"(${price}/h) among {sorted(t.name for t in fitting)}", price), ""


def _mentioned(requirements: Mapping[str, Requirement]) -> set[str]:
    """The instance types a requirement names (all, if none does)."""
    wanted = requirements.get("node.kubernetes.io/instance-type")
    return set(wanted.values) if wanted is not None and not wanted.complement else set(NEURON_INSTANCE_TYPES)


def _unavailability(name: str, capacity_types: Sequence[str], world: World) -> str:
    if name not in world.offered:
        return "not offered in the region"
    if world.price(name) is None:
        return "no price known"
    marked = [c for c in capacity_types if (name, c) in world.unavailable]
    return f"{'/'.join(marked)} marked unavailable" if marked else f"none for capacity types {list(capacity_types)}"


def choose(node_pools: Iterable[Mapping[str, Any]], workload: Mapping[str, Any], world: World = World(),
           daemonsets: Iterable[Mapping[str, Any]] = ()) -> Decision:
    """What Karpenter launches for one pending pod of `workload`, given the rendered NodePools and
    DaemonSets."""
    pools = ordered_pools(node_pools)
    if not pools:
        return Decision(None, "no NodePools")
    pod = _Pod.of(pod_spec(workload))
    types = world.instance_types()
    daemons = [_Pod.of(pod_spec(d)) for d in daemonsets]
    reasons: list[str] = []
    while True:
        attempt: list[str] = []
        for pool in pools:
            decision, why = _try_pool(pool, pod, world, types, daemons)
            if decision:
                return decision
            attempt.append(why)
        reasons.append("; ".join(attempt))
        relaxed = pod.relax()
        if relaxed is None:
            return Decision(None, " | then ".join(reasons))
        reasons.append(relaxed)
