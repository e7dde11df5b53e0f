"""Karpenter: identities, interruption handling, the chart's values, and what it waits for."""

from __future__ import annotations

import json

import pytest
import yaml

from components.cluster import SYSTEM_NODE_LABEL
from components.karpenter import INTERRUPTION_EVENTS
from components.karpenter_policy import controller_policy
from tests.chart_values import unknown_keys
from tests.schemas import KARPENTER_SCHEMAS
RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
CLUSTER = "trainium-vllm-dev"
QUEUE_ARN_PREFIX = "arn:aws:sqs:us-west-2:123456789012:"

# The statements of Karpenter's reference controller policy for v1.14 (aws/karpenter-provider-aws,
# getting-started cloudformation.yaml), which ours must carry one for one.
UPSTREAM_SIDS = {
    "AllowScopedEC2InstanceAccessActions", "AllowScopedEC2LaunchTemplateAccessActions",
    "AllowScopedEC2InstanceActionsWithTags", "AllowScopedResourceCreationTagging", "AllowScopedResourceTagging",
    "AllowScopedDeletion", "AllowPassingInstanceRole", "AllowScopedInstanceProfileCreationActions",
    "AllowScopedInstanceProfileTagActions", "AllowScopedInstanceProfileActions", "AllowAPIServerEndpointDiscovery",
    "AllowInterruptionQueueActions", "AllowZonalShiftStatusReadOnly", "AllowRegionalReadActions",
    "AllowSSMReadActions", "AllowPricingReadActions", "AllowUnscopedInstanceProfileListAction",
    "AllowInstanceProfileReadActions",
}
# Where upstream, too, has no resource to scope by: reads, each limited by a condition where EC2 allows.
UNSCOPED_READS = {"AllowZonalShiftStatusReadOnly", "AllowRegionalReadActions", "AllowPricingReadActions",
                  "AllowUnscopedInstanceProfileListAction"}


@pytest.fixture(scope="module")
def deployment(dev_deployment):
    return dev_deployment


def _statements(registration, field="policy"):
    return {s["Sid"]: s for s in json.loads(registration.inputs[field])["Statement"]}


def _controller_release(deployment):
    return deployment.one(RELEASE, "karpenter-controller")


def test_controller_role_is_trusted_by_pod_identity_only(deployment):
    trust = json.loads(deployment.one(ROLE, "karpenter-controller").inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                                   "Action": ["sts:AssumeRole", "sts:TagSession"]}]


def test_node_role_is_trusted_by_ec2_and_has_the_node_policies(deployment):
    role = deployment.one(ROLE, "karpenter-node")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]
    attached = sorted(a.inputs["policyArn"].rsplit("/", 1)[1]
                      for a in deployment.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                      if a.inputs["role"] == role.outputs["name"])
    assert attached == ["AmazonEC2ContainerRegistryPullOnly", "AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy"]


def test_node_role_can_join_the_cluster_through_an_ec2_linux_access_entry(deployment):
    entry = deployment.one("aws:eks/accessEntry:AccessEntry", "karpenter-node")
    assert entry.inputs["type"] == "EC2_LINUX"
    assert entry.inputs["principalArn"] == deployment.one(ROLE, "karpenter-node").outputs["arn"]
    assert entry.inputs["clusterName"] == CLUSTER


def test_controller_policy_is_the_upstream_policy_scoped_to_this_cluster(deployment):
    policy = deployment.one("aws:iam/rolePolicy:RolePolicy", "karpenter-controller")
    assert policy.inputs["role"] == deployment.one(ROLE, "karpenter-controller").outputs["name"]
    statements = _statements(policy)
    assert set(statements) == UPSTREAM_SIDS
    queue_arn = deployment.one("aws:sqs/queue:Queue").outputs["arn"]
    node_role_arn = deployment.one(ROLE, "karpenter-node").outputs["arn"]
    expected = controller_policy(partition="aws", region="us-west-2", account_id="123456789012",
                                 cluster_name=CLUSTER, node_role_arn=node_role_arn, queue_arn=queue_arn)
    assert json.loads(policy.inputs["policy"]) == expected


