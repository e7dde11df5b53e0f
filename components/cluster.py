"""The EKS cluster: control plane, a small system node group, the add-ons, and a Kubernetes provider.

Model servers never run on the system nodes: those carry a taint only system add-ons tolerate, and
Karpenter launches Neuron nodes for the models separately.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

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
# pulumi-eks creates these two add-ons itself; EksCluster creates the others.
PULUMI_EKS_ADDONS = ("vpc-cni", "kube-proxy")
# STANDARD: no extended-support fee (six times the control plane's price once standard support ends). The
# price of that choice: at the end of standard support EKS upgrades the control plane by itself, which
# preflight warns about months ahead; the pinned Karpenter and node AMI release cover the next version.
UPGRADE_SUPPORT_TYPE = "STANDARD"


@dataclass
class EksClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    public_subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    admin_principal_arns: Sequence[str] = ()
    public_access_cidrs: Sequence[str] = ("0.0.0.0/0",)
    # Add-on versions by add-on name; one not listed is resolved when created and kept afterwards.
    addon_versions: Mapping[str, str] = field(default_factory=dict)
    # The AWS CLI profile (stack setting aws:profile) the Kubernetes provider authenticates with.
    aws_profile: str | None = None
    # System nodes: CoreDNS, Karpenter and the other add-ons, two replicas each, spread across them.
    system_node_instance_type: str = "m6i.large"
    system_node_count: int = 3
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
        cluster_policy = aws.iam.RolePolicyAttachment(
            f"{name}-control-plane-AmazonEKSClusterPolicy", aws.iam.RolePolicyAttachmentArgs(
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
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=UPGRADE_SUPPORT_TYPE),
            service_role=service_role,
            vpc_id=args.vpc_id,
            private_subnet_ids=args.private_subnet_ids,
            public_subnet_ids=args.public_subnet_ids,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(args.public_access_cidrs),
            # The creator gets admin through EKS's own bootstrap entry (pulumi-eks sets
            # bootstrapClusterCreatorAdminPermissions); everyone else through the access entries below.
            authentication_mode=eks.AuthenticationMode.API,
            enabled_cluster_log_types=CONTROL_PLANE_LOG_TYPES,
            encryption_config_key_arn=secrets_key.arn,
            # Every add-on is an EKS-managed add-on, created below or by pulumi-eks (vpc-cni, kube-proxy).
            bootstrap_self_managed_addons=False,
            # Nodes, system and Karpenter's, share the security group EKS creates for the cluster.
            skip_default_security_groups=True,
            skip_default_node_group=True,
            create_oidc_provider=False,  # workloads get AWS access through EKS Pod Identity
            vpc_cni_options=eks.VpcCniOptionsArgs(
                addon_version=args.addon_versions.get("vpc-cni"),
                # Network-policy enforcement in the VPC CNI: without it NetworkPolicies are inert.
                enable_network_policy=True,
                # pulumi-eks defaults both the daemon's and the plugin's log level to DEBUG; the plugin's
                # is not an option of the Python SDK, but its env in configurationValues wins
                # (nodejs/eks/addons/cni-addon.ts, computeEnv and mergeConfigurationValues).
                log_level="INFO",
                configuration_values={"env": {"AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "INFO"}},
            ),
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(version=args.addon_versions.get("kube-proxy")),
            tags=args.tags,
        ), pulumi.ResourceOptions(
            parent=self, depends_on=[log_group, secrets_access, cluster_policy],
            # pulumi-eks looks the vpc-cni and kube-proxy versions up as "most recent" on every run unless
            # given one: keep what was created until a version is set on purpose.
            transforms=[keep_addon_versions([a for a in PULUMI_EKS_ADDONS if a not in args.addon_versions])],
        ))

        # The name we gave the cluster, as an Output that depends on it, so consumers wait for the cluster.
        self.name: pulumi.Output[str] = self.cluster.urn.apply(lambda _: args.cluster_name)
        self.endpoint: pulumi.Output[str] = self.cluster.core.endpoint
        self.security_group_id: pulumi.Output[str] = self.cluster.cluster_security_group_id
        # For people and tools, as pulumi-eks makes it: `aws eks get-token` with the caller's own credentials.
        self.kubeconfig: pulumi.Output[str] = self.cluster.kubeconfig_json

        # Karpenter launches nodes into the subnets, and with the security groups, carrying this tag:
        # the private subnets (Network) and the cluster security group.
        self.node_discovery_tags: dict[str, str] = {DISCOVERY_TAG: args.cluster_name}
        aws.ec2.Tag(f"{name}-security-group-discovery", aws.ec2.TagArgs(
            resource_id=self.security_group_id, key=DISCOVERY_TAG, value=args.cluster_name,
        ), child)

        self._admin_access_entries(name, args, partition)

        self.pod_identity_agent = self._addon(name, "eks-pod-identity-agent", args, child)

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
            instance_types=[args.system_node_instance_type],
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
        self.coredns = self._addon(
            name, "coredns", args, pulumi.ResourceOptions(parent=self, depends_on=[self.system_node_group]),
            configuration_values=json.dumps({"nodeSelector": SYSTEM_NODE_LABEL, "tolerations": SYSTEM_TOLERATIONS}))

        self.provider = k8s.Provider(f"{name}-k8s", k8s.ProviderArgs(
            kubeconfig=self.kubeconfig.apply(lambda config: with_profile(config, args.aws_profile)),
        ), child)

        # What a workload on this cluster must wait for: system nodes with DNS, and Pod Identity.
        self.ready: list[pulumi.Resource] = [self.system_node_group, self.coredns, self.pod_identity_agent]
        self.register_outputs({
            "name": self.name,
            "endpoint": self.endpoint,
            "securityGroupId": self.security_group_id,
            "systemNodeGroup": self.system_node_group.node_group_name,
        })

    def _admin_access_entries(self, name: str, args: EksClusterArgs, partition: pulumi.Input[str]) -> None:
        """Cluster-admin access entries, one per principal, named after the principal, not its list position."""
        policy_arn = pulumi.Output.concat("arn:", partition, ":eks::aws:cluster-access-policy/", CLUSTER_ADMIN_POLICY)
        for position, arn in enumerate(args.admin_principal_arns):
            entry_name = f"{name}-admin-{principal_slug(arn)}"
            # Earlier versions let pulumi-eks create these as `<cluster>-eks-admin-<position>` under its
            # component (nodejs/eks/cluster/authenticationMode.ts, createAccessEntries): adopt them in place.
            # Principals cannot change in place; EKS refuses a second entry for one principal (409), so
            # a replacement deletes first.
            previous = f"{name}-eks-admin-{position}"
            entry = aws.eks.AccessEntry(entry_name, aws.eks.AccessEntryArgs(
                cluster_name=self.name, principal_arn=arn, type="STANDARD", tags=args.tags,
            ), pulumi.ResourceOptions(parent=self, delete_before_replace=True,
                                      aliases=[pulumi.Alias(name=previous, parent=self.cluster)]))
            aws.eks.AccessPolicyAssociation(f"{entry_name}-cluster-admin", aws.eks.AccessPolicyAssociationArgs(
                cluster_name=self.name, principal_arn=arn, policy_arn=policy_arn,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            ), pulumi.ResourceOptions(parent=entry, delete_before_replace=True, aliases=[pulumi.Alias(
                name=f"{previous}-cluster-admin",
                parent=self.cluster.urn.apply(
                    lambda urn, old=previous: child_urn(urn, "aws:eks/accessEntry:AccessEntry", old)),
            )]))

    def _addon(self, name: str, addon: str, args: EksClusterArgs, opts: pulumi.ResourceOptions,
               configuration_values: str | None = None) -> aws.eks.Addon:
        """An EKS add-on at the configured version; unset, EKS's default when created, kept afterwards."""
        version = args.addon_versions.get(addon)
        keep = None if version else ["addonVersion"]
        return aws.eks.Addon(f"{name}-{addon.removeprefix('eks-')}", aws.eks.AddonArgs(
            cluster_name=self.name,
            addon_name=addon,
            addon_version=version or aws.eks.get_addon_version_output(
                addon_name=addon, kubernetes_version=args.kubernetes_version, most_recent=False,
                opts=pulumi.InvokeOutputOptions(parent=self)).version,
            configuration_values=configuration_values,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
        ), pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=keep)))


