"""Every Kubernetes object the stack renders passes checkov's Kubernetes checks.

A check that cannot apply is skipped on the object itself with checkov's annotation and a reason; the
tests list those skips, so each one is a visible decision.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from components.config import PROJECT_DIR
from tools import render

CHECKOV = os.environ.get("CHECKOV", str(PROJECT_DIR / ".venv-checkov" / "bin" / "checkov"))
# The only checks skipped, and where.
EXPECTED_SKIPS = {("CKV_K8S_43", "Deployment.vllm.mistral")}


def checkov(directory) -> dict:
    assert os.path.exists(CHECKOV), f"checkov is not installed at {CHECKOV}: run `make test` (it installs it)"
    # --skip-download: no call to the vendor's API. No --quiet: skipped checks stay in the report.
    result = subprocess.run([CHECKOV, "--framework", "kubernetes", "--skip-download", "--output", "json",
                             "--directory", str(directory)], capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["results"]


@pytest.fixture(scope="module")
def rendered(dev_deployment, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkov")
    render.write(dev_deployment, out)
    return out / "kubernetes"


def test_rendered_objects_pass_checkov(rendered):
    results = checkov(rendered)
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == []
    assert len(results["passed_checks"]) > 50
    skipped = {(c["check_id"], c["resource"]) for c in results["skipped_checks"]}
    assert skipped == EXPECTED_SKIPS
    for check in results["skipped_checks"]:
        assert len(check["check_result"]["suppress_comment"]) > 40, check  # a reason, not just a silence


def test_checkov_catches_a_weakened_pod(rendered, tmp_path):
    deployment = yaml.safe_load((rendered / "Deployment-mistral.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["securityContext"]
    del container["resources"]["limits"]["memory"]
    (tmp_path / "Deployment-mistral.yaml").write_text(yaml.safe_dump(deployment))
    failed = {c["check_id"] for c in checkov(tmp_path)["failed_checks"]}
    # Privilege escalation allowed, capabilities kept, a writable root filesystem, no memory limit.
    assert {"CKV_K8S_20", "CKV_K8S_37", "CKV_K8S_22", "CKV_K8S_13"} <= failed
