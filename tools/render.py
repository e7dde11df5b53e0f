"""Render: everything a stack would deploy, written out offline for review. No AWS access needed.

    python -m tools.render [--stack dev] [--out DIR]

Runs the Pulumi program under the same mocks the tests use (tools/offline.py), with the settings of
`Pulumi.<stack>.yaml`, and writes to DIR (default: render/<stack>):
  - kubernetes/<Kind>-<name>.yaml   every Kubernetes object it would apply, as the API server gets it;
  - helm/<release>.yaml             every Helm release: chart, version, namespace and values;
  - aws-resources.md                every other resource, its component and what it waits for.
IDs, ARNs and endpoints are the mocks' stand-ins for what AWS would return.

Exit status: 0 written, 2 bad flags or stack settings.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT, PROJECT_DIR, ConfigError
from tools import cli
from tools.cli import EXIT_OK, EXIT_USAGE
from tools.offline import Deployment, Registration, run_program, stack_values

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("render", "Write what a stack would deploy, rendered offline.", "0 written, 2 usage error")
    parser.add_argument("--out", type=Path, help="output directory (default: render/<stack>)")
    return parser.parse_args(argv)


def ordered(manifest: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind and metadata first, as people write manifests."""
    head = {k: manifest[k] for k in ("apiVersion", "kind", "metadata") if k in manifest}
    return {**head, **{k: v for k, v in sorted(manifest.items()) if k not in head}}


def write(deployment: Deployment, out: Path) -> dict[str, int]:
    """Write the rendering into `out` (emptied first) and return how many files of each sort."""
    if out.exists():
        shutil.rmtree(out)
    (out / "kubernetes").mkdir(parents=True)
    (out / "helm").mkdir()
    for resource in deployment.kubernetes_objects():
        manifest = ordered(resource.manifest())
        path = out / "kubernetes" / f"{manifest['kind']}-{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    for release in deployment.helm_releases():
        spec = {k: release.inputs.get(k) for k in ("chart", "version", "namespace", "name", "skipCrds", "values")
                if release.inputs.get(k) is not None}
        (out / "helm" / f"{release.inputs['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # Our own components only group resources; pulumi-eks's Cluster is a resource to review like the rest.
    aws = [r for r in deployment.resources
           if not r.type.startswith((f"{PROJECT}:", "kubernetes:", "pulumi:providers:"))]
    (out / "aws-resources.md").write_text(summary(deployment, aws))
    return {"kubernetes": len(deployment.kubernetes_objects()), "helm": len(deployment.helm_releases()),
            "aws": len(aws)}


def summary(deployment: Deployment, resources: list[Registration]) -> str:
    names = {r.urn: r.name for r in deployment.resources}
    components = {r.urn: f"{r.type.rsplit(':', 1)[1]} {r.name}" for r in deployment.resources
                  if r.type.startswith(f"{PROJECT}:")}
    lines = ["# Resources outside Kubernetes", "",
             "Each with its component and the resources it waits for (and that `pulumi destroy` removes first).",
             "", "| component | type | name | waits for |", "|---|---|---|---|"]
    rows = sorted((components.get(r.parent, names.get(r.parent, "")), r.type, r.name, r) for r in resources)
    for component, type_, name, resource in rows:
        waits_for = ", ".join(sorted(names[d] for d in resource.dependencies if d in names))
        lines.append(f"| {component} | `{type_}` | {name} | {waits_for} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or PROJECT_DIR / "render" / args.stack
    try:
        deployment = run_program(stack_values(args.stack), stack=args.stack)
    except FileNotFoundError:
        print(f"error: Pulumi.{args.stack}.yaml not found in {PROJECT_DIR}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"error: stack '{args.stack}': {error}", file=sys.stderr)
        return EXIT_USAGE
    counts = write(deployment, out)
    print(f"Rendered stack '{args.stack}' of {PROJECT} into {out}: {counts['kubernetes']} Kubernetes objects, "
          f"{counts['helm']} Helm releases, {counts['aws']} other resources (aws-resources.md).")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
