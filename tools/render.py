"""Render: everything a stack would deploy, written out offline for review. No AWS account, no Pulumi CLI.

    python -m tools.render [--stack dev] [--out DIR] [--charts DIR]

Runs the Pulumi program under the same mocks the tests use (tools/offline.py), with the settings of
`Pulumi.<stack>.yaml`, and writes to DIR (default: render/<stack>):
  - kubernetes/<Kind>-<name>.yaml    every Kubernetes object the program applies, as the API server gets it;
  - helm/<release>/release.yaml      the release: chart, version, namespace, and the `helm template` line used;
  - helm/<release>/values.yaml       the values the program passes;
  - helm/<release>/<Kind>-<name>.yaml  every object of the release as Helm would install it;
  - aws-resources.md                 every other resource with its settings and what it waits for, and what
                                     pulumi-eks creates inside the cluster component (tools/eks_inside.py).
IDs, ARNs and endpoints are the mocks' stand-ins for what AWS would return.

Helm releases are rendered with `helm template`, from the chart sources in ../shared/charts/<chart>-<version>/
when they are there, otherwise from the chart's registry (needs network). Helm is `$HELM`, else
`.tools/helm` (`make .tools/helm` or `sh tools/get-helm.sh` installs it), else `helm` on PATH.

The output is deterministic: the same stack gives the same bytes. Mapping keys are sorted at every level
(Pulumi hands values back in a different key order in each process), except that apiVersion, kind and
metadata open each object, as people write them; multi-line strings are written as YAML literal blocks.

Exit status: 0 written, 1 helm missing or failing, 2 bad flags or stack settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from components.config import PROJECT, PROJECT_DIR, ConfigError
from tools import cli, eks_inside
from tools.cli import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from tools.offline import Deployment, Registration, run_program, stack_values

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
EKS_CLUSTER = "eks:index:Cluster"
# Chart sources, one directory per chart and version: <name>-<version>/ (e.g. karpenter-1.14.1/).
CHART_SOURCES = PROJECT_DIR.parent / "shared" / "charts"
LOCAL_HELM = PROJECT_DIR / ".tools" / "helm"
HEAD = ("apiVersion", "kind", "metadata")
# What Pulumi puts in place of a value it does not know yet; a rendering must never contain it.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
# Release inputs that would change what Helm renders but that render() does not model.
UNMODELLED_RELEASE_INPUTS = ("valueYamlFiles", "postrender", "dependencyUpdate", "devel")


class HelmError(RuntimeError):
    """helm is missing, or `helm template` failed."""


# --- deterministic YAML ---------------------------------------------------------------------------------

def canonical(value: Any, head: Iterable[str] = ()) -> Any:
    """A copy with mapping keys sorted at every level; at the top, the `head` keys come first."""
    if isinstance(value, dict):
        first = [k for k in head if k in value]
        rest = sorted((k for k in value if k not in first), key=str)
        return {k: canonical(value[k]) for k in [*first, *rest]}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _represent_str)


def dump(document: Any, head: Iterable[str] = HEAD) -> str:
    """YAML for people and diffs: `canonical()` order, one value per line, no line folding."""
    return yaml.dump(canonical(document, head), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 20)


def file_names(manifests: list[dict[str, Any]]) -> list[str]:
    """`<Kind>-<name>.yaml` for each object; `<Kind>-<namespace>-<name>.yaml` where that alone would clash."""
    def short(m: dict[str, Any]) -> str:
        return f"{m['kind']}-{m['metadata']['name']}"

    clashes = Counter(short(m) for m in manifests)
    names = [f"{m['kind']}-{m['metadata'].get('namespace', '')}-{m['metadata']['name']}" if clashes[short(m)] > 1
             else short(m) for m in manifests]
    duplicates = [n for n, count in Counter(names).items() if count > 1]
    if duplicates:
        raise ValueError(f"objects rendered twice: {duplicates}")
    return [f"{n}.yaml" for n in names]


# --- Helm ------------------------------------------------------------------------------------------------

def find_helm(environ: dict[str, str] | None = None, local: Path = LOCAL_HELM) -> str:
    """`$HELM`, else .tools/helm, else `helm` on PATH; a HelmError naming the way to install it otherwise."""
    environ = os.environ if environ is None else environ
    how = ("run `make .tools/helm` or `sh tools/get-helm.sh` (installs Helm into .tools/helm), "
           "or put helm on PATH, or set HELM=/path/to/helm")
    if environ.get("HELM"):
        helm = environ["HELM"]
        if shutil.which(helm) is None:
            raise HelmError(f"HELM={helm} is not an executable; {how}")
        return helm
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    on_path = shutil.which("helm", path=environ.get("PATH"))
    if on_path:
        return on_path
    raise HelmError(f"helm not found: {how}")


@dataclass(frozen=True)
class ReleaseSpec:
    """A `kubernetes:helm.sh/v3:Release` as the program registered it."""

    name: str
    namespace: str
    chart: str
    version: str | None
    repo: str | None
    values: dict[str, Any]
    skip_crds: bool

    @classmethod
    def of(cls, release: Registration) -> "ReleaseSpec":
        inputs = release.inputs
        unmodelled = [k for k in UNMODELLED_RELEASE_INPUTS if inputs.get(k)]
        if unmodelled:
            raise ValueError(f"release {release.name}: tools.render does not model {unmodelled}")
        if not inputs.get("name"):
            raise ValueError(f"release {release.name}: no name (Pulumi would auto-name it); set one")
        values = inputs.get("values") or {}
        # pulumi-kubernetes drops null values unless allowNullValues (helm_release.go mergeMaps/excludeNulls).
        if not inputs.get("allowNullValues"):
            values = _without_nulls(values)
        return cls(name=inputs["name"], namespace=inputs.get("namespace") or "default", chart=inputs["chart"],
                   version=inputs.get("version"), repo=(inputs.get("repositoryOpts") or {}).get("repo"),
                   values=values, skip_crds=bool(inputs.get("skipCrds")))

    @property
    def chart_name(self) -> str:
        """The chart's own name: the last path segment of `oci://host/path/<name>`, or the plain name."""
        return self.chart.rstrip("/").rsplit("/", 1)[-1]


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def local_chart(spec: ReleaseSpec, charts_dir: Path = CHART_SOURCES) -> Path | None:
    """The chart's source directory `<charts_dir>/<name>-<version>/`, or None when it is not there.

    A local path as the release's chart is used as it is (Helm's own rule)."""
    if not spec.repo and not spec.chart.startswith("oci://") and Path(spec.chart).is_dir():
        return Path(spec.chart)
    if spec.version is None:
        return None
    directory = charts_dir / f"{spec.chart_name}-{spec.version}"
    if not (directory / "Chart.yaml").is_file():
        return None
    chart = yaml.safe_load((directory / "Chart.yaml").read_text())
    if (chart.get("name"), str(chart.get("version"))) != (spec.chart_name, spec.version):
        raise HelmError(f"{directory}/Chart.yaml is {chart.get('name')} {chart.get('version')}, "
                        f"not {spec.chart_name} {spec.version}")
    return directory


def helm_command(helm: str, spec: ReleaseSpec, values_file: str, kube_version: str,
                 chart_dir: Path | None) -> list[str]:
    """The `helm template` line that renders the release as `pulumi up` installs it.

    pulumi-kubernetes installs a helm.v3.Release with Helm's install action and `SkipCRDs = skipCrds`, and
    renders it (for its checksum) with `IncludeCRDs = !skipCrds` (provider/pkg/provider/helm_release.go,
    helmCreate and helmTemplate): so the chart's crds/ are part of the release unless skipCrds.
    Helm's install runs pre-/post-install hooks but never test hooks (helm pkg/action/install.go,
    performInstall): so `--skip-tests`. `--version` is checked by Helm for registries; for a chart
    directory `local_chart()` checks Chart.yaml instead.
    """
    if chart_dir is not None:
        source = [str(chart_dir)]
    elif spec.repo:
        source = [spec.chart, "--repo", spec.repo]
    else:
        source = [spec.chart]
    command = [helm, "template", spec.name, *source, "--namespace", spec.namespace]
    if spec.version:
        command += ["--version", spec.version]
    command += ["--values", values_file, "--kube-version", kube_version,
                "--skip-crds" if spec.skip_crds else "--include-crds", "--skip-tests"]
    return command


@dataclass(frozen=True)
class ChartObject:
    source: str  # the chart file it came from, as Helm reports it (`# Source:`)
    manifest: dict[str, Any]


@dataclass
class RenderedRelease:
    spec: ReleaseSpec
    command: list[str]  # with the helm binary as `helm` and the values file as `values.yaml`
    objects: list[ChartObject] = field(default_factory=list)

    def manifests(self) -> list[dict[str, Any]]:
        return [o.manifest for o in self.objects]


