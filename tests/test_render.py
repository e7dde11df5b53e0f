"""tools.render: what it writes is what the program deploys (Helm releases as Helm renders them), it validates,
it shows every AWS setting, and the same stack always gives the same bytes."""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import karpenter_policy
from components.config import PROJECT_DIR
from tests.schemas import core_problems, custom_resource_problems
from tools import eks_inside, render
from tools.offline import run_program, stack_values


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "dev"
    assert render.main(["--stack", "dev", "--out", str(out)]) == 0
    return out


def test_every_kubernetes_object_is_written_and_validates(rendered, dev_deployment):
    files = sorted(rendered.glob("kubernetes/*.yaml"))
    assert len(files) == len(dev_deployment.kubernetes_objects())
    written = [yaml.safe_load(path.read_text()) for path in files]
    def key(manifest):
        return json.dumps(manifest, sort_keys=True)

    assert sorted(written, key=key) == sorted((r.manifest() for r in dev_deployment.kubernetes_objects()), key=key)
    for path, manifest in zip(files, written):
        assert list(manifest)[:3] == ["apiVersion", "kind", "metadata"]
        if manifest["apiVersion"].startswith("karpenter"):
            assert custom_resource_problems(manifest) == [], path.name
        else:
            assert core_problems(manifest) == [], path.name


def test_every_helm_release_is_written_with_its_values_and_objects(rendered, dev_deployment):
    releases = {r.inputs["name"]: r for r in dev_deployment.helm_releases()}
    assert {p.name for p in (rendered / "helm").iterdir()} == set(releases)
    assert {"karpenter", "karpenter-crd", "neuron-device-plugin"} <= set(releases)
    for name, release in releases.items():
        directory = rendered / "helm" / name
        described = yaml.safe_load((directory / "release.yaml").read_text())
        assert (described["chart"], described["version"], described["namespace"]) == (
            release.inputs["chart"], release.inputs["version"], release.inputs["namespace"])
        assert yaml.safe_load((directory / "values.yaml").read_text()) == (release.inputs.get("values") or {})
        objects = [p for p in directory.glob("*.yaml") if p.name not in ("release.yaml", "values.yaml")]
        assert objects, name
        for path in objects:
            assert path.read_text().startswith("# Source: ")
            manifest = yaml.safe_load(path.read_text())
            assert path.name == f"{manifest['kind']}-{manifest['metadata']['name']}.yaml"
    karpenter, crds = (yaml.safe_load((rendered / "helm" / name / "release.yaml").read_text())
                       for name in ("karpenter", "karpenter-crd"))
    assert karpenter["chart"] == "oci://public.ecr.aws/karpenter/karpenter" and karpenter["version"] == "1.14.1"
    # skipCrds as Pulumi's helm.v3.Release applies it: the controller chart's crds/ are left out.
    assert "--skip-crds" in karpenter["renderedWith"] and "--include-crds" in crds["renderedWith"]


def test_output_derived_values_are_the_mocks_realistic_strings(rendered, dev_deployment):
    values = yaml.safe_load((rendered / "helm" / "karpenter" / "values.yaml").read_text())
    settings = values["settings"]
    assert re.fullmatch(r"https://[0-9A-F]{32}\.gr7\.us-west-2\.eks\.amazonaws\.com", settings["clusterEndpoint"])
    assert settings["interruptionQueue"] == dev_deployment.one("aws:sqs/queue:Queue").outputs["name"]
    assert settings["clusterName"] == "trainium-vllm-dev"
    assert values["controller"]["env"] == [{"name": "AWS_REGION", "value": "us-west-2"}]
    for path in rendered.rglob("*.yaml"):
        text = path.read_text()
        assert render.UNKNOWN not in text and "<pulumi" not in text, path
    for path in rendered.glob("helm/*/values.yaml"):
        assert None not in leaves(yaml.safe_load(path.read_text()), strings_only=False), path  # Pulumi drops nulls


def test_the_same_stack_gives_the_same_bytes_in_two_processes(tmp_path):
    runs = {seed: tmp_path / f"run-{seed}" for seed in ("1", "2")}  # different hash seeds too
    processes = [subprocess.Popen([sys.executable, "-m", "tools.render", "--out", str(out)], cwd=PROJECT_DIR,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONHASHSEED": seed})
                 for seed, out in runs.items()]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    outs = [{str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
            for out in runs.values()]
    assert len(outs[0]) > 30 and list(outs[0]) == list(outs[1])
    assert [name for name in outs[0] if outs[0][name] != outs[1][name]] == []


def test_yaml_is_sorted_at_every_level_with_the_head_first():
    manifest = {"spec": {"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": "x"}}, "metadata": {"name": "n", "labels": {}},
                "kind": "K", "apiVersion": "v1", "data": {"script.sh": "#!/bin/sh\necho hi\n"}}
    text = render.dump(manifest)
    assert text.splitlines()[:3] == ["apiVersion: v1", "kind: K", "metadata:"]
    assert text.index("labels") < text.index("name: n") and text.index("data:") < text.index("spec:")
    assert text.index("  a:") < text.index("  b:") and text.index("y: 2") < text.index("z: 1")
    assert "script.sh: |\n    #!/bin/sh\n    echo hi\n" in text  # multi-line strings as literal blocks
    assert yaml.safe_load(text) == manifest
    reordered = {k: manifest[k] for k in reversed(list(manifest))}
    reordered["spec"] = {"a": {"c": "x", "d": [{"y": 2, "z": 1}]}, "b": 1}
    assert render.dump(reordered) == text


def test_every_aws_setting_is_shown(rendered, dev_deployment):
    """An IAM, KMS or queue change shows in a diff: each input value of each resource is in its section."""
    summary = (rendered / "aws-resources.md").read_text()
    sections = dict(re.findall(r"^### (`[^`]+` \S+)\n(.*?)(?=^### |^## |\Z)", summary, re.M | re.S))
    for resource in render.aws_resources(dev_deployment):
        section = sections[f"`{resource.type}` {resource.name}"]
        for leaf in leaves(resource.inputs):
            assert leaf in section, (resource.type, resource.name, leaf)


def leaves(value, strings_only: bool = True) -> list:
    """Every key and scalar of `value` as it reads in the rendering: JSON documents held in strings opened,
    multi-line strings line by line, booleans in YAML's spelling."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in [str(k), *leaves(v, strings_only)]]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v, strings_only)]
    if not strings_only:
        return [value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return leaves(json.loads(value))
        except ValueError:
            pass
    if isinstance(value, str) and "\n" in value:
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, bool):
        return [str(value).lower()]
    return [str(value)]


def test_an_iam_policy_change_shows_in_the_diff(rendered, monkeypatch, tmp_path):
    original = karpenter_policy.controller_policy

    def widened(**kwargs):
        policy = original(**kwargs)
        policy["Statement"].append({"Sid": "Widened", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"})
        return policy

    monkeypatch.setattr(karpenter_policy, "controller_policy", widened)
    render.write(run_program(stack_values("dev")), tmp_path / "changed")
    before = (rendered / "aws-resources.md").read_text().splitlines()
    after = (tmp_path / "changed" / "aws-resources.md").read_text().splitlines()
    added = [line for line in difflib.unified_diff(before, after, lineterm="") if line.startswith("+ ")]
    assert any('"Sid": "Widened"' in line for line in added) and any('"iam:PassRole"' in line for line in added)


def test_aws_resources_are_summarised_with_what_they_wait_for(rendered):
    summary = (rendered / "aws-resources.md").read_text()
    assert "| EksCluster trainium-vllm-dev | `eks:index:Cluster` | trainium-vllm-dev-eks |" in summary
    row = next(line for line in summary.splitlines() if "| karpenter-node |" in line and "AccessEntry" in line)
    assert "trainium-vllm-dev-eks (`eks:index:Cluster`)" in row  # the node access entry waits for the cluster
    assert '"Service": "pods.eks.amazonaws.com"' in summary  # trust policies pretty-printed


def test_what_pulumi_eks_creates_inside_the_cluster_is_listed(rendered):
    summary = (rendered / "aws-resources.md").read_text()
    inside = summary[summary.index("## Inside `eks:index:Cluster` trainium-vllm-dev-eks"):]
    for type_, name in [("aws:eks/cluster:Cluster", "trainium-vllm-dev-eks-eksCluster"),
                        ("aws:eks/addon:Addon", "trainium-vllm-dev-eks-kube-proxy"),
                        ("eks:index:VpcCniAddon", "trainium-vllm-dev-eks-vpc-cni"),
                        ("aws:eks/addon:Addon", "trainium-vllm-dev-eks-vpc-cni"),
                        ("pulumi:providers:kubernetes", "trainium-vllm-dev-eks-eks-k8s")]:
        assert f"| `{type_}` | {name} |" in inside
    assert "bootstrapClusterCreatorAdminPermissions: true" in inside and '"enableNetworkPolicy": "true"' in inside
    assert "AccessEntry" not in inside  # no clusterAdminArns in Pulumi.dev.yaml


def test_access_entries_passed_to_the_cluster_are_listed_inside_it(dev_deployment):
    cluster = dev_deployment.one(render.EKS_CLUSTER)
    admin = "arn:aws:iam::123456789012:role/platform-admin"
    inputs = {**cluster.inputs, "accessEntries": {"platform-admin": {"principalArn": admin, "accessPolicies": {
        "cluster-admin": {"policyArn": "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                          "accessScope": {"type": "cluster"}}}}}}
    children = {(c.type, c.name): c for c in eks_inside.children(cluster.name, inputs)}
    entry = children[("aws:eks/accessEntry:AccessEntry", f"{cluster.name}-platform-admin")]
    association = children[("aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
                            f"{cluster.name}-platform-admin-cluster-admin")]
    assert admin in entry.settings and "AmazonEKSClusterAdminPolicy" in association.settings


def test_the_list_inside_the_cluster_refuses_options_it_was_not_written_for(dev_deployment):
    cluster = dev_deployment.one(render.EKS_CLUSTER)
    assert eks_inside.unmodelled_options(cluster.inputs) == []
    with pytest.raises(eks_inside.UnmodelledOptions, match="skipDefaultNodeGroup"):
        eks_inside.children(cluster.name, {**cluster.inputs, "skipDefaultNodeGroup": False})


def test_a_second_render_replaces_the_first(rendered):
    stale = rendered / "kubernetes" / "Deployment-removed-model.yaml"
    stale.write_text("kind: Deployment\n")
    assert render.main(["--out", str(rendered)]) == 0
    assert not stale.exists()


def test_bad_stack_is_a_usage_error(capsys, tmp_path):
    assert render.main(["--stack", "nope", "--out", str(tmp_path)]) == 2
    assert "Pulumi.nope.yaml not found" in capsys.readouterr().err


def test_help_runs_from_the_command_line():
    result = subprocess.run([sys.executable, "-m", "tools.render", "--help"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--out" in result.stdout and "--charts" in result.stdout


# --- Helm: where it is, which chart, which command line -------------------------------------------------------

def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_helm_is_found_in_order_env_tools_path(tmp_path):
    tools_helm, path_helm = executable(tmp_path / "tools-helm"), executable(tmp_path / "helm")
    assert render.find_helm({"HELM": str(path_helm), "PATH": ""}, local=tools_helm) == str(path_helm)
    assert render.find_helm({"PATH": str(tmp_path)}, local=tools_helm) == str(tools_helm)
    assert render.find_helm({"PATH": str(tmp_path)}, local=tmp_path / "absent") == str(path_helm)


def test_missing_helm_is_a_clear_error(tmp_path, capsys, monkeypatch):
    with pytest.raises(render.HelmError, match=r"make \.tools/helm.*tools/get-helm\.sh"):
        render.find_helm({"PATH": str(tmp_path)}, local=tmp_path / "absent")
    with pytest.raises(render.HelmError, match="HELM=/nowhere/helm"):
        render.find_helm({"HELM": "/nowhere/helm"}, local=tmp_path / "absent")
    monkeypatch.setenv("HELM", "/nowhere/helm")
    assert render.main(["--out", str(tmp_path / "out")]) == 1
    assert "tools/get-helm.sh" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def spec(chart: str, version: str, repo: str | None = None, skip_crds: bool = False) -> render.ReleaseSpec:
    return render.ReleaseSpec(name="r", namespace="ns", chart=chart, version=version, repo=repo, values={},
                              skip_crds=skip_crds)


@pytest.mark.parametrize("chart, version, repo", [
    ("oci://public.ecr.aws/karpenter/karpenter", "1.14.1", None),
    ("oci://public.ecr.aws/karpenter/karpenter-crd", "1.14.1", None),
    ("oci://public.ecr.aws/neuron/neuron-helm-chart", "1.5.0", None),
    ("keda", "2.20.2", "https://kedacore.github.io/charts"),
    ("grafana", "12.11.1", "https://grafana-community.github.io/helm-charts"),
    ("kube-state-metrics", "8.4.0", "https://prometheus-community.github.io/helm-charts"),
])
def test_a_chart_is_taken_from_its_source_directory_by_name_and_version(chart, version, repo):
    name = chart.rsplit("/", 1)[-1]
    assert render.local_chart(spec(chart, version, repo)) == render.CHART_SOURCES / f"{name}-{version}"
    command = render.helm_command("helm", spec(chart, version, repo), "v.yaml", "1.35",
                                  render.local_chart(spec(chart, version, repo)))
    assert command[:4] == ["helm", "template", "r", str(render.CHART_SOURCES / f"{name}-{version}")]
    assert "--repo" not in command


def test_without_a_source_directory_the_chart_comes_from_its_registry(tmp_path):
    oci = spec("oci://public.ecr.aws/karpenter/karpenter", "1.14.1", skip_crds=True)
    assert render.local_chart(oci, tmp_path) is None
    assert render.helm_command("helm", oci, "v.yaml", "1.35", None) == [
        "helm", "template", "r", "oci://public.ecr.aws/karpenter/karpenter", "--namespace", "ns",
        "--version", "1.14.1", "--values", "v.yaml", "--kube-version", "1.35", "--skip-crds", "--skip-tests"]
    https = spec("grafana", "12.11.1", "https://grafana-community.github.io/helm-charts")
    assert render.local_chart(https, tmp_path) is None
    assert render.helm_command("helm", https, "v.yaml", "1.33", None) == [
        "helm", "template", "r", "grafana", "--repo", "https://grafana-community.github.io/helm-charts",
        "--namespace", "ns", "--version", "12.11.1", "--values", "v.yaml", "--kube-version", "1.33",
        "--include-crds", "--skip-tests"]


def test_a_source_directory_of_another_chart_or_version_is_refused(tmp_path):
    (tmp_path / "karpenter-1.14.1").mkdir()
    (tmp_path / "karpenter-1.14.1" / "Chart.yaml").write_text("name: karpenter\nversion: 1.13.0\n")
    with pytest.raises(render.HelmError, match="not karpenter 1.14.1"):
        render.local_chart(spec("oci://public.ecr.aws/karpenter/karpenter", "1.14.1"), tmp_path)


def test_release_inputs_become_the_spec_helm_gets(dev_deployment):
    releases = {r.inputs["name"]: r for r in dev_deployment.helm_releases()}
    karpenter = render.ReleaseSpec.of(releases["karpenter"])
    assert (karpenter.chart_name, karpenter.namespace, karpenter.skip_crds) == ("karpenter", "kube-system", True)
    crds = render.ReleaseSpec.of(releases["karpenter-crd"])
    assert (crds.chart_name, crds.skip_crds, crds.values) == ("karpenter-crd", False, {})
    release = next(iter(dev_deployment.helm_releases()))
    nulls = type(release)(**{**release.__dict__, "inputs": {**release.inputs, "values": {"a": None, "b": [1, None]}}})
    assert render.ReleaseSpec.of(nulls).values == {"b": [1]}  # pulumi-kubernetes drops nulls (allowNullValues unset)
