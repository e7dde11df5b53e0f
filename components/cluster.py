"""The EKS cluster: control plane, a small system node group, the add-ons, and a Kubernetes provider.

Model servers never run on the system nodes: those carry a taint only system add-ons tolerate, and
Karpenter launches Neuron nodes for the models separately.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components import iam
from components.network import DISCOVERY_TAG

# System nodes: labelled for the add-ons that belong there, tainted so nothing else lands on them.
SYSTEM_NODE_LABEL = {"trainium-vllm/node-role": "system"}
SYSTEM_TAINT_KEY = "CriticalAddonsOnly"
SYSTEM_TOLERATIONS = [{"key": SYSTEM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
CONTROL_PLANE_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
CLUSTER_ADMIN_POLICY = "AmazonEKSClusterAdminPolicy"


@dataclass
class EksClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    public_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    admin_principal_arns: Sequence[str] = ()
    public_access_cidrs: Sequence[str] = ("0.0.0.0/0",)
    # Two small nodes: CoreDNS and the two Karpenter replicas spread across them.
    system_node_instance_types: Sequence[str] = ("m6i.large",)
    system_node_count: int = 2
    log_retention_days: int = 30
    tags: dict[str, str] = field(default_factory=dict)


class EksCluster(pulumi.ComponentResource):
    """An EKS cluster (access entries, encrypted secrets, control-plane logs) and its system node group."""

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:EksCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition

        secrets_key = aws.kms.Key(f"{name}-secrets", aws.kms.KeyArgs(
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=7,  # the shortest AWS allows: `pulumi destroy` should not linger
            tags=args.tags,
        ), child)

        # EKS creates this log group on its own when logging is on, and then it outlives `pulumi destroy`.
        # Creating it first makes it ours, with a retention.
        log_group = aws.cloudwatch.LogGroup(f"{name}-control-plane", aws.cloudwatch.LogGroupArgs(
            name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=args.log_retention_days,
            tags=args.tags,
        ), child)

        service_role = aws.iam.Role(f"{name}-control-plane", aws.iam.RoleArgs(
            description=f"EKS control plane of {args.cluster_name}",
            assume_role_policy=iam.service_trust_policy("eks.amazonaws.com"),
            tags=args.tags,
        ), child)
        aws.iam.RolePolicyAttachment(f"{name}-control-plane-AmazonEKSClusterPolicy", aws.iam.RolePolicyAttachmentArgs(
            role=service_role.name, policy_arn=iam.managed_policy_arn(partition, "AmazonEKSClusterPolicy"),
        ), pulumi.ResourceOptions(parent=service_role))
        secrets_access = aws.iam.RolePolicy(f"{name}-control-plane-secrets-key", aws.iam.RolePolicyArgs(
            role=service_role.name,
            policy=secrets_key.arn.apply(lambda arn: iam.policy_document([{
                "Sid": "EnvelopeEncryptionOfSecrets",
                "Effect": "Allow",
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"],
                "Resource": arn,
            }])),
        ), pulumi.ResourceOptions(parent=service_role))

        self.cluster = eks.Cluster(f"{name}-eks", eks.ClusterArgs(
            name=args.cluster_name,
            version=args.kubernetes_version,
            service_role=service_role,
            vpc_id=args.vpc_id,
            private_subnet_ids=args.private_subnet_ids,
            public_subnet_ids=args.public_subnet_ids,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(args.public_access_cidrs),
            authentication_mode=eks.AuthenticationMode.API,
            access_entries={
                f"admin-{i}": eks.AccessEntryArgs(
                    principal_arn=arn,
                    access_policies={"cluster-admin": eks.AccessPolicyAssociationArgs(
                        policy_arn=pulumi.Output.concat(
                            "arn:", partition, ":eks::aws:cluster-access-policy/", CLUSTER_ADMIN_POLICY),
                        access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    )},
                )
                for i, arn in enumerate(args.admin_principal_arns)
            },
            enabled_cluster_log_types=CONTROL_PLANE_LOG_TYPES,
            encryption_config_key_arn=secrets_key.arn,
            # Every add-on is an EKS-managed add-on, created below or by pulumi-eks (vpc-cni, kube-proxy).
            bootstrap_self_managed_addons=False,
            # Nodes, system and Karpenter's, share the security group EKS creates for the cluster.
            skip_default_security_groups=True,
            skip_default_node_group=True,
            create_oidc_provider=False,  # workloads get AWS access through EKS Pod Identity
            # Network-policy enforcement in the VPC CNI: without it NetworkPolicies are inert.
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags=args.tags,
        ), pulumi.ResourceOptions(parent=self, depends_on=[log_group, secrets_access]))

        # The name we gave the cluster, as an Output that depends on it, so consumers wait for the cluster.
        self.name: pulumi.Output[str] = self.cluster.urn.apply(lambda _: args.cluster_name)
        self.endpoint: pulumi.Output[str] = self.cluster.core.endpoint
        self.security_group_id: pulumi.Output[str] = self.cluster.cluster_security_group_id
        self.kubeconfig: pulumi.Output[str] = self.cluster.kubeconfig_json

        # Karpenter launches nodes into the subnets, and with the security groups, carrying this tag:
        # the private subnets (Network) and the cluster security group.
        self.node_discovery_tags: dict[str, str] = {DISCOVERY_TAG: args.cluster_name}
        aws.ec2.Tag(f"{name}-security-group-discovery", aws.ec2.TagArgs(
            resource_id=self.security_group_id, key=DISCOVERY_TAG, value=args.cluster_name,
        ), child)

        self.pod_identity_agent = aws.eks.Addon(f"{name}-pod-identity-agent", aws.eks.AddonArgs(
            cluster_name=self.name,
            addon_name="eks-pod-identity-agent",
            addon_version=_default_addon_version(self, "eks-pod-identity-agent", args.kubernetes_version),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
        ), child)

        self.system_node_role = iam.node_role(f"{name}-system-node", self, partition,
                                              f"System nodes of EKS cluster {args.cluster_name}")
        launch_template = aws.ec2.LaunchTemplate(f"{name}-system-node", aws.ec2.LaunchTemplateArgs(
            description=f"System nodes of EKS cluster {args.cluster_name}",
            update_default_version=True,
            # IMDSv2 only, and out of reach of pods (hop limit 1): pods use Pod Identity, not the node role.
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda",
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=40, volume_type="gp3", encrypted="true", delete_on_termination="true",
                ),
            )],
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="instance", tags={"Name": f"{args.cluster_name}-system", **args.tags},
            )],
            tags=args.tags,
        ), child)
        self.system_node_group = aws.eks.NodeGroup(f"{name}-system", aws.eks.NodeGroupArgs(
            cluster_name=self.name,
            node_role_arn=self.system_node_role.arn,
            subnet_ids=args.private_subnet_ids,
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=list(args.system_node_instance_types),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=launch_template.id, version=launch_template.latest_version.apply(str),
            ),
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=args.system_node_count, desired_size=args.system_node_count,
                max_size=args.system_node_count + 1,
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=SYSTEM_NODE_LABEL,
            taints=[aws.eks.NodeGroupTaintArgs(key=SYSTEM_TAINT_KEY, value="true", effect="NO_SCHEDULE")],
            tags=args.tags,
        ), pulumi.ResourceOptions(parent=self, depends_on=[self.system_node_role]))

        # CoreDNS needs nodes to become ACTIVE, so it comes after the system node group, and stays on it.
        self.coredns = aws.eks.Addon(f"{name}-coredns", aws.eks.AddonArgs(
            cluster_name=self.name,
            addon_name="coredns",
            addon_version=_default_addon_version(self, "coredns", args.kubernetes_version),
            configuration_values=json.dumps({"nodeSelector": SYSTEM_NODE_LABEL, "tolerations": SYSTEM_TOLERATIONS}),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
        ), pulumi.ResourceOptions(parent=self, depends_on=[self.system_node_group]))

        self.provider = k8s.Provider(f"{name}-k8s", k8s.ProviderArgs(
            kubeconfig=self.kubeconfig,
        ), child)

        # What a workload on this cluster must wait for: system nodes with DNS, and Pod Identity.
        self.ready: list[pulumi.Resource] = [self.system_node_group, self.coredns, self.pod_identity_agent]
        self.register_outputs({
            "name": self.name,
            "endpoint": self.endpoint,
            "securityGroupId": self.security_group_id,
            "systemNodeGroup": self.system_node_group.node_group_name,
        })


def _default_addon_version(parent: pulumi.Resource, addon: str, kubernetes_version: str) -> pulumi.Output[str]:
    # The version EKS marks as default for this Kubernetes version, read when the stack is deployed.
    return aws.eks.get_addon_version_output(
        addon_name=addon, kubernetes_version=kubernetes_version, most_recent=False,
        opts=pulumi.InvokeOutputOptions(parent=parent),
    ).version