def test_controller_policy_has_no_wildcard_where_upstream_scopes(deployment):
    statements = _statements(deployment.one("aws:iam/rolePolicy:RolePolicy", "karpenter-controller"))
    for sid, statement in statements.items():
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if sid in UNSCOPED_READS:
            assert resources == ["*"]
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(a.split(":")[1].startswith(("Describe", "Get", "List")) for a in actions), sid
            continue
        assert "*" not in resources, sid
        # Writes are scoped by the cluster's ownership tag or to this cluster's own resources.
        text = json.dumps(statement)
        assert (f"kubernetes.io/cluster/{CLUSTER}" in text or CLUSTER in text
                or statement["Resource"] == deployment.one(ROLE, "karpenter-node").outputs["arn"]
                or sid in {"AllowScopedEC2InstanceAccessActions", "AllowSSMReadActions",
                           "AllowInstanceProfileReadActions"}), sid
    assert statements["AllowRegionalReadActions"]["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-west-2"}}
    assert statements["AllowAPIServerEndpointDiscovery"]["Resource"] == \
        f"arn:aws:eks:us-west-2:123456789012:cluster/{CLUSTER}"
    assert statements["AllowInterruptionQueueActions"]["Resource"].startswith(QUEUE_ARN_PREFIX)
    assert statements["AllowPassingInstanceRole"]["Resource"] == deployment.one(ROLE, "karpenter-node").outputs["arn"]
    deletion = statements["AllowScopedDeletion"]["Condition"]
    assert deletion["StringEquals"] == {f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned"}


def test_pod_identity_association_matches_the_chart_service_account(deployment):
    association = deployment.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller")
    release = _controller_release(deployment)
    assert association.inputs["namespace"] == release.inputs["namespace"] == "kube-system"
    # The chart names its service account serviceAccount.name, or its fullname (the release name).
    assert association.inputs["serviceAccount"] == release.inputs["values"]["serviceAccount"]["name"] == "karpenter"
    assert release.inputs["name"] == "karpenter"
    assert association.inputs["roleArn"] == deployment.one(ROLE, "karpenter-controller").outputs["arn"]
    assert association.inputs["clusterName"] == CLUSTER


def test_interruption_queue_keeps_notices_briefly_and_encrypts_them(deployment):
    queue = deployment.one("aws:sqs/queue:Queue")
    assert queue.inputs["messageRetentionSeconds"] == 300
    assert queue.inputs["sqsManagedSseEnabled"] is True
    policy = deployment.one("aws:sqs/queuePolicy:QueuePolicy")
    assert policy.inputs["queueUrl"] == queue.outputs["url"]
    allow, deny = json.loads(policy.inputs["policy"])["Statement"]
    assert allow["Effect"] == "Allow" and allow["Action"] == "sqs:SendMessage"
    assert allow["Principal"] == {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]}
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert allow["Resource"] == deny["Resource"] == queue.outputs["arn"]


def test_every_interruption_event_reaches_the_queue(deployment):
    queue = deployment.one("aws:sqs/queue:Queue")
    rules = deployment.of_type("aws:cloudwatch/eventRule:EventRule")
    targets = deployment.of_type("aws:cloudwatch/eventTarget:EventTarget")
    patterns = sorted((json.loads(r.inputs["eventPattern"])["source"][0],
                       json.loads(r.inputs["eventPattern"])["detail-type"][0]) for r in rules)
    assert patterns == sorted([
        ("aws.health", "AWS Health Event"),
        ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
        ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
        ("aws.ec2", "EC2 Instance State-change Notification"),
        ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
    ])
    assert len(INTERRUPTION_EVENTS) == len(rules) == len(targets) == 5
    for rule in rules:
        (target,) = [t for t in targets if t.inputs["rule"] == rule.outputs["name"]]
        assert target.inputs["arn"] == queue.outputs["arn"]


def test_chart_values_carry_cluster_name_endpoint_and_queue_name(deployment):
    settings = _controller_release(deployment).inputs["values"]["settings"]
    cluster = deployment.one("eks:index:Cluster")
    assert settings["clusterName"] == cluster.inputs["name"] == CLUSTER
    assert settings["clusterEndpoint"] == cluster.outputs["core"]["endpoint"]
    assert settings["clusterEndpoint"].startswith("https://")
    # The queue's name, not its URL or ARN.
    assert settings["interruptionQueue"] == deployment.one("aws:sqs/queue:Queue").outputs["name"]


