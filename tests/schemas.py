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

def _karpenter_schemas() -> Path:
    """Karpenter's CRDs and chart values: ../shared where the project is developed, else what
    `make schemas` pulled from the chart itself into .schemas/."""
    name = f"karpenter-{versions.KARPENTER_CHART_VERSION}"
    for candidate in (PROJECT_DIR.parent / "shared" / "schemas" / name, PROJECT_DIR / ".schemas" / name):
        if (candidate / "chart-values.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Karpenter {versions.KARPENTER_CHART_VERSION} schemas: run `make schemas`")


KARPENTER_SCHEMAS = _karpenter_schemas()
CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): "karpenter.sh_nodepools.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "karpenter.k8s.aws_ec2nodeclasses.yaml",
}


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    path: Path = KARPENTER_SCHEMAS / CRD_FILES[(api_version, kind)]
    crd = yaml.safe_load(path.read_text())
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
