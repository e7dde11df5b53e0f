"""What pulumi-eks creates inside `eks:index:Cluster`, for the options this program passes.

Under Pulumi's mocks `eks.Cluster` is one registration: the component runs in pulumi-eks's own plugin, so
none of its children appear (FACTS section 6). `pulumi up` creates them all the same; tools.render lists
them in aws-resources.md from `children()`, written from pulumi-eks's source:

  pulumi/pulumi-eks, commit 7bf0c1b1 (v4.3.0 + 9 commits, August 2026; 4.4.0 is the same code, FACTS 6):
  - nodejs/eks/cluster/cluster.ts: createCore() (the cluster, kube-proxy, the Kubernetes provider, instance
    role, aws-auth, access entries, storage classes, VPC CNI, Fargate, CoreDNS, OIDC) and createCluster()
    (node security group, default node group);
  - nodejs/eks/cluster/authenticationMode.ts: createAccessEntries();
  - nodejs/eks/addons/cni-addon.ts: VpcCniAddon, computeEnv(), mergeConfigurationValues().

The list holds only for the options it models: `children()` refuses a Cluster registered with others
(ASSUMED_OPTIONS, and the keys of vpcCniOptions/kubeProxyAddonOptions it knows), so a change in the
program's options cannot leave this list silently stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SOURCE = ("pulumi/pulumi-eks@7bf0c1b1 nodejs/eks/cluster/cluster.ts (createCore, createCluster), "
          "nodejs/eks/cluster/authenticationMode.ts (createAccessEntries), "
          "nodejs/eks/addons/cni-addon.ts (VpcCniAddon)")

# Cluster options that decide which children exist, and the value the list is written for; `None` means
# "not passed". Options not named here only pass through to a child (listed with that child).
ASSUMED_OPTIONS: dict[str, Any] = {
    "skipDefaultNodeGroup": True,         # no default node group, no instance role or profile
    "skipDefaultSecurityGroups": True,    # no cluster or node security groups: EKS's own group is used
    "authenticationMode": "API",          # access entries, no aws-auth ConfigMap
    "createOidcProvider": False,
    "fargate": None,
    "autoMode": None,
    "corednsAddonOptions": None,          # no CoreDNS add-on from pulumi-eks (the program adds its own)
    "useDefaultVpcCni": None,             # the vpc-cni add-on is created
    "instanceRole": None,
    "instanceRoles": None,
    "createInstanceRole": None,
    "storageClasses": None,
    "creationRoleProvider": None,
    "clusterSecurityGroup": None,
}
# The keys of these two options that the list models.
VPC_CNI_KEYS = {"enableNetworkPolicy", "resolveConflictsOnCreate", "resolveConflictsOnUpdate", "addonVersion",
                "logLevel", "configurationValues"}
KUBE_PROXY_KEYS = {"enabled", "version", "resolveConflictsOnCreate", "resolveConflictsOnUpdate",
                   "configurationValues"}

# cni-addon.ts computeEnv(): the env VpcCniAddon sets when the corresponding option is not given.
VPC_CNI_DEFAULT_ENV = {
    "WARM_ENI_TARGET": "1",
    "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
    "AWS_VPC_K8S_CNI_LOG_FILE": "/host/var/log/aws-routed-eni/ipamd.log",
    "AWS_VPC_K8S_CNI_VETHPREFIX": "eni",
    "AWS_VPC_ENI_MTU": "9001",
    "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG",
    "AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/aws-routed-eni/plugin.log",
    "ENABLE_POD_ENI": "false",
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "false",
    "AWS_VPC_K8S_CNI_EXTERNALSNAT": "false",
}
VPC_CNI_DEFAULT_INIT_ENV = {"DISABLE_TCP_EARLY_DEMUX": "false"}


@dataclass(frozen=True)
class Child:
    """One resource pulumi-eks creates inside the component."""

    type: str
    name: str
    settings: str
    source: str  # where in pulumi-eks


class UnmodelledOptions(ValueError):
    """The Cluster was registered with options the list was not written for."""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def unmodelled_options(inputs: dict[str, Any]) -> list[str]:
    problems = [f"{option}={inputs.get(option)!r} (the list assumes {expected!r})"
                for option, expected in ASSUMED_OPTIONS.items() if inputs.get(option) != expected]
    for option, known in (("vpcCniOptions", VPC_CNI_KEYS), ("kubeProxyAddonOptions", KUBE_PROXY_KEYS)):
        problems += [f"{option}.{key} (not modelled)" for key in sorted(set(inputs.get(option) or {}) - known)]
    if (inputs.get("kubeProxyAddonOptions") or {}).get("enabled") is False:
        problems.append("kubeProxyAddonOptions.enabled=False (the list has kube-proxy)")
    return problems


def vpc_cni_configuration(options: dict[str, Any]) -> dict[str, Any]:
    """The vpc-cni add-on's configurationValues: computeEnv() for the modelled options, then
    mergeConfigurationValues() (the option's own configurationValues win, env merged key by key)."""
    env = {**VPC_CNI_DEFAULT_ENV}
    if options.get("logLevel"):
        env["AWS_VPC_K8S_CNI_LOGLEVEL"] = options["logLevel"]
    config = dict(options.get("configurationValues") or {})
    if "enableNetworkPolicy" not in config and options.get("enableNetworkPolicy") is not None:
        config["enableNetworkPolicy"] = "true" if options["enableNetworkPolicy"] else "false"
    config["env"] = {**env, **(config.get("env") or {})}
    init = dict(config.get("init") or {})
    init["env"] = {**VPC_CNI_DEFAULT_INIT_ENV, **(init.get("env") or {})}
    config["init"] = init
    return config


def _version(given: str | None, addon: str) -> str:
    if given:
        return given
    return (f"aws.eks.getAddonVersion({addon}, cluster version, mostRecent: true), looked up on every run "
            "(a transform on the Cluster may keep the created one: see its options)")


def children(name: str, inputs: dict[str, Any]) -> list[Child]:
    """The resources inside the `eks:index:Cluster` registered as `name` with `inputs` (camelCase)."""
    problems = unmodelled_options(inputs)
    if problems:
        raise UnmodelledOptions(
            f"eks:index:Cluster {name} is registered with options tools/eks_inside.py does not model: "
            + "; ".join(problems) + f". Read {SOURCE} again and update the list.")
    cni = inputs.get("vpcCniOptions") or {}
    proxy = inputs.get("kubeProxyAddonOptions") or {}
    passed = {k: inputs[k] for k in ("upgradePolicy", "deletionProtection", "kubernetesServiceIpAddressRange",
                                     "ipFamily") if k in inputs}

    def flag(option: str) -> str:
        return _text(inputs.get(option))

    items = [
        Child("aws:eks/cluster:Cluster", f"{name}-eksCluster",
              f"name {inputs.get('name')}, version {inputs.get('version')}, roleArn from serviceRole, "
              f"vpcConfig (subnets: public then private, endpointPrivateAccess {flag('endpointPrivateAccess')}, "
              f"endpointPublicAccess {flag('endpointPublicAccess')}, publicAccessCidrs, no extra security group), "
              "encryptionConfig {resources: [secrets], provider.keyArn: encryptionConfigKeyArn}, "
              f"enabledClusterLogTypes, bootstrapSelfManagedAddons {flag('bootstrapSelfManagedAddons')}, "
              f"accessConfig {{authenticationMode: {inputs.get('authenticationMode')}, "
              "bootstrapClusterCreatorAdminPermissions: true (hard-coded: whoever runs `pulumi up` gets "
              "cluster admin through EKS's own creator entry, outside Pulumi's state)}, "
              + "".join(f"{k} {_text(v)}, " for k, v in sorted(passed.items()))
              + f"tags + Name {name}-eksCluster; ignoreChanges on accessConfig.bootstrapClusterCreatorAdminPermissions "
              "and bootstrapSelfManagedAddons",
              "cluster.ts createCore(): new aws.eks.Cluster"),
        Child("aws:eks/addon:Addon", f"{name}-kube-proxy",
              f"addonName kube-proxy, addonVersion {_version(proxy.get('version'), 'kube-proxy')}, preserve true, "
              f"resolveConflictsOnCreate {proxy.get('resolveConflictsOnCreate', 'OVERWRITE')}, "
              f"resolveConflictsOnUpdate {proxy.get('resolveConflictsOnUpdate', 'OVERWRITE')}, "
              + (f"configurationValues {_text(proxy['configurationValues'])}, " if "configurationValues" in proxy
                 else "") + "tags",
              "cluster.ts createCore(): kubeProxyAddonEnabled (kubeProxyAddonOptions.enabled not false, no auto mode)"),
        Child("pulumi:providers:kubernetes", f"{name}-eks-k8s",
              "kubeconfig of the cluster (aws eks get-token), used by the component's own Kubernetes resources "
              "(none with these options)",
              "cluster.ts createCore(): new k8s.Provider"),
        Child("eks:index:VpcCniAddon", f"{name}-vpc-cni",
              "component; waits for the access entries below",
              "cluster.ts createCore(): vpcCniAddonEnabled (useDefaultVpcCni unset, no auto mode)"),
        Child("aws:eks/addon:Addon", f"{name}-vpc-cni",
              f"child of the VpcCniAddon; addonName vpc-cni, addonVersion {_version(cni.get('addonVersion'), 'vpc-cni')}, "
              f"preserve true, resolveConflictsOnCreate {cni.get('resolveConflictsOnCreate', 'OVERWRITE')}, "
              f"resolveConflictsOnUpdate {cni.get('resolveConflictsOnUpdate', 'OVERWRITE')}, "
              f"configurationValues {_text(vpc_cni_configuration(cni))}, tags",
              "cni-addon.ts VpcCniAddon, computeEnv(), mergeConfigurationValues()"),
    ]
    for key, entry in sorted((inputs.get("accessEntries") or {}).items()):
        items.append(Child("aws:eks/accessEntry:AccessEntry", f"{name}-{key}",
                           f"principalArn {entry.get('principalArn')}, type {entry.get('type', 'STANDARD')}, "
                           "clusterName; waits for the cluster",
                           "authenticationMode.ts createAccessEntries() (authenticationMode API)"))
        for association, policy in sorted((entry.get("accessPolicies") or {}).items()):
            items.append(Child("aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
                               f"{name}-{key}-{association}",
                               f"child of access entry {name}-{key}; policyArn {policy.get('policyArn')}, "
                               f"accessScope {_text(policy.get('accessScope'))}, "
                               f"principalArn {entry.get('principalArn')}",
                               "authenticationMode.ts createAccessEntries()"))
    return items


# What the options above leave out, with the reason, so a reader does not look for them.
NOT_CREATED = [
    ("service role", "serviceRole is passed (createCore() creates `<name>-eksRole` only without it)"),
    ("cluster and node security groups, ingress/egress rules",
     "skipDefaultSecurityGroups: EKS's own cluster security group is used (createCore(), createCluster())"),
    ("default node group, instance role and instance profile",
     "skipDefaultNodeGroup and no instanceRole(s)/createInstanceRole (createCore(), createCluster())"),
    ("aws-auth ConfigMap", "authenticationMode API (supportsConfigMap() is false)"),
    ("CoreDNS add-on", "no default node group, no Fargate, no corednsAddonOptions (the program creates its own)"),
    ("OIDC provider", "createOidcProvider false (workloads use EKS Pod Identity)"),
    ("storage classes, Fargate profile, auto-mode node role", "not requested"),
    ("aws-node DaemonSet patch", "vpcCniOptions.securityContextPrivileged not set (cni-addon.ts)"),
]
