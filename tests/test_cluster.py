"""The EKS cluster: pinned version, API authentication with access entries, system nodes, add-ons, provider."""

from __future__ import annotations

import json
import re

import pulumi

from components.cluster import CONTROL_PLANE_LOG_TYPES, SYSTEM_NODE_LABEL, keep_addon_versions, principal_slug
from tests.conftest import with_settings
from tools.offline import run_program

CLUSTER = "eks:index:Cluster"
ACCESS_ENTRY = "aws:eks/accessEntry:AccessEntry"
POLICY_ASSOCIATION = "aws:eks/accessPolicyAssociation:AccessPolicyAssociation"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ADDON = "aws:eks/addon:Addon"


def test_cluster_has_an_explicit_name_and_pinned_version(dev_deployment):
    cluster = dev_deployment.one(CLUSTER)
    assert cluster.inputs["name"] == "trainium-vllm-dev"
    assert cluster.inputs["version"] == "1.35"


def test_kubernetes_version_comes_from_the_stack(dev_config):
    deployment = run_program(with_settings(dev_config, kubernetesVersion="1.34"))
    assert deployment.one(CLUSTER).inputs["version"] == "1.34"
    addon_versions = [a for a in deployment.of_type(ADDON)]
    assert addon_versions and all(a.inputs["addonVersion"].startswith("v") for a in addon_versions)
    # Each add-on's version is the one EKS gives for this Kubernetes version.
    lookups = {args["addonName"]: args for token, args in deployment.invokes
               if token == "aws:eks/getAddonVersion:getAddonVersion"}
    assert set(lookups) == {a.inputs["addonName"] for a in addon_versions}
    assert all(args["kubernetesVersion"] == "1.34" and args["mostRecent"] is False for args in lookups.values())


def test_add_on_versions_resolve_once_and_then_never_change_by_themselves(dev_deployment):
    for addon in dev_deployment.of_type(ADDON):
        # EKS's default when created; a later lookup returning a newer default is ignored.
        assert addon.ignore_changes == ["addonVersion"], addon.name
    cluster = dev_deployment.one(CLUSTER)
    assert cluster.inputs["vpcCniOptions"].get("addonVersion") is None
    assert cluster.inputs["kubeProxyAddonOptions"].get("version") is None
    # pulumi-eks's own add-ons (children of its remote component) are held by a transform.
    assert cluster.transforms == 1


def test_add_on_versions_set_on_purpose_are_applied(dev_config):
    versions = {"vpc-cni": "v1.20.4-eksbuild.2", "kube-proxy": "v1.35.0-eksbuild.1",
                "coredns": "v1.12.4-eksbuild.9", "eks-pod-identity-agent": "v1.3.9-eksbuild.1"}
    deployment = run_program(with_settings(dev_config, addonVersions=versions))
    cluster = deployment.one(CLUSTER)
    assert cluster.inputs["vpcCniOptions"]["addonVersion"] == versions["vpc-cni"]
    assert cluster.inputs["kubeProxyAddonOptions"]["version"] == versions["kube-proxy"]
    for addon in deployment.of_type(ADDON):
        assert addon.inputs["addonVersion"] == versions[addon.inputs["addonName"]]
        assert addon.ignore_changes == []  # a set version is one the user wants applied
    assert not [token for token, _ in deployment.invokes if token == "aws:eks/getAddonVersion:getAddonVersion"]


def _transform(addons, type_, props):
    args = pulumi.ResourceTransformArgs(custom=True, type_=type_, name="x", props=props,
                                        opts=pulumi.ResourceOptions(parent=None))
    return keep_addon_versions(addons)(args)


def test_the_transform_freezes_only_unpinned_pulumi_eks_add_ons():
    frozen = _transform(["vpc-cni"], "aws:eks/addon:Addon", {"addonName": "vpc-cni", "addonVersion": "v1"})
    assert frozen.opts.ignore_changes == ["addonVersion"] and frozen.props["addonVersion"] == "v1"
    assert _transform(["vpc-cni"], "aws:eks/addon:Addon", {"addonName": "kube-proxy"}) is None
    assert _transform(["vpc-cni"], "aws:iam/role:Role", {"addonName": "vpc-cni"}) is None
    assert _transform([], "aws:eks/addon:Addon", {"addonName": "vpc-cni"}) is None


