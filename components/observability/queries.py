"""PromQL fragments the alert rules and the dashboards share, so both read the same series the same way."""

from __future__ import annotations

from typing import Sequence

from components.observability import catalog


def selector(metric: str, **matchers: str) -> str:
    """`metric{job="...", k="v", ...}`; a value starting with `~` is a regex match, `!` a negative one."""
    if metric not in catalog.CATALOG:
        raise ValueError(f"{metric} is not in components/observability/catalog.py: no pinned exporter emits it")
    job = catalog.CATALOG[metric].job
    parts = [f'job="{job}"'] if job != catalog.ANY_JOB else []
    for label, value in matchers.items():
        op = "=~" if value.startswith("~") else "!=" if value.startswith("!") else "="
        parts.append(f'{label}{op}"{value.lstrip("~!")}"')
    return f"{metric}{{{', '.join(parts)}}}"


def alternatives(values: Sequence[str]) -> str:
    """A regex matching exactly these names (model names and NodePool names are DNS labels: no escaping)."""
    return "|".join(values)


def model_pod_regex(model_names: Sequence[str]) -> str:
    # Deployment pods are named <deployment>-<pod-template-hash>-<suffix>; neither part has a `-`, so a
    # model named `a` does not match the pods of a model named `a-b`.
    return f"({alternatives(model_names)})-[a-z0-9]+-[a-z0-9]+"


def with_model(expr: str, model_names: Sequence[str]) -> str:
    """Add the `model` label (the Deployment's name) to a kube-state-metrics series of model pods."""
    return f'label_replace({expr}, "model", "$1", "pod", "{model_pod_regex(model_names)}")'


def model_pods_on_pool(namespace: str, model_names: Sequence[str], nodepool: str) -> str:
    """1 per model pod running on a node of `nodepool`, labelled namespace, model, pod, node and the pool.

    Both sides are de-duplicated first: during a kube-state-metrics restart two targets can report
    the same node for a scrape or two, and a join on duplicates fails.
    """
    pods = with_model(selector("kube_pod_info", namespace=namespace, pod=f"~{model_pod_regex(model_names)}"),
                      model_names)
    nodes = (f"max by (node, {catalog.NODEPOOL_LABEL}) "
             f"({selector('kube_node_labels', **{catalog.NODEPOOL_LABEL: nodepool})})")
    return (f"max by (namespace, model, pod, node, {catalog.NODEPOOL_LABEL}) (\n"
            f"  {pods}\n"
            f"  * on (node) group_left ({catalog.NODEPOOL_LABEL})\n"
            f"  {nodes}\n"
            f")")


def neuron_pool_ratio(nodepools: Sequence[str]) -> str:
    """Neuron devices in use over the NodePool's limit, per pool (Karpenter's leader reports both)."""
    match = {"resource_type": catalog.NEURON_RESOURCE_TYPE, "nodepool": f"~{alternatives(nodepools)}"}
    return (f"max by (nodepool) ({selector('karpenter_nodepools_usage', **match)})\n"
            f"/\n"
            f"max by (nodepool) ({selector('karpenter_nodepools_limit', **match)})")

