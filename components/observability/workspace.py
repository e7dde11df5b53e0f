"""Metrics and alerts in AWS: an Amazon Managed Service for Prometheus workspace, its managed collector reading
this cluster, the alert rules, and the workspace's alert manager sending to an encrypted SNS topic.

The collector is AWS's: no Prometheus runs in the cluster. It reaches the pods from network interfaces in
subnets of its own (Network.collector_subnets), so the model pods' NetworkPolicies can admit exactly it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import neuron
from components.observability.alertmanager import alertmanager_definition
from components.observability.alerts import ServedModel, alert_rules
from components.observability.scrape import scrape_configuration

# The user the managed collector authenticates as inside the cluster; with authentication mode API, AWS
# creates its access entry itself (Amazon Managed Service for Prometheus User Guide, "Configuring your
# Amazon EKS cluster" for managed collectors).
COLLECTOR_USER = "aps-collector-user"

# Where parliament (IAM linter, run by the tests) reports a finding on a statement below that is right as
# written, the finding and why.
KNOWN_LINT_FINDINGS: dict[tuple[str, str], str] = {
    ("RESOURCE_STAR", "AccountAdministers"): "In a key policy, '*' is the key itself (AWS KMS key policies).",
    ("RESOURCE_STAR", "AlertManagerEncrypts"): "In a key policy, '*' is the key itself (AWS KMS key policies).",
}


@dataclass
class MetricsWorkspaceArgs:
    cluster_name: pulumi.Input[str]
    # The cluster security group: the collector's interfaces join it and so reach every pod.
    cluster_security_group_id: pulumi.Input[str]
    collector_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    k8s_provider: k8s.Provider
    model_namespace: str
    models: Sequence[ServedModel]
    ttft_target_seconds: float
    neuron_device_limit: int
    kube_state_metrics_namespace: str
    neuron_monitor_namespace: str
    alert_emails: Sequence[str] = ()
    tags: dict[str, str] = field(default_factory=dict)


class MetricsWorkspace(pulumi.ComponentResource):
    """The workspace, its collector, rules and alert manager, and the alerts topic."""

    def __init__(self, name: str, args: MetricsWorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:MetricsWorkspace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        region = aws.get_region_output(opts=invoke).region
        account_id = aws.get_caller_identity_output(opts=invoke).account_id

        self.workspace = aws.amp.Workspace(f"{name}-workspace", aws.amp.WorkspaceArgs(
            alias=args.cluster_name, tags=args.tags,
        ), child)

        # Alerts: the workspace's alert manager publishes to SNS, encrypted with a key AMP may use.
        key = aws.kms.Key(f"{name}-alerts", aws.kms.KeyArgs(
            description="Alerts topic of the model servers' metrics workspace",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            policy=pulumi.Output.all(partition, account_id, self.workspace.arn).apply(
                lambda v: json.dumps(alerts_key_policy(partition=v[0], account_id=v[1], workspace_arn=v[2]))),
            tags=args.tags,
        ), child)
        self.topic = aws.sns.Topic(f"{name}-alerts", aws.sns.TopicArgs(
            kms_master_key_id=key.arn, tags=args.tags,
        ), child)
        topic_policy = aws.sns.TopicPolicy(f"{name}-alerts", aws.sns.TopicPolicyArgs(
            arn=self.topic.arn,
            policy=pulumi.Output.all(self.topic.arn, account_id, self.workspace.arn).apply(
                lambda v: json.dumps(alerts_topic_policy(topic_arn=v[0], account_id=v[1], workspace_arn=v[2]))),
        ), pulumi.ResourceOptions(parent=self.topic))
        for email in args.alert_emails:
            # Each address gets a confirmation mail from AWS; nothing is delivered until it is confirmed.
            aws.sns.TopicSubscription(f"{name}-alerts-{email}", aws.sns.TopicSubscriptionArgs(
                topic=self.topic.arn, protocol="email", endpoint=email,
            ), pulumi.ResourceOptions(parent=self.topic))
        aws.amp.AlertManagerDefinition(f"{name}-alert-manager", aws.amp.AlertManagerDefinitionArgs(
            workspace_id=self.workspace.id,
            definition=pulumi.Output.all(self.topic.arn, region).apply(lambda v: alertmanager_definition(v[0], v[1])),
        ), pulumi.ResourceOptions(parent=self, depends_on=[topic_policy]))
        aws.amp.RuleGroupNamespace(f"{name}-rules", aws.amp.RuleGroupNamespaceArgs(
            name="trainium-vllm",
            workspace_id=self.workspace.id,
            data=alert_rules(args.model_namespace, args.models, args.ttft_target_seconds,
                             neuron_device_limit=args.neuron_device_limit, trainium_nodepool=neuron.FIRST_CHOICE_POOL,
                             fallback_nodepool=neuron.INFERENTIA2_POOL),
            tags=args.tags,
        ), child)

        # What the collector may read in the cluster: pods, to find its targets, and their metrics.
        k8s_child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        role = k8s.rbac.v1.ClusterRole(f"{name}-collector", metadata={"name": "aps-collector-role"}, rules=[
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
        ], opts=k8s_child)
        binding = k8s.rbac.v1.ClusterRoleBinding(f"{name}-collector", metadata={"name": "aps-collector-user-role-binding"},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aps-collector-role"},
            subjects=[{"kind": "User", "name": COLLECTOR_USER, "apiGroup": "rbac.authorization.k8s.io"}],
            opts=pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(depends_on=[role])))
        self.scraper = aws.amp.Scraper(f"{name}-collector", aws.amp.ScraperArgs(
            alias=args.cluster_name,
            source=aws.amp.ScraperSourceArgs(eks=aws.amp.ScraperSourceEksArgs(
                cluster_arn=pulumi.Output.concat("arn:", partition, ":eks:", region, ":", account_id, ":cluster/",
                                                 args.cluster_name),
                subnet_ids=args.collector_subnet_ids,
                security_group_ids=[args.cluster_security_group_id],
            )),
            destination=aws.amp.ScraperDestinationArgs(amp=aws.amp.ScraperDestinationAmpArgs(
                workspace_arn=self.workspace.arn)),
            scrape_configuration=scrape_configuration(args.model_namespace, args.kube_state_metrics_namespace,
                                                      args.neuron_monitor_namespace),
            tags=args.tags,
        ), pulumi.ResourceOptions(
            parent=self, depends_on=[binding],
            # Creating and deleting a collector takes minutes (FACTS section 8).
            custom_timeouts=pulumi.CustomTimeouts(create="30m", delete="30m"),
        ))

        self.workspace_id: pulumi.Output[str] = self.workspace.id
        self.workspace_arn: pulumi.Output[str] = self.workspace.arn
        self.query_url: pulumi.Output[str] = pulumi.Output.concat(
            "https://aps-workspaces.", region, ".amazonaws.com/workspaces/", self.workspace.id)
        self.register_outputs({"workspaceId": self.workspace_id, "alertsTopic": self.topic.arn})


def alerts_topic_policy(*, topic_arn: str, account_id: str, workspace_arn: str) -> dict:
    """Only this workspace's alert manager publishes; nothing reaches the topic without TLS."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AlertManagerPublishes", "Effect": "Allow", "Principal": {"Service": "aps.amazonaws.com"},
         "Action": ["sns:Publish", "sns:GetTopicAttributes"], "Resource": topic_arn,
         "Condition": {"ArnEquals": {"aws:SourceArn": workspace_arn},
                       "StringEquals": {"aws:SourceAccount": account_id}}},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish",
         "Resource": topic_arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def alerts_key_policy(*, partition: str, account_id: str, workspace_arn: str) -> dict:
    """The account administers the key (without this statement nobody could); AMP encrypts with it."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministers", "Effect": "Allow",
         "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "AlertManagerEncrypts", "Effect": "Allow", "Principal": {"Service": "aps.amazonaws.com"},
         "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": "*",
         "Condition": {"ArnEquals": {"aws:SourceArn": workspace_arn},
                       "StringEquals": {"aws:SourceAccount": account_id}}},
    ]}


def query_policy(workspace_arn: str) -> dict:
    """Read-only access to the workspace's metrics: what Grafana and KEDA need, nothing more."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "QueryMetrics", "Effect": "Allow",
        "Action": ["aps:QueryMetrics", "aps:GetSeries", "aps:GetLabels", "aps:GetMetricMetadata"],
        "Resource": workspace_arn,
    }]}
