"""The Karpenter v1 controller's IAM policy, scoped to one cluster.

Statement for statement the upstream reference (aws/karpenter-provider-aws, getting-started
cloudformation.yaml for v1.14: NodeLifecycle, IAMIntegration, EKSIntegration, Interruption, ZonalShift and
ResourceDiscovery), in one document. Karpenter tags everything it creates with the cluster and the
NodePool/EC2NodeClass, so writes are scoped by those tags; only reads that EC2 cannot scope use "*".
"""

from __future__ import annotations

from typing import Any

# Where parliament (IAM linter, run by the tests) reports a finding on a statement below that is right
# as written, the finding and why. Each is also commented beside its statement.
KNOWN_LINT_FINDINGS: dict[tuple[str, str], str] = {
    ("RESOURCE_MISMATCH", "AllowScopedEC2InstanceAccessActions"):
        "RunInstances/CreateFleet authorize each resource type separately; one statement lists the "
        "read-only inputs (image, subnet, ...), so not every action matches every resource.",
    ("RESOURCE_MISMATCH", "AllowScopedEC2LaunchTemplateAccessActions"):
        "Grants RunInstances/CreateFleet only the launch templates Karpenter made (by tag); the other "
        "resource types of those calls are granted by the statements beside it.",
    ("RESOURCE_MISMATCH", "AllowScopedEC2InstanceActionsWithTags"):
        "CreateLaunchTemplate only takes launch-template; RunInstances/CreateFleet the rest: one statement, "
        "one tag condition, as upstream.",
    ("RESOURCE_MISMATCH", "AllowSSMReadActions"):
        "The public AMI parameters live under the AWS-owned path parameter/aws/service/*, with no account.",
    ("RESOURCE_STAR", "AllowZonalShiftStatusReadOnly"):
        "arc-zonal-shift:GetManagedResource takes no resource ARN; the condition scopes it to this cluster.",
}


def controller_policy(*, partition: str, region: str, account_id: str, cluster_name: str,
                      node_role_arn: str, queue_arn: str) -> dict[str, Any]:
    ec2 = f"arn:{partition}:ec2:{region}"
    iam = f"arn:{partition}:iam::{account_id}"
    cluster_arn = f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster_name}"
    owned = f"kubernetes.io/cluster/{cluster_name}"
    created_by_karpenter = [f"{ec2}:*:{kind}/*" for kind in (
        "fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")]
    request_tags = {f"aws:RequestTag/{owned}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster_name}

    statements = [
        # -- node lifecycle -------------------------------------------------------------------------
        {
            # Parliament: RESOURCE_MISMATCH, see KNOWN_LINT_FINDINGS.
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Resource": [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*",
                         f"{ec2}:*:subnet/*", f"{ec2}:*:capacity-reservation/*", f"{ec2}:*:placement-group/*"],
        },
        {
            # Parliament: RESOURCE_MISMATCH, see KNOWN_LINT_FINDINGS.
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Resource": f"{ec2}:*:launch-template/*",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{owned}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            # Parliament: RESOURCE_MISMATCH, see KNOWN_LINT_FINDINGS.
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Resource": created_by_karpenter,
            "Condition": {
                "StringEquals": request_tags,
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": created_by_karpenter,
            "Condition": {
                "StringEquals": {**request_tags,
                                 "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": f"{ec2}:*:instance/*",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{owned}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]},
            },
        },
        {
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{owned}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
        # -- IAM: pass the node role, manage the instance profiles made from EC2NodeClass.spec.role --
        {
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": node_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
        },
        {
            "Sid": "AllowScopedInstanceProfileCreationActions",
            "Effect": "Allow",
            "Action": "iam:CreateInstanceProfile",
            "Resource": f"{iam}:instance-profile/*",
            "Condition": {
                "StringEquals": {**request_tags, "aws:RequestTag/topology.kubernetes.io/region": region},
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileTagActions",
            "Effect": "Allow",
            "Action": "iam:TagInstanceProfile",
            "Resource": f"{iam}:instance-profile/*",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{owned}": "owned",
                                 "aws:ResourceTag/topology.kubernetes.io/region": region,
                                 **request_tags,
                                 "aws:RequestTag/topology.kubernetes.io/region": region},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                               "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileActions",
            "Effect": "Allow",
            "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                       "iam:DeleteInstanceProfile"],
            "Resource": f"{iam}:instance-profile/*",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/{owned}": "owned",
                                 "aws:ResourceTag/topology.kubernetes.io/region": region},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        # -- EKS: discover the API endpoint ----------------------------------------------------------
        {
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Action": "eks:DescribeCluster",
            "Resource": cluster_arn,
        },
        # -- interruption handling: read this cluster's queue only ---------------------------------
        {
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            "Resource": queue_arn,
        },
        # -- zonal shift (used when settings.enableZonalShift is on) -------------------------------
        {
            # Parliament: RESOURCE_STAR, see KNOWN_LINT_FINDINGS.
            "Sid": "AllowZonalShiftStatusReadOnly",
            "Effect": "Allow",
            "Action": "arc-zonal-shift:GetManagedResource",
            "Resource": "*",
            "Condition": {"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster_arn}},
        },
        # -- discovery: reads EC2 cannot scope by resource, limited to this region -----------------
        {
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Action": ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                       "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings",
                       "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups",
                       "ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
        },
        {
            # Parliament: RESOURCE_MISMATCH, see KNOWN_LINT_FINDINGS.
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*",
        },
        {
            "Sid": "AllowPricingReadActions",
            "Effect": "Allow",
            "Action": "pricing:GetProducts",
            "Resource": "*",
        },
        {
            "Sid": "AllowUnscopedInstanceProfileListAction",
            "Effect": "Allow",
            "Action": "iam:ListInstanceProfiles",
            "Resource": "*",
        },
        {
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Action": "iam:GetInstanceProfile",
            "Resource": f"{iam}:instance-profile/*",
        },
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def interruption_queue_policy(queue_arn: str) -> dict[str, Any]:
    """EventBridge (and SQS itself) may send; nothing may talk to the queue without TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowEventBridgeToSend",
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }
