"""Neuron capacity on demand: Karpenter NodePools for Trainium first and Inferentia2 as the fallback, their
EC2NodeClass, and the Neuron device plugin that advertises the devices to Kubernetes.

Karpenter tries NodePools by weight and, within one, launches the cheapest compatible type; so Trainium
gets the first-choice pool `neuron` and Inferentia2 a lower-weight pool (components.neuron.node_pools).
Nothing runs on these nodes but pods that tolerate the Neuron taint and select the Neuron label, which
the model Deployments do with the same constants (components.neuron).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import neuron, versions

NODE_CLASS_NAME = "neuron"
DEVICE_PLUGIN_RELEASE = "neuron-device-plugin"

# AL2023 node configuration: pull image layers in parallel. The vLLM image is about 10 GB; the workshop
# measured a pull going from 3 minutes to 47 seconds.
NODE_CONFIG = """\
apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  featureGates:
    FastImagePull: true
"""


@dataclass
class NeuronCapacityArgs:
    # The tags of the subnets and security groups nodes go into (EksCluster.node_discovery_tags).
    discovery_tags: Mapping[str, str]
    node_role_name: pulumi.Input[str]
    k8s_provider: k8s.Provider
    instance_types: Sequence[str]
    capacity_types: Sequence[str]
    max_neuron_devices: int
    # On-Demand Capacity Reservations / Capacity Blocks the nodes may launch into (with capacity type `reserved`).
    capacity_reservation_ids: Sequence[str] = ()
    # The Karpenter release: NodePools must be created after its CRDs and deleted while it still runs.
    karpenter_ready: Sequence[pulumi.Resource] = ()
    # Let a node that has been empty (or whose pods fit elsewhere) go only after this long, so a model
    # pod that is still pulling its image or loading does not see its node consolidated away.
    consolidate_after: str = "10m"
    expire_after: str = "720h"
    termination_grace_period: str = "24h"
    tags: dict[str, str] = field(default_factory=dict)


class NeuronCapacity(pulumi.ComponentResource):
    """The `neuron` NodePools and their EC2NodeClass, and the Neuron device plugin."""

    def __init__(self, name: str, args: NeuronCapacityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:NeuronCapacity", name, None, opts)
        # Pulumi deletes Kubernetes objects with foreground propagation and waits until they are gone:
        # a NodePool only after Karpenter has drained and terminated its NodeClaims' instances.
        after_karpenter = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                                 depends_on=list(args.karpenter_ready),
                                                 custom_timeouts=pulumi.CustomTimeouts(delete="20m"))
        discovery = [{"tags": dict(args.discovery_tags)}]

        self.node_class = k8s.apiextensions.CustomResource(f"{name}-node-class", api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": NODE_CLASS_NAME},
            spec={
                # Pinned: Karpenter picks this release's Neuron AMI variant for accelerator instances.
                "amiSelectorTerms": [{"alias": versions.NODE_AMI_ALIAS}],
                "role": args.node_role_name,
                "subnetSelectorTerms": discovery,
                "securityGroupSelectorTerms": discovery,
                # trn1/trn2 come with NVMe instance store: striped, it holds images and pod volumes.
                # Instances without one (inf2) use the root volume below.
                "instanceStorePolicy": "RAID0",
                "blockDeviceMappings": [{
                    "deviceName": "/dev/xvda",
                    "rootVolume": True,
                    # Room and speed for a 10 GB image plus the model files when there is no instance store.
                    "ebs": {"volumeSize": "256Gi", "volumeType": "gp3", "iops": 16000, "throughput": 1000,
                            "encrypted": True, "deleteOnTermination": True},
                }],
                # IMDSv2 only, out of reach of pods: they never need the node role's credentials.
                "metadataOptions": {"httpEndpoint": "enabled", "httpProtocolIPv6": "disabled",
                                    "httpPutResponseHopLimit": 1, "httpTokens": "required"},
                "userData": NODE_CONFIG,
                "tags": {**args.tags, **args.discovery_tags, "aws-neuron": "true"},
                # Karpenter prefers reserved capacity it is allowed to use over on-demand (Karpenter 1.14
                # EC2NodeClass CRD; the chart's reservedCapacity feature gate is on by default).
                **({"capacityReservationSelectorTerms": [{"id": i} for i in args.capacity_reservation_ids]}
                   if args.capacity_reservation_ids else {}),
            },
            opts=after_karpenter)

        self.node_pools = [
            self._node_pool(name, plan, args, after_karpenter) for plan in neuron.node_pools(args.instance_types)
        ]

        # The device plugin DaemonSet runs only on Neuron instance types (the chart's node affinity).
        self.device_plugin = k8s.helm.v3.Release(f"{name}-device-plugin", k8s.helm.v3.ReleaseArgs(
            name=DEVICE_PLUGIN_RELEASE,
            chart=versions.NEURON_CHART,
            version=versions.NEURON_CHART_VERSION,
            namespace="kube-system",
            values={
                "devicePlugin": {"enabled": True, "tolerations": [neuron.NEURON_TOLERATION]},
                # The scheduler extension places pods that take several devices but not a whole node; a
                # pod would then have to name its scheduler. One device per pod does not need it.
                "scheduler": {"enabled": False},
                # The node problem detector runs privileged and needs IAM permissions we do not grant.
                "npd": {"enabled": False},
            },
        ), pulumi.ResourceOptions(parent=self, provider=args.k8s_provider))

        # What a model Deployment waits for: somewhere to run and its devices advertised.
        self.ready: list[pulumi.Resource] = [*self.node_pools, self.node_class, self.device_plugin]
        self.register_outputs({
            "nodePools": [pool.metadata["name"] for pool in self.node_pools],
            "nodeClass": self.node_class.metadata["name"],
        })

    def _node_pool(self, name: str, plan: neuron.NodePoolPlan, args: NeuronCapacityArgs,
                   opts: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        # The first-choice pool keeps the resource name it always had, so existing stacks update it in place.
        resource_name = f"{name}-node-pool" if not plan.is_fallback else f"{name}-node-pool-{plan.name}"
        return k8s.apiextensions.CustomResource(resource_name, api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": plan.name},
            spec={
                "weight": plan.weight,
                "template": {
                    "metadata": {"labels": neuron.NEURON_NODE_SELECTOR},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                         "name": self.node_class.metadata["name"]},
                        "requirements": [
                            {"key": "node.kubernetes.io/instance-type", "operator": "In",
                             "values": list(plan.instance_types)},
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": list(args.capacity_types)},
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        ],
                        "taints": [{"key": neuron.NEURON_TAINT_KEY, "value": neuron.NEURON_TAINT_VALUE,
                                    "effect": "NoSchedule"}],
                        "expireAfter": args.expire_after,
                        "terminationGracePeriod": args.termination_grace_period,
                    },
                },
                # A ceiling on what this pool can launch: a mistake cannot start a fleet of accelerators.
                # Each pool may take the whole ceiling, so the fallback can carry every model.
                "limits": neuron.pool_limits(args.max_neuron_devices, plan.instance_types),
                "disruption": {
                    "consolidationPolicy": "WhenEmptyOrUnderutilized",
                    "consolidateAfter": args.consolidate_after,
                    "budgets": [{"nodes": "1"}],
                },
            },
            opts=opts)