def parse_helm_output(text: str) -> list[ChartObject]:
    objects = []
    for document in text.split("\n---\n"):
        source = next((line[len("# Source: "):] for line in document.splitlines()
                       if line.startswith("# Source: ")), "")
        manifest = yaml.safe_load(document)
        if manifest:
            objects.append(ChartObject(source, manifest))
    return objects


def template(spec: ReleaseSpec, kube_version: str, *, charts_dir: Path = CHART_SOURCES,
             helm: str | None = None) -> RenderedRelease:
    """Render one release with `helm template`, from its local chart source or its registry."""
    if UNKNOWN in json.dumps(spec.values):
        raise ValueError(f"release {spec.name}: values hold a value unknown at preview time")
    helm = helm or find_helm()
    chart_dir = local_chart(spec, charts_dir)
    with tempfile.TemporaryDirectory(prefix="render-") as scratch:
        values_file = Path(scratch) / "values.yaml"
        values_file.write_text(dump(spec.values, head=()))
        command = helm_command(helm, spec, str(values_file), kube_version, chart_dir)
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise HelmError(f"helm template of release {spec.name} failed: {result.stderr.strip()}")
    shown = ["helm", *command[1:]]
    shown[shown.index(str(values_file))] = "values.yaml"
    if chart_dir is not None:
        shown[3] = _relative(chart_dir)
    return RenderedRelease(spec, shown, parse_helm_output(result.stdout))


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path.absolute(), PROJECT_DIR)
    except ValueError:
        return str(path)


def kubernetes_version(deployment: Deployment) -> str:
    """The stack's Kubernetes version: the one the EKS cluster is created with."""
    return str(deployment.one(EKS_CLUSTER).inputs["version"])


def render_releases(deployment: Deployment, *, charts_dir: Path = CHART_SOURCES,
                    helm: str | None = None) -> list[RenderedRelease]:
    """Every Helm release of the deployment, rendered, in registration order."""
    releases = deployment.helm_releases()
    if not releases:
        return []
    helm = helm or find_helm()
    version = kubernetes_version(deployment)
    return [template(ReleaseSpec.of(r), version, charts_dir=charts_dir, helm=helm) for r in releases]


# --- writing ----------------------------------------------------------------------------------------------

def aws_resources(deployment: Deployment) -> list[Registration]:
    """What aws-resources.md lists: not our components (they only group), not Kubernetes, not providers.
    pulumi-eks's Cluster is a resource to review like the rest."""
    return [r for r in deployment.resources
            if not r.type.startswith((f"{PROJECT}:", "kubernetes:", "pulumi:providers:"))]


def write(deployment: Deployment, out: Path, *, charts_dir: Path = CHART_SOURCES,
          helm: str | None = None) -> dict[str, int]:
    """Write the rendering into `out` (emptied first) and return how many of each sort were written."""
    releases = render_releases(deployment, charts_dir=charts_dir, helm=helm)  # fails before `out` is touched
    aws = aws_resources(deployment)
    summary = aws_summary(deployment, aws)
    if out.exists():
        shutil.rmtree(out)
    (out / "kubernetes").mkdir(parents=True)
    (out / "helm").mkdir()
    manifests = [r.manifest() for r in deployment.kubernetes_objects()]
    for name, manifest in zip(file_names(manifests), manifests):
        (out / "kubernetes" / name).write_text(dump(manifest))
    directories = Counter(r.spec.name for r in releases)
    for release in releases:
        spec = release.spec
        directory = out / "helm" / (spec.name if directories[spec.name] == 1 else f"{spec.namespace}-{spec.name}")
        directory.mkdir()
        described = {"name": spec.name, "namespace": spec.namespace, "chart": spec.chart, "version": spec.version,
                     "repo": spec.repo, "skipCrds": spec.skip_crds, "renderedWith": " ".join(release.command)}
        (directory / "release.yaml").write_text(dump({k: v for k, v in described.items() if v is not None}, head=()))
        (directory / "values.yaml").write_text(dump(spec.values, head=()))
        for name, obj in zip(file_names(release.manifests()), release.objects):
            (directory / name).write_text(f"# Source: {obj.source}\n" + dump(obj.manifest))
    (out / "aws-resources.md").write_text(summary)
    return {"kubernetes": len(manifests), "helm": len(releases),
            "chart objects": sum(len(r.objects) for r in releases), "aws": len(aws)}


