"""What every pod the stack runs shares: the user it runs as, Pod Security `restricted` contexts, the egress
each needs, and the checkov skips that apply to all of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi

# Not root, and above the UIDs a node's own users take. Neuron device files are world-read/writable
# (udev rule of aws-neuronx-dkms), so even the model server needs no root, capability or privilege.
USER_ID = 10001

POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"}}

# Egress every workload here needs: cluster DNS, and the EKS Pod Identity agent on the node for AWS
# credentials (FACTS section 2: a policy that allows only 443 blocks it). Never the instance metadata.
IMDS_CIDR = "169.254.169.254/32"
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"
DNS_EGRESS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
              "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
POD_IDENTITY_EGRESS = {"to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT_CIDR}}], "ports": [{"port": 80, "protocol": "TCP"}]}
INTERNET_HTTPS_EGRESS = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [IMDS_CIDR]}}],
                         "ports": [{"port": 443, "protocol": "TCP"}]}

# Checks checkov cannot see satisfied, or that do not apply; each one is skipped on the object, with why.
DIGEST_SKIP = {"CKV_K8S_43": "Images are pinned to release tags in components/versions.py; digests cannot be "
                             "resolved offline. Pin the digest there after pulling the image once."}


def checkov_skips(skips: Mapping[str, str]) -> dict[str, str]:
    """checkov's skip annotations (`checkov.io/skipN: <check>=<reason>`), one per check."""
    return {f"checkov.io/skip{i}": f"{check}={reason}" for i, (check, reason) in enumerate(sorted(skips.items()), 1)}


def restricted_security_context() -> dict[str, Any]:
    """Container security context that Pod Security `restricted` admits, with a read-only root."""
    return {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container(container: dict[str, Any]) -> dict[str, Any]:
    """A container under the restricted context. Images are pinned tags; `Always` only re-reads the manifest,
    layers already on the node are not pulled again."""
    return {"imagePullPolicy": "Always", **container, "securityContext": restricted_security_context()}


def env(variables: Mapping[str, pulumi.Input[str]]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in variables.items()]