def test_vpc_cni_logs_at_info_not_pulumi_eks_debug_default(dev_deployment):
    options = dev_deployment.one(CLUSTER).inputs["vpcCniOptions"]
    assert options["logLevel"] == "INFO"
    assert options["configurationValues"] == {"env": {"AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "INFO"}}


def test_upgrade_policy_is_standard_support(dev_deployment):
    assert dev_deployment.one(CLUSTER).inputs["upgradePolicy"] == {"supportType": "STANDARD"}


def test_cluster_waits_for_its_role_policy(dev_deployment):
    attachment = dev_deployment.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment",
                                    "trainium-vllm-dev-control-plane-AmazonEKSClusterPolicy")
    assert attachment.urn in dev_deployment.one(CLUSTER).dependencies


def test_aws_profile_reaches_the_provider_kubeconfig_only(dev_config):
    deployment = run_program({**dev_config, "aws:profile": "trainium-admin"})
    provider = json.loads(deployment.one("pulumi:providers:kubernetes").inputs["kubeconfig"])
    assert provider["users"][0]["user"]["exec"]["args"][-2:] == ["--profile", "trainium-admin"]
    # The exported kubeconfig stays profile-free, for whoever uses it with their own credentials.
    exported = json.loads(deployment.exports["kubeconfig"])
    assert "--profile" not in exported["users"][0]["user"]["exec"]["args"]


def test_system_nodes_follow_the_settings(dev_config):
    deployment = run_program(with_settings(dev_config, systemNodes={"instanceType": "m7i.xlarge", "count": 4}))
    group = deployment.one(NODE_GROUP).inputs
    assert group["instanceTypes"] == ["m7i.xlarge"]
    assert group["scalingConfig"] == {"minSize": 4, "desiredSize": 4, "maxSize": 5}


def test_authentication_is_access_entries_only(dev_deployment):
    cluster = dev_deployment.one(CLUSTER).inputs
    assert cluster["authenticationMode"] == "API"
    # The creator gets admin through EKS's bootstrap entry; listing it again would collide (409).
    assert "accessEntries" not in cluster
    assert dev_deployment.of_type(ACCESS_ENTRY) == [dev_deployment.one(ACCESS_ENTRY, "karpenter-node")]


ADMINS = ["arn:aws:iam::123456789012:role/platform-admins", "arn:aws:iam::123456789012:user/alice",
          "arn:aws:iam::123456789012:role/ci/github-preview"]


def _admin_entries(deployment):
    return {r.inputs["principalArn"]: r for r in deployment.of_type(ACCESS_ENTRY) if r.inputs["type"] == "STANDARD"}


def test_cluster_admins_get_cluster_scoped_admin_access_entries(dev_config):
    deployment = run_program(with_settings(dev_config, clusterAdminArns=ADMINS))
    entries = _admin_entries(deployment)
    assert sorted(entries) == sorted(ADMINS)
    cluster = deployment.one(CLUSTER)
    for arn, entry in entries.items():
        assert entry.inputs["clusterName"] == "trainium-vllm-dev"
        assert deployment.depends_on(entry, cluster)
        (association,) = [a for a in deployment.of_type(POLICY_ASSOCIATION) if a.parent == entry.urn]
        assert association.inputs["principalArn"] == arn
        assert association.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        assert association.inputs["accessScope"] == {"type": "cluster"}


def test_access_entries_are_named_after_their_principal_not_their_position(dev_config):
    before = _admin_entries(run_program(with_settings(dev_config, clusterAdminArns=ADMINS)))
    after = _admin_entries(run_program(with_settings(dev_config, clusterAdminArns=[ADMINS[2], ADMINS[0]])))
    # Reordering or removing a principal leaves the others' resources (URNs) alone: no replacement, no 409.
    assert {arn: entry.urn for arn, entry in after.items()} == {arn: before[arn].urn for arn in after}
    names = [before[arn].name for arn in ADMINS]
    assert names[0].startswith("trainium-vllm-dev-admin-role-platform-admins-")
    assert names[2].startswith("trainium-vllm-dev-admin-role-github-preview-")
    assert len(set(names)) == 3 and all(re.fullmatch(r"[A-Za-z0-9-]+", n) for n in names)
    # Two principals that only differ in characters the name drops still get their own entries.
    assert principal_slug("arn:aws:iam::1:role/a.b") != principal_slug("arn:aws:iam::1:role/a-b")


def test_existing_stacks_adopt_the_entries_pulumi_eks_created_by_position(dev_config):
    deployment = run_program(with_settings(dev_config, clusterAdminArns=ADMINS))
    cluster = deployment.one(CLUSTER)
    for position, arn in enumerate(ADMINS):
        entry = _admin_entries(deployment)[arn]
        # pulumi-eks named them `<component>-<key>` under its Cluster (createAccessEntries), our key was
        # `admin-<position>`, and each policy association `<entry>-<policy key>` under its entry.
        assert entry.aliases == [{"name": f"trainium-vllm-dev-eks-admin-{position}", "parent": cluster.urn}]
        (association,) = [a for a in deployment.of_type(POLICY_ASSOCIATION) if a.parent == entry.urn]
        old_entry_urn = cluster.urn.rsplit("::", 1)[0] + \
            f"$aws:eks/accessEntry:AccessEntry::trainium-vllm-dev-eks-admin-{position}"
        assert association.aliases == [{"name": f"trainium-vllm-dev-eks-admin-{position}-cluster-admin",
                                        "parent": old_entry_urn}]
        # A principal cannot change in place and EKS allows one entry per principal: delete first.
        assert entry.delete_before_replace and association.delete_before_replace


def test_no_default_node_group_and_one_shared_security_group(dev_deployment):
    cluster = dev_deployment.one(CLUSTER).inputs
    assert cluster["skipDefaultNodeGroup"] is True
    assert cluster["skipDefaultSecurityGroups"] is True
    assert cluster["bootstrapSelfManagedAddons"] is False


def test_control_plane_logs_go_to_a_log_group_the_stack_owns(dev_deployment):
    cluster = dev_deployment.one(CLUSTER)
    assert cluster.inputs["enabledClusterLogTypes"] == CONTROL_PLANE_LOG_TYPES
    assert set(CONTROL_PLANE_LOG_TYPES) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    log_group = dev_deployment.one("aws:cloudwatch/logGroup:LogGroup")
    # EKS writes to exactly this name; owning it means `pulumi destroy` removes it.
    assert log_group.inputs["name"] == "/aws/eks/trainium-vllm-dev/cluster"
    assert log_group.inputs["retentionInDays"] > 0
    assert log_group.urn in cluster.dependencies


def test_secrets_are_envelope_encrypted_with_a_rotating_key(dev_deployment):
    key = dev_deployment.one("aws:kms/key:Key", "trainium-vllm-dev-secrets")
    assert key.inputs["enableKeyRotation"] is True
    cluster = dev_deployment.one(CLUSTER)
    assert cluster.inputs["encryptionConfigKeyArn"] == key.outputs["arn"]
    policy = dev_deployment.one("aws:iam/rolePolicy:RolePolicy", "trainium-vllm-dev-control-plane-secrets-key")
    statement, = json.loads(policy.inputs["policy"])["Statement"]
    assert statement["Resource"] == key.outputs["arn"]
    assert policy.urn in cluster.dependencies  # the role can use the key before EKS tries to


def test_control_plane_role_is_trusted_by_eks_only(dev_deployment):
    role = dev_deployment.one("aws:iam/role:Role", "trainium-vllm-dev-control-plane")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]


