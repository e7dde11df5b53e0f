"""Validation of rendered Kubernetes objects against the schemas the API server would use.

Karpenter's objects go against its CRDs (../shared/schemas): jsonschema over the openAPIV3Schema, plus a
walk for fields the API server would silently drop (structural schemas prune unknown fields, which is
how a blueprint once lost its disk settings to a renamed key). Core kinds go through kubernetes-validate
in strict mode at the cluster's Kubernetes version.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from components import versions
from components.config import PROJECT_DIR

def _schemas(name: str, marker: str) -> Path:
    """CRDs (and chart values) of one chart version: ../shared where the project is developed, else what
    `make schemas` pulled from the chart itself into .schemas/."""
    for candidate in (PROJECT_DIR.parent / "shared" / "schemas" / name, PROJECT_DIR / ".schemas" / name):
        if (candidate / marker).is_file():
            return candidate
    raise FileNotFoundError(f"no {name} schemas: run `make schemas`")


KARPENTER_SCHEMAS = _schemas(f"karpenter-{versions.KARPENTER_CHART_VERSION}", "chart-values.yaml")
KEDA_SCHEMAS = _schemas(f"keda-{versions.KEDA_CHART_VERSION}", "keda.sh_scaledobjects.yaml")
CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): KARPENTER_SCHEMAS / "karpenter.sh_nodepools.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): KARPENTER_SCHEMAS / "karpenter.k8s.aws_ec2nodeclasses.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): KEDA_SCHEMAS / "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): KEDA_SCHEMAS / "keda.sh_triggerauthentications.yaml",
}


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load(CRD_FILES[(api_version, kind)].read_text())
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def pruned_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths the API server would drop: not declared by a structural schema that does not preserve them."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in pruned_fields(item, schema.get("items", {}), f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    properties = schema.get("properties")
    additional = schema.get("additionalProperties")
    pruned = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if path == "" and key in ("apiVersion", "kind", "metadata"):
            continue  # the API server handles these itself
        if properties is not None and key in properties:
            pruned.extend(pruned_fields(item, properties[key], where))
        elif isinstance(additional, dict):
            pruned.extend(pruned_fields(item, additional, where))
        else:
            pruned.append(where)
    return pruned


def custom_resource_problems(manifest: dict[str, Any]) -> list[str]:
    schema = crd_schema(manifest["apiVersion"], manifest["kind"])
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(manifest)]
    return errors + [f"{p}: unknown field, the API server would drop it" for p in pruned_fields(manifest, schema)]


def core_problems(manifest: dict[str, Any], kubernetes_version: str = versions.KUBERNETES_VERSION) -> list[str]:
    try:
        kubernetes_validate.validate(manifest, f"{kubernetes_version}.0", strict=True)
    except kubernetes_validate.ValidationError as error:
        return [str(error)]
    return []
