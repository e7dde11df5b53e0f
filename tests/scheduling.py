"""Would the scheduler place this pod on that node? Taints/tolerations and required node affinity.

Enough of the Kubernetes scheduling rules to check chart-rendered pods against the nodes the stack makes,
whatever form a chart renders its constraints in (nodeSelector, nodeAffinity terms, tolerations):
  - a toleration matches a taint when the effects match (an empty effect matches all), and either the
    operator is Exists and the keys match (an empty key matches every key) or the operator is Equal (the
    default) and key and value match (k8s.io/api/core/v1 Toleration.ToleratesTaint);
  - nodeSelector: every pair must be a node label;
  - requiredDuringSchedulingIgnoredDuringExecution: the terms are ORed, the expressions of a term ANDed; an
    empty term matches nothing; In/NotIn/Exists/DoesNotExist/Gt/Lt as in the NodeSelectorRequirement API
    docs (NotIn and DoesNotExist match a node without the label; Gt/Lt compare integers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

# Effects that keep a pod off a node unless tolerated (PreferNoSchedule only discourages).
BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
# aws.eks.NodeGroup taint effects -> Kubernetes taint effects.
NODE_GROUP_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


@dataclass(frozen=True)
class Node:
    name: str
    labels: Mapping[str, str]
    taints: Sequence[Mapping[str, str]] = field(default_factory=tuple)


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(pod_spec: Mapping[str, Any], node: Node) -> list[Mapping[str, str]]:
    """The node's blocking taints that the pod does not tolerate."""
    tolerations = pod_spec.get("tolerations") or []
    return [t for t in node.taints
            if t.get("effect") in BLOCKING_EFFECTS and not any(tolerates(tol, t) for tol in tolerations)]


def requirement_matches(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt"):
        if key not in labels or len(values) != 1:
            return False
        try:
            have, bound = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    raise ValueError(f"unknown node selector operator {operator!r}")


def term_matches(term: Mapping[str, Any], node: Node) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    return (all(requirement_matches(e, node.labels) for e in expressions)
            and all(requirement_matches(f, {"metadata.name": node.name}) for f in fields))


def affinity_admits(pod_spec: Mapping[str, Any], node: Node) -> bool:
    """nodeSelector and required node affinity (taints aside)."""
    if any(node.labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    return any(term_matches(term, node) for term in required.get("nodeSelectorTerms") or [])


def admits(pod_spec: Mapping[str, Any], node: Node) -> bool:
    """Whether the scheduler may place the pod on the node: node selection and taints."""
    return affinity_admits(pod_spec, node) and not untolerated(pod_spec, node)