def test_cluster_is_in_the_private_and_public_subnets(dev_deployment):
    cluster = dev_deployment.one(CLUSTER).inputs
    private = [s.outputs["id"] for s in dev_deployment.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name]
    public = [s.outputs["id"] for s in dev_deployment.of_type("aws:ec2/subnet:Subnet") if "-public-" in s.name]
    assert sorted(cluster["privateSubnetIds"]) == sorted(private) and len(private) == 3
    assert sorted(cluster["publicSubnetIds"]) == sorted(public) and len(public) == 3
    assert cluster["vpcId"] == dev_deployment.one("aws:ec2/vpc:Vpc").outputs["id"]
    assert cluster["endpointPrivateAccess"] is True
    assert cluster["publicAccessCidrs"] == ["0.0.0.0/0"]


def test_network_policies_are_enforced_by_the_vpc_cni(dev_deployment):
    assert dev_deployment.one(CLUSTER).inputs["vpcCniOptions"]["enableNetworkPolicy"] is True


def test_system_node_group_is_labelled_and_tainted_for_system_add_ons(dev_deployment):
    group = dev_deployment.one(NODE_GROUP)
    assert group.inputs["clusterName"] == "trainium-vllm-dev"
    assert group.inputs["labels"] == SYSTEM_NODE_LABEL
    assert group.inputs["taints"] == [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}]
    assert group.inputs["scalingConfig"]["minSize"] >= 2  # two Karpenter replicas, one per node
    assert group.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    private = {s.outputs["id"] for s in dev_deployment.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name}
    assert set(group.inputs["subnetIds"]) == private
    # It waits for the cluster (its name is an output of it).
    assert dev_deployment.depends_on(group, dev_deployment.one(CLUSTER))


