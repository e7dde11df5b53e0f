"""Every IAM policy document the program writes, linted with parliament.

No finding is allowed (unknown action, prefix, condition or principal, malformed document or ARN,
privilege escalation, ...) except those named, with the reason, in components.karpenter_policy.
"""

from __future__ import annotations

import json

import pytest
from parliament import analyze_policy_string

from components import karpenter_policy
from components.observability import workspace

# Findings parliament reports that are right as written, each explained beside its statement.
KNOWN_LINT_FINDINGS = {**karpenter_policy.KNOWN_LINT_FINDINGS, **workspace.KNOWN_LINT_FINDINGS}


def _documents(deployment):
    """(resource name, document) for each trust policy, role policy and queue policy registered."""
    documents = []
    for resource in deployment.resources:
        for field in ("assumeRolePolicy", "policy"):
            text = resource.inputs.get(field)
            if isinstance(text, str) and '"Statement"' in text:
                document = json.loads(text)
                if field == "assumeRolePolicy":
                    # Parliament lints identity and resource policies. A trust policy is the role's resource
                    # policy and its resource is the role itself; naming it lets every other check run.
                    for statement in document["Statement"]:
                        statement["Resource"] = resource.outputs["arn"]
                documents.append((f"{resource.name}.{field}", document))
    return documents


def _findings(statement):
    single = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    return {finding.issue for finding in analyze_policy_string(single).findings}


def test_the_program_writes_the_expected_policy_documents(dev_deployment):
    names = sorted(name for name, _ in _documents(dev_deployment))
    assert names == sorted([
        "trainium-vllm-dev-control-plane.assumeRolePolicy", "trainium-vllm-dev-system-node.assumeRolePolicy",
        "karpenter-node.assumeRolePolicy", "karpenter-controller.assumeRolePolicy",
        "trainium-vllm-dev-control-plane-secrets-key.policy", "karpenter-controller.policy",
        "karpenter-interruptions.policy",
        # The model store: its bucket and endpoint policies, the sync Job's and the model pods' roles.
        "model-store-bucket.policy", "model-store-s3.policy",
        "mistral-sync-writer.assumeRolePolicy", "mistral-sync-writer.policy",
        "mistral-reader.assumeRolePolicy", "mistral-reader.policy",
        # Observability: the alerts key and topic, and Grafana's read-only role.
        "metrics-alerts.policy", "metrics-alerts.policy",
        "monitoring-grafana.assumeRolePolicy", "monitoring-grafana.policy",
    ])


def test_no_parliament_finding_but_the_known_ones(dev_deployment):
    unexplained = []
    seen_known = set()
    for name, document in _documents(dev_deployment):
        assert not analyze_policy_string(json.dumps(document)).findings or name in (
            "karpenter-controller.policy", "metrics-alerts.policy")
        for statement in document["Statement"]:
            for issue in _findings(statement):
                key = (issue, statement.get("Sid"))
                if key in KNOWN_LINT_FINDINGS:
                    seen_known.add(key)
                else:
                    unexplained.append((name, *key))
    assert unexplained == []
    # Every explained finding still happens: a stale explanation would hide a change.
    assert seen_known == set(KNOWN_LINT_FINDINGS)


def test_no_allow_statement_grants_a_wildcard_action(dev_deployment):
    for name, document in _documents(dev_deployment):
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement.get("Sid") == "AccountAdministers":
                # A key policy must let the account administer the key, or nobody can (AWS KMS default policy).
                assert statement["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}, name
            elif statement["Effect"] == "Allow":
                assert not [a for a in actions if a == "*" or a.endswith(":*")], name
            else:
                # The only Denies: refuse every call without TLS, so they must cover every action.
                assert (name, actions) in [("karpenter-interruptions.policy", ["sqs:*"]),
                                           ("model-store-bucket.policy", ["s3:*"]),
                                           ("metrics-alerts.policy", ["sns:Publish"])]


@pytest.mark.parametrize("statement, issue", [
    ({"Effect": "Allow", "Action": "ec2:RunInstancez", "Resource": "*"}, "UNKNOWN_ACTION"),
    ({"Effect": "Allow", "Action": "ec3:RunInstances", "Resource": "*"}, "UNKNOWN_PREFIX"),
    ({"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/x",
      "Condition": {"StringEquals": {"iam:PassedToServicez": "ec2.amazonaws.com"}}}, "UNKNOWN_CONDITION_FOR_ACTION"),
    ({"Effect": "Allow", "Action": "s3:GetObject"}, "MALFORMED"),
])
def test_the_linter_catches_what_it_must(statement, issue):
    assert issue in _findings(statement)
