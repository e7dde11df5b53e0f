"""checkov's Kubernetes checks over everything the dev stack puts in the cluster, in one run: the program's own
objects (render/kubernetes/) and every object the Helm releases render (render/helm/<release>/).

A check that cannot apply to one of the program's objects is skipped on the object itself with checkov's
annotation and a reason; EXPECTED_SKIPS lists those, so each one is a visible decision. Findings on chart
objects are accepted only as listed, with reasons, in tests/checkov_skips.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from components.config import PROJECT_DIR, ModelConfig
from components.model_store import sync_job_name
from tests.checkov_skips import CHART_SKIPS
from tools import render

CHECKOV = os.environ.get("CHECKOV", str(PROJECT_DIR / ".venv-checkov" / "bin" / "checkov"))
# The only checks skipped on the program's own objects, and where (each with its reason on the object).
EXPECTED_SKIPS = {
    # Images pinned by tag (components/versions.py).
    *[("CKV_K8S_43", resource) for resource in (
        "Deployment.vllm.mistral", f"Job.vllm.{sync_job_name(ModelConfig())}", "DaemonSet.vllm.vllm-image-prepull",
        "DaemonSet.neuron-monitor.neuron-monitor")],
    # The pre-pull container only sleeps: nothing to probe.
    ("CKV_K8S_8", "DaemonSet.vllm.vllm-image-prepull"), ("CKV_K8S_9", "DaemonSet.vllm.vllm-image-prepull"),
    # neuron-monitor runs privileged, as upstream's manifest does (components/observability/monitoring.py).
    *[(check, "DaemonSet.neuron-monitor.neuron-monitor") for check in (
        "CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_29", "CKV_K8S_31",
        "CKV_K8S_37", "CKV_K8S_40")],
}


def checkov(directory) -> dict:
    assert os.path.exists(CHECKOV), f"checkov is not installed at {CHECKOV}: run `make test` (it installs it)"
    # --skip-download: no call to the vendor's API. No --quiet: skipped checks stay in the report.
    result = subprocess.run([CHECKOV, "--framework", "kubernetes", "--skip-download", "--output", "json",
                             "--directory", str(directory)], capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["results"]


# The negative control: a weakened copy of the model Deployment, checked in the same run, apart from the rest.
CONTROL = "negative-control"


@pytest.fixture(scope="module")
def rendered(dev_deployment, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkov")
    render.write(dev_deployment, out)
    deployment = yaml.safe_load((out / "kubernetes" / "Deployment-mistral.yaml").read_text())
    deployment["metadata"]["name"] = "weakened"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["securityContext"]
    del container["resources"]["limits"]["memory"]
    (out / CONTROL).mkdir()
    (out / CONTROL / "Deployment-weakened.yaml").write_text(yaml.safe_dump(deployment))
    return out


@pytest.fixture(scope="module")
def checkov_results(rendered):
    return checkov(rendered)  # the one run over everything


def under(results: dict, top: str) -> dict:
    """The part of checkov's results about the files under `top`/."""
    return {key: [c for c in results[key] if c["file_path"].lstrip("/").startswith(f"{top}/")]
            for key in ("passed_checks", "failed_checks", "skipped_checks")}


@pytest.fixture(scope="module")
def results(checkov_results):
    return {key: [c for c in checkov_results[key] if not c["file_path"].lstrip("/").startswith(f"{CONTROL}/")]
            for key in ("passed_checks", "failed_checks", "skipped_checks")}


def test_every_object_is_checked(rendered, results):
    """One run reads the program's objects and every release's: no file of a kind checkov checks is missed."""
    kinds = {str(p.relative_to(rendered)): yaml.safe_load(p.read_text())["kind"] for p in rendered.rglob("*.yaml")
             if p.name not in ("values.yaml", "release.yaml") and p.parent.name != CONTROL}
    checked = {c["file_path"].lstrip("/") for c in results["passed_checks"] + results["failed_checks"]}
    checked_kinds = {kinds[path] for path in checked}
    assert {"Deployment", "DaemonSet", "ClusterRole", "Service"} <= checked_kinds
    assert {path for path, kind in kinds.items() if kind in checked_kinds} == checked
    assert any(p.startswith("helm/") for p in checked) and any(p.startswith("kubernetes/") for p in checked)


def test_the_programs_objects_pass_checkov(results):
    own = under(results, "kubernetes")
    assert [(c["check_id"], c["resource"], c["check_name"]) for c in own["failed_checks"]] == []
    assert len(own["passed_checks"]) > 50
    skipped = {(c["check_id"], c["resource"]) for c in results["skipped_checks"]}
    assert skipped == EXPECTED_SKIPS
    for check in results["skipped_checks"]:
        assert len(check["check_result"]["suppress_comment"]) > 40, check  # a reason, not just a silence


def test_chart_objects_fail_only_the_accepted_checks(results):
    failed = {(c["check_id"], c["resource"]) for c in under(results, "helm")["failed_checks"]}
    accepted = set(CHART_SKIPS)
    assert failed == accepted, {
        "not accepted (fix by values, or add to tests/checkov_skips.py with a reason)": sorted(failed - accepted),
        "accepted but no longer failing (remove from tests/checkov_skips.py)": sorted(accepted - failed)}
    for (check, resource), reason in CHART_SKIPS.items():
        assert reason.startswith(("Upstream: ", "Values could: ")) and len(reason) > 40, (check, resource)


def test_checkov_catches_a_weakened_pod(checkov_results):
    failed = {c["check_id"] for c in under(checkov_results, CONTROL)["failed_checks"]}
    # Privilege escalation allowed, capabilities kept, a writable root filesystem, no memory limit.
    assert {"CKV_K8S_20", "CKV_K8S_37", "CKV_K8S_22", "CKV_K8S_13"} <= failed