def principal_slug(arn: str) -> str:
    """A stable, URN-safe name for an IAM principal: its kind and name, and a short hash of the whole ARN
    (two ARNs that differ only in characters the name drops stay apart)."""
    kind, _, name = arn.split(":", 5)[5].partition("/")
    readable = re.sub(r"[^A-Za-z0-9-]+", "-", name.rsplit("/", 1)[-1]).strip("-")
    return f"{kind}-{readable}-{hashlib.sha256(arn.encode()).hexdigest()[:8]}"


def child_urn(parent_urn: str, child_type: str, child_name: str) -> str:
    """The URN of a child resource: the parent's type chain, the child's type, then its name."""
    prefix, _, _ = parent_urn.rpartition("::")
    return f"{prefix}${child_type}::{child_name}"


def keep_addon_versions(addons: Sequence[str]) -> pulumi.ResourceTransform:
    """A transform for pulumi-eks's children: the named add-ons keep the version they were created with."""

    def transform(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
        if args.type_ != "aws:eks/addon:Addon" or args.props.get("addonName") not in addons:
            return None
        return pulumi.ResourceTransformResult(props=args.props, opts=pulumi.ResourceOptions.merge(
            args.opts, pulumi.ResourceOptions(ignore_changes=["addonVersion"])))

    return transform


def with_profile(kubeconfig_json: str, profile: str | None) -> str:
    """The kubeconfig with `--profile` on its `aws eks get-token` call: pulumi-eks's kubeconfig output never
    carries it (nodejs/eks/cluster/cluster.ts: the output is generated without the profile)."""
    if not profile:
        return kubeconfig_json
    config = json.loads(kubeconfig_json)
    for user in config["users"]:
        user["user"]["exec"]["args"] = [*user["user"]["exec"]["args"], "--profile", profile]
    return json.dumps(config)