def test_chart_and_crds_are_pinned(deployment):
    release, crds = _controller_release(deployment), deployment.one(RELEASE, "karpenter-crds")
    assert release.inputs["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert crds.inputs["chart"] == "oci://public.ecr.aws/karpenter/karpenter-crd"
    assert release.inputs["version"] == crds.inputs["version"] == "1.14.1"
    assert release.inputs["skipCrds"] is True
    assert crds.urn in release.dependencies


def test_controller_runs_on_system_nodes_with_requests_and_a_disruption_budget(deployment):
    values = _controller_release(deployment).inputs["values"]
    group = deployment.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert SYSTEM_NODE_LABEL.items() <= values["nodeSelector"].items()
    assert group["labels"].items() <= values["nodeSelector"].items()
    assert [t["key"] for t in values["tolerations"]] == [t["key"] for t in group["taints"]]
    assert "affinity" not in values  # the chart's default keeps it off nodes Karpenter manages
    assert values["controller"]["resources"]["requests"]["cpu"]
    assert values["controller"]["resources"]["requests"]["memory"] == values["controller"]["resources"]["limits"]["memory"]
    assert values["podDisruptionBudget"]["maxUnavailable"] == 1
    assert values["replicas"] == 2 <= group["scalingConfig"]["desiredSize"]


def test_every_chart_value_is_a_real_key_of_the_chart(deployment):
    defaults = yaml.safe_load((KARPENTER_SCHEMAS / "chart-values.yaml").read_text())
    values = _controller_release(deployment).inputs["values"]
    assert unknown_keys(values, defaults) == []
    # The check itself catches a misspelt key at any depth.
    assert unknown_keys({"settings": {"clusterNmae": "x"}, "replica": 2}, defaults) == ["settings.clusterNmae", "replica"]


def test_controller_is_installed_only_after_what_it_needs(deployment):
    release = _controller_release(deployment)
    needed = [
        deployment.one("aws:eks/nodeGroup:NodeGroup"),                            # somewhere to run
        deployment.one("aws:eks/addon:Addon", f"{CLUSTER}-coredns"),              # DNS
        deployment.one("aws:eks/addon:Addon", f"{CLUSTER}-pod-identity-agent"),   # its credentials
        deployment.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller"),
        deployment.one("aws:iam/rolePolicy:RolePolicy", "karpenter-controller"),
        deployment.one("aws:eks/accessEntry:AccessEntry", "karpenter-node"),      # its nodes can join
        deployment.one("aws:sqs/queuePolicy:QueuePolicy"),
        deployment.one(RELEASE, "karpenter-crds"),
    ]
    for resource in needed:
        # A dependency is also what `pulumi destroy` deletes only after the release.
        assert deployment.depends_on(release, resource), resource.name


# Each statement's actions in Karpenter's reference policy for v1.14.1, written out here (not derived from
# components/karpenter_policy.py): aws/karpenter-provider-aws tag v1.14.1, website/content/en/docs/
# getting-started/getting-started-with-karpenter/cloudformation.yaml (NodeLifecycle, IAMIntegration,
# EKSIntegration, Interruption, ZonalShift and ResourceDiscovery policies).
UPSTREAM_ACTIONS = {
    "AllowScopedEC2InstanceAccessActions": {"ec2:RunInstances", "ec2:CreateFleet"},
    "AllowScopedEC2LaunchTemplateAccessActions": {"ec2:RunInstances", "ec2:CreateFleet"},
    "AllowScopedEC2InstanceActionsWithTags": {"ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"},
    "AllowScopedResourceCreationTagging": {"ec2:CreateTags"},
    "AllowScopedResourceTagging": {"ec2:CreateTags"},
    "AllowScopedDeletion": {"ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"},
    "AllowPassingInstanceRole": {"iam:PassRole"},
    "AllowScopedInstanceProfileCreationActions": {"iam:CreateInstanceProfile"},
    "AllowScopedInstanceProfileTagActions": {"iam:TagInstanceProfile"},
    "AllowScopedInstanceProfileActions": {"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile",
                                          "iam:DeleteInstanceProfile"},
    "AllowAPIServerEndpointDiscovery": {"eks:DescribeCluster"},
    "AllowInterruptionQueueActions": {"sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"},
    "AllowZonalShiftStatusReadOnly": {"arc-zonal-shift:GetManagedResource"},
    "AllowRegionalReadActions": {"ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                                 "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings",
                                 "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates",
                                 "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                                 "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"},
    "AllowSSMReadActions": {"ssm:GetParameter"},
    "AllowPricingReadActions": {"pricing:GetProducts"},
    "AllowUnscopedInstanceProfileListAction": {"iam:ListInstanceProfiles"},
    "AllowInstanceProfileReadActions": {"iam:GetInstanceProfile"},
}


def test_controller_policy_actions_are_upstreams_one_for_one(deployment):
    statements = _statements(deployment.one("aws:iam/rolePolicy:RolePolicy", "karpenter-controller"))
    actions = {sid: {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"])
               for sid, s in statements.items()}
    assert actions == UPSTREAM_ACTIONS
    assert set(UPSTREAM_ACTIONS) == UPSTREAM_SIDS
