"""tools.render: what it writes is what the program deploys, and it validates."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from components.config import PROJECT_DIR
from tests.schemas import core_problems, custom_resource_problems
from tools import render


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "dev"
    assert render.main(["--stack", "dev", "--out", str(out)]) == 0
    return out


def test_every_kubernetes_object_is_written_and_validates(rendered, dev_deployment):
    files = sorted(rendered.glob("kubernetes/*.yaml"))
    assert len(files) == len(dev_deployment.kubernetes_objects()) == 9
    for path in files:
        manifest = yaml.safe_load(path.read_text())
        assert list(manifest)[:3] == ["apiVersion", "kind", "metadata"]
        if manifest["apiVersion"].startswith("karpenter"):
            assert custom_resource_problems(manifest) == [], path.name
        else:
            assert core_problems(manifest) == [], path.name


def test_helm_releases_are_written_as_chart_version_and_values(rendered):
    releases = {p.stem: yaml.safe_load(p.read_text()) for p in rendered.glob("helm/*.yaml")}
    assert set(releases) == {"karpenter", "karpenter-crd", "neuron-device-plugin"}
    assert releases["karpenter"]["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert releases["karpenter"]["version"] == "1.14.1"
    assert releases["karpenter"]["values"]["settings"]["clusterName"] == "trainium-vllm-dev"
    assert releases["neuron-device-plugin"]["values"]["npd"] == {"enabled": False}


def test_aws_resources_are_summarised_with_what_they_wait_for(rendered):
    summary = (rendered / "aws-resources.md").read_text()
    assert "| EksCluster trainium-vllm-dev | `eks:index:Cluster` | trainium-vllm-dev-eks |" in summary
    row = next(line for line in summary.splitlines() if "| karpenter-node |" in line and "AccessEntry" in line)
    assert "trainium-vllm-dev-eks" in row  # the node access entry waits for the cluster


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
    assert result.returncode == 0 and "--out" in result.stdout