def test_system_nodes_require_imdsv2_out_of_reach_of_pods_and_encrypt_their_disk(dev_deployment):
    template = dev_deployment.one("aws:ec2/launchTemplate:LaunchTemplate")
    assert template.inputs["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                                  "httpPutResponseHopLimit": 1}
    (disk,) = template.inputs["blockDeviceMappings"]
    assert disk["ebs"]["encrypted"] == "true"
    assert dev_deployment.one(NODE_GROUP).inputs["launchTemplate"]["id"] == template.outputs["id"]


def test_system_node_role_has_exactly_the_node_policies(dev_deployment):
    role = dev_deployment.one("aws:iam/role:Role", "trainium-vllm-dev-system-node")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = sorted(a.inputs["policyArn"] for a in dev_deployment.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                      if a.inputs["role"] == role.outputs["name"])
    assert attached == ["arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
                        "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
                        "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"]
    assert dev_deployment.one(NODE_GROUP).inputs["nodeRoleArn"] == role.outputs["arn"]


def test_coredns_runs_on_the_system_nodes_after_they_exist(dev_deployment):
    coredns = dev_deployment.one(ADDON, "trainium-vllm-dev-coredns")
    values = json.loads(coredns.inputs["configurationValues"])
    group = dev_deployment.one(NODE_GROUP).inputs
    assert values["nodeSelector"] == group["labels"]
    assert values["tolerations"] == [{"key": t["key"], "operator": "Exists", "effect": "NoSchedule"}
                                     for t in group["taints"]]
    assert dev_deployment.one(NODE_GROUP).urn in coredns.dependencies


def test_pod_identity_agent_add_on_is_installed(dev_deployment):
    agent = dev_deployment.one(ADDON, "trainium-vllm-dev-pod-identity-agent")
    assert agent.inputs["addonName"] == "eks-pod-identity-agent"
    assert agent.inputs["clusterName"] == "trainium-vllm-dev"


def test_cluster_security_group_is_tagged_for_karpenter(dev_deployment):
    tag = dev_deployment.one("aws:ec2/tag:Tag")
    assert tag.inputs == {"resourceId": dev_deployment.one(CLUSTER).outputs["clusterSecurityGroupId"],
                          "key": "karpenter.sh/discovery", "value": "trainium-vllm-dev"}


def test_kubernetes_provider_uses_the_cluster_kubeconfig(dev_deployment):
    provider = dev_deployment.one("pulumi:providers:kubernetes")
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    assert kubeconfig == json.loads(dev_deployment.one(CLUSTER).outputs["kubeconfigJson"])
    assert kubeconfig["users"][0]["user"]["exec"]["args"][-3] == "trainium-vllm-dev"


def test_stack_exports_cluster_name_region_and_a_secret_kubeconfig(dev_deployment):
    assert dev_deployment.exports["clusterName"] == "trainium-vllm-dev"
    assert dev_deployment.exports["region"] == "us-west-2"
    assert json.loads(dev_deployment.exports["kubeconfig"])["kind"] == "Config"
    assert "kubeconfig" in dev_deployment.secret_exports


def test_every_child_of_a_component_is_parented_and_named_after_it(dev_deployment):
    components = [r for r in dev_deployment.resources if not r.custom and r.type.startswith("trainium-vllm:")]
    component_urns = {c.urn: c.name for c in components}
    for resource in dev_deployment.resources:
        if resource in components:
            continue
        assert resource.parent, f"{resource.name} has no parent"
        if resource.parent in component_urns:
            assert resource.name.startswith(component_urns[resource.parent]), resource.name