def _settings(value: Any) -> Any:
    """Inputs for reading: JSON documents held in strings (IAM policies, event patterns, add-on
    configuration) pretty-printed, in the order the program wrote them."""
    if isinstance(value, dict):
        return {k: _settings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_settings(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        if isinstance(parsed, (dict, list)):
            return json.dumps(parsed, indent=2) + "\n"
    return value


def _options(resource: Registration) -> str:
    """Resource options that matter on updates: ignored properties, aliases, delete-before-replace, transforms."""
    parts = []
    if getattr(resource, "ignore_changes", None):
        parts.append(f"ignoreChanges {', '.join(sorted(resource.ignore_changes))}")
    if getattr(resource, "aliases", None):
        parts.append("aliases " + ", ".join(sorted(json.dumps(a, sort_keys=True) for a in resource.aliases)))
    if getattr(resource, "delete_before_replace", False):
        parts.append("deleteBeforeReplace")
    if getattr(resource, "transforms", 0):
        parts.append(f"{resource.transforms} transform(s) from the program, applied to its children")
    return "; ".join(parts)


def aws_summary(deployment: Deployment, resources: list[Registration]) -> str:
    by_urn = {r.urn: r for r in deployment.resources}

    def label(urn: str) -> str:
        r = by_urn.get(urn)
        return f"{r.name} (`{r.type}`)" if r else urn

    def component(resource: Registration) -> str:
        parent = by_urn.get(resource.parent)
        while parent is not None and not parent.type.startswith(f"{PROJECT}:"):
            parent = by_urn.get(parent.parent)
        return f"{parent.type.rsplit(':', 1)[1]} {parent.name}" if parent else ""

    def waits_for(resource: Registration) -> str:
        return ", ".join(sorted(label(d) for d in resource.dependencies if d in by_urn)) or "-"

    rows = sorted(resources, key=lambda r: (component(r), r.type, r.name, r.urn))
    lines = ["# Resources outside Kubernetes", "",
             "Every resource the program creates besides Kubernetes objects, with the settings it passes, its "
             "component and the resources it waits for (and that `pulumi destroy` removes first). IDs, ARNs and "
             "endpoints are the offline mocks' stand-ins. JSON documents (IAM policies, event patterns, add-on "
             "configuration) are pretty-printed.", "",
             "| component | type | name | waits for |", "|---|---|---|---|"]
    lines += [f"| {component(r)} | `{r.type}` | {r.name} | {waits_for(r)} |" for r in rows]
    lines += ["", "## Settings", ""]
    for r in rows:
        lines += [f"### `{r.type}` {r.name}", "", f"Component: {component(r) or '-'}. Waits for: {waits_for(r)}."]
        if r.custom_timeouts:
            lines[-1] += f" Timeouts: {', '.join(f'{k} {v}' for k, v in sorted(r.custom_timeouts.items()))}."
        options = _options(r)
        if options:
            lines[-1] += f" Options: {options}."
        lines += ["", "```yaml", dump(_settings(r.inputs), head=()).rstrip("\n"), "```", ""]
    for cluster in deployment.of_type(EKS_CLUSTER):
        lines += [f"## Inside `{EKS_CLUSTER}` {cluster.name}", "",
                  "Under the mocks pulumi-eks's Cluster is a single registration; `pulumi up` creates these "
                  f"resources inside it (source: {eks_inside.SOURCE}).", "",
                  "| type | name | settings | in pulumi-eks |", "|---|---|---|---|"]
        lines += [f"| `{c.type}` | {c.name} | {c.settings} | {c.source} |"
                  for c in eks_inside.children(cluster.name, cluster.inputs)]
        lines += ["", "Not created with these options:", ""]
        lines += [f"- {what}: {why}." for what, why in eks_inside.NOT_CREATED]
        lines += [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- command line ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("render", "Write what a stack would deploy, rendered offline.",
                        "0 written, 1 helm missing or failing, 2 usage error")
    parser.add_argument("--out", type=Path, help="output directory (default: render/<stack>)")
    parser.add_argument("--charts", type=Path, default=CHART_SOURCES,
                        help=f"chart sources, <chart>-<version>/ each (default: {_relative(CHART_SOURCES)})")
    return parser.parse_args(argv)


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
    try:
        counts = write(deployment, out, charts_dir=args.charts)
    except HelmError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    print(f"Rendered stack '{args.stack}' of {PROJECT} into {out}: {counts['kubernetes']} Kubernetes objects, "
          f"{counts['helm']} Helm releases ({counts['chart objects']} objects), "
          f"{counts['aws']} other resources (aws-resources.md).")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
