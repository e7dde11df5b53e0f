"""Small helpers for IAM documents, so every role and policy reads the same way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws


def service_trust_policy(service: str, actions: tuple[str, ...] = ("sts:AssumeRole",)) -> str:
    """A trust policy letting one AWS service principal assume the role."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": list(actions) if len(actions) > 1 else actions[0],
        }],
    })


def policy_document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def managed_policy_arn(partition: pulumi.Input[str], name: str) -> pulumi.Output[str]:
    return pulumi.Output.concat("arn:", partition, ":iam::aws:policy/", name)


def node_role(name: str, parent: pulumi.Resource, partition: pulumi.Input[str],
              description: str) -> aws.iam.Role:
    """An EC2 node role with what every EKS node needs: join the cluster, pull images, run the VPC CNI."""
    role = aws.iam.Role(name, aws.iam.RoleArgs(
        description=description,
        assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
    ), pulumi.ResourceOptions(parent=parent))
    for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonEKS_CNI_Policy"):
        aws.iam.RolePolicyAttachment(f"{name}-{policy}", aws.iam.RolePolicyAttachmentArgs(
            role=role.name, policy_arn=managed_policy_arn(partition, policy),
        ), pulumi.ResourceOptions(parent=role))
    return role


@dataclass
class PodIdentity:
    """An IAM role that pods of one Kubernetes service account assume through EKS Pod Identity."""

    role: aws.iam.Role
    policy: aws.iam.RolePolicy
    association: aws.eks.PodIdentityAssociation


def pod_identity(name: str, parent: pulumi.Resource, *, cluster_name: pulumi.Input[str], namespace: pulumi.Input[str],
                 service_account: pulumi.Input[str], policy: pulumi.Input[str], description: str,
                 tags: dict[str, str]) -> PodIdentity:
    """The role (trusted by the Pod Identity service only), its inline policy, and the association."""
    role = aws.iam.Role(name, aws.iam.RoleArgs(
        description=description,
        assume_role_policy=service_trust_policy("pods.eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession")),
        tags=tags,
    ), pulumi.ResourceOptions(parent=parent))
    role_policy = aws.iam.RolePolicy(name, aws.iam.RolePolicyArgs(role=role.name, policy=policy),
                                     pulumi.ResourceOptions(parent=role))
    association = aws.eks.PodIdentityAssociation(name, aws.eks.PodIdentityAssociationArgs(
        cluster_name=cluster_name, namespace=namespace, service_account=service_account, role_arn=role.arn,
        tags=tags,
    ), pulumi.ResourceOptions(parent=parent))
    return PodIdentity(role, role_policy, association)
