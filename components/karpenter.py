"""Karpenter: the controller, its AWS identity and interruption queue, and the node identity it launches with.

It knows nothing about Neuron; node pools are separate components. They must depend on `ready`, so that
`pulumi destroy` deletes every NodePool and EC2NodeClass while the controller still runs: their finalizers
terminate the instances Karpenter launched, which are not in Pulumi's state. Only then go the controller,
its IAM role and queue, and the cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import iam, karpenter_policy, versions

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"
RELEASE_NAME = "karpenter"  # also the chart's fullname, which names the service account and Deployment

# What EC2 tells Karpenter about, through EventBridge, so it can drain a node before it goes away.
INTERRUPTION_EVENTS = {
    "health": ("aws.health", "AWS Health Event"),
    "spot-interruption": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "state-change": ("aws.ec2", "EC2 Instance State-change Notification"),
    "capacity-reservation-interruption": ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}


@dataclass
class KarpenterArgs:
    cluster_name: pulumi.Input[str]
    cluster_endpoint: pulumi.Input[str]
    k8s_provider: k8s.Provider
    # Where the controller runs: never on nodes it manages.
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    # What the controller needs running before it is installed: system nodes, CoreDNS, Pod Identity agent.
    controller_prerequisites: Sequence[pulumi.Resource] = ()
    replicas: int = 2
    tags: dict[str, str] = field(default_factory=dict)


class Karpenter(pulumi.ComponentResource):
    """The Karpenter controller with Pod Identity, interruption handling and a node role for its nodes."""

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        region = aws.get_region_output(opts=invoke).region
        account_id = aws.get_caller_identity_output(opts=invoke).account_id

        # Node identity: the role EC2NodeClasses name; Karpenter makes instance profiles from it.
        self.node_role = iam.node_role(f"{name}-node", self, partition,
                                       "Nodes launched by Karpenter (EC2NodeClass.spec.role)")
        node_access = aws.eks.AccessEntry(f"{name}-node", aws.eks.AccessEntryArgs(
            cluster_name=args.cluster_name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",  # lets the nodes join: system:nodes, no access policy
            tags=args.tags,
        ), child)

        # Interruption handling: EventBridge -> SQS -> the controller drains the node in time.
        self.queue = aws.sqs.Queue(f"{name}-interruptions", aws.sqs.QueueArgs(
            name=pulumi.Output.concat(args.cluster_name, "-karpenter"),
            message_retention_seconds=300,  # an interruption notice is useless after five minutes
            sqs_managed_sse_enabled=True,
            tags=args.tags,
        ), child)
        queue_policy = aws.sqs.QueuePolicy(f"{name}-interruptions", aws.sqs.QueuePolicyArgs(
            queue_url=self.queue.url,
            policy=self.queue.arn.apply(lambda arn: json.dumps(karpenter_policy.interruption_queue_policy(arn))),
        ), child)
        for event, (source, detail_type) in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(f"{name}-{event}", aws.cloudwatch.EventRuleArgs(
                description=f"Karpenter interruption handling: {detail_type}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}),
                tags=args.tags,
            ), child)
            aws.cloudwatch.EventTarget(f"{name}-{event}", aws.cloudwatch.EventTargetArgs(
                rule=rule.name, arn=self.queue.arn, target_id="KarpenterInterruptionQueue",
            ), pulumi.ResourceOptions(parent=rule))

        # Controller identity: EKS Pod Identity for kube-system/karpenter, policy scoped to this cluster.
        controller = iam.pod_identity(
            f"{name}-controller", self, cluster_name=args.cluster_name, namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT, description="Karpenter controller (EKS Pod Identity)", tags=args.tags,
            policy=pulumi.Output.all(partition, region, account_id, args.cluster_name, self.node_role.arn,
                                     self.queue.arn).apply(
                lambda v: json.dumps(karpenter_policy.controller_policy(
                    partition=v[0], region=v[1], account_id=v[2], cluster_name=v[3], node_role_arn=v[4],
                    queue_arn=v[5]))))

        # The CRDs as their own chart, so chart upgrades upgrade them (Helm never upgrades a chart's crds/).
        crds = k8s.helm.v3.Release(f"{name}-crds", k8s.helm.v3.ReleaseArgs(
            name=f"{RELEASE_NAME}-crd",
            chart=f"{versions.KARPENTER_CHART}-crd",
            version=versions.KARPENTER_CHART_VERSION,
            namespace=NAMESPACE,
        ), pulumi.ResourceOptions(parent=self, provider=args.k8s_provider))

        self.values = {
            "settings": {
                "clusterName": args.cluster_name,
                "clusterEndpoint": args.cluster_endpoint,
                "interruptionQueue": self.queue.name,
            },
            "serviceAccount": {"name": SERVICE_ACCOUNT},
            "replicas": args.replicas,
            "nodeSelector": {"kubernetes.io/os": "linux", **args.node_selector},
            "tolerations": list(args.tolerations),
            "podDisruptionBudget": {"name": RELEASE_NAME, "maxUnavailable": 1},
            "controller": {
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
                # Pods cannot reach IMDS (hop limit 1), where Karpenter would otherwise look up its region.
                "env": [{"name": "AWS_REGION", "value": region}],
            },
        }
        self.release = k8s.helm.v3.Release(f"{name}-controller", k8s.helm.v3.ReleaseArgs(
            name=RELEASE_NAME,
            chart=versions.KARPENTER_CHART,
            version=versions.KARPENTER_CHART_VERSION,
            namespace=NAMESPACE,
            skip_crds=True,  # installed and upgraded by the CRD release above
            values=self.values,
        ), pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider,
            # Deleted before any of these on `pulumi destroy`, so the controller keeps its permissions,
            # its queue and its nodes' access until the last NodePool is gone.
            depends_on=[crds, controller.policy, controller.association, node_access, queue_policy,
                        *args.controller_prerequisites],
        ))

        self.node_role_name: pulumi.Output[str] = self.node_role.name
        self.queue_name: pulumi.Output[str] = self.queue.name
        # Every NodePool and EC2NodeClass depends on these.
        self.ready: list[pulumi.Resource] = [self.release]
        self.register_outputs({
            "nodeRoleName": self.node_role_name,
            "interruptionQueue": self.queue_name,
            "controllerRoleArn": controller.role.arn,
        })
