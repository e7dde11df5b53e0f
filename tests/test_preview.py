"""`pulumi preview` of a new stack, as in users' CI: every computed output (IDs, ARNs, the cluster's endpoint and
kubeconfig, generated passwords) is unknown, and the program must still plan everything, with nothing
computed from a value it does not have yet."""

from __future__ import annotations

import json

import pytest

from tools.offline import Deployment, run_program, stack_values


def _unknown(value) -> bool:
    return "Unknown" in json.dumps(value, default=lambda o: type(o).__name__)


@pytest.fixture(scope="module")
def preview() -> Deployment:
    return run_program(stack_values("dev"), preview=True)


def test_a_preview_plans_every_resource_an_update_creates(preview, dev_deployment):
    assert sorted(r.urn for r in preview.resources) == sorted(r.urn for r in dev_deployment.resources)


def test_computed_outputs_are_unknown_and_stay_so_downstream(preview):
    # Built from outputs: unknown in a preview, never a made-up value.
    assert _unknown(preview.one("eks:index:Cluster").inputs["vpcId"])
    assert _unknown(preview.one("pulumi:providers:kubernetes").inputs["kubeconfig"])
    assert _unknown(preview.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs["policy"])
    for name in ("apiKey", "grafanaAdminPassword", "kubeconfig", "modelStore", "metricsWorkspace"):
        assert preview.exports[name] is None, name


def test_what_the_settings_alone_decide_is_known_in_a_preview(preview, dev_deployment):
    """Reviewers see the real values where they do not depend on AWS: pools, pod specs, rules."""
    for kind, field in (("kubernetes:karpenter.sh/v1:NodePool", "spec"), ("kubernetes:core/v1:ResourceQuota", "spec"),
                        ("aws:amp/ruleGroupNamespace:RuleGroupNamespace", "data")):
        for planned in preview.of_type(kind):
            created = next(r for r in dev_deployment.of_type(kind) if r.urn == planned.urn)
            assert not _unknown(planned.inputs[field]) and planned.inputs[field] == created.inputs[field], planned.name
    assert preview.exports["clusterName"] == "trainium-vllm-dev"
