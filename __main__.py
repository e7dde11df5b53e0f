"""vLLM on AWS Trainium: network, EKS, Karpenter, Neuron capacity and the model servers, from one `pulumi up`."""

import pulumi
import pulumi_aws as aws

from components import config as stack_config
from components.cluster import SYSTEM_NODE_LABEL, SYSTEM_TOLERATIONS, EksCluster, EksClusterArgs
from components.karpenter import Karpenter, KarpenterArgs
from components.network import Network, NetworkArgs, lookup_availability_zones
from components.neuron_capacity import NeuronCapacity, NeuronCapacityArgs
from components.vllm import VllmModel, VllmModelArgs, VllmNamespace, VllmNamespaceArgs

# Everything is read and checked before the first resource is registered.
config = stack_config.from_pulumi()
zones = lookup_availability_zones(config.neuron.instance_types)
tags = {"app.kubernetes.io/part-of": config.project, "pulumi-stack": config.stack}

network = Network(config.cluster_name, NetworkArgs(
    cluster_name=config.cluster_name,
    availability_zones=zones,
    cidr_block=config.vpc_cidr,
))

cluster = EksCluster(config.cluster_name, EksClusterArgs(
    cluster_name=config.cluster_name,
    kubernetes_version=config.kubernetes_version,
    vpc_id=network.vpc_id,
    private_subnet_ids=network.private_subnet_ids,
    public_subnet_ids=network.public_subnet_ids,
    admin_principal_arns=config.cluster_admin_arns,
    public_access_cidrs=config.api_public_access_cidrs,
    addon_versions=config.addon_versions,
    aws_profile=config.aws_profile,
    system_node_instance_type=config.system_nodes.instance_type,
    system_node_count=config.system_nodes.count,
    tags=tags,
))

karpenter = Karpenter("karpenter", KarpenterArgs(
    cluster_name=cluster.name,
    cluster_endpoint=cluster.endpoint,
    k8s_provider=cluster.provider,
    node_selector=SYSTEM_NODE_LABEL,
    tolerations=SYSTEM_TOLERATIONS,
    controller_prerequisites=cluster.ready,
    tags=tags,
))

capacity = NeuronCapacity("neuron", NeuronCapacityArgs(
    discovery_tags=cluster.node_discovery_tags,
    node_role_name=karpenter.node_role_name,
    k8s_provider=cluster.provider,
    instance_types=config.neuron.instance_types,
    capacity_types=config.neuron.capacity_types,
    max_neuron_devices=config.neuron.max_neuron_devices,
    capacity_reservation_ids=config.neuron.capacity_reservation_ids,
    karpenter_ready=karpenter.ready,
    tags=tags,
))

namespace = VllmNamespace(config.vllm.namespace, VllmNamespaceArgs(
    name=config.vllm.namespace,
    kubernetes_version=config.kubernetes_version,
    k8s_provider=cluster.provider,
    max_neuron_devices=config.neuron.max_neuron_devices,
))

models = [
    VllmModel(model.name, VllmModelArgs(
        model=model,
        namespace=namespace.name,
        image=config.vllm.image,
        k8s_provider=cluster.provider,
        instance_types=config.neuron.instance_types,
        spare_neuron_devices=config.spare_neuron_devices,
        client_namespaces=config.vllm.client_namespaces,
        rollout_timeout_minutes=config.vllm.rollout_timeout_minutes,
        capacity_ready=capacity.ready,
    ))
    for model in config.vllm.models
]

pulumi.export("region", aws.get_region_output().region)
pulumi.export("clusterName", cluster.name)
pulumi.export("availabilityZones", zones)
pulumi.export("kubeconfig", pulumi.Output.secret(cluster.kubeconfig))
pulumi.export("models", {
    model.served_model_name: {"url": model.url, "servedModelName": model.served_model_name, "tryIt": model.try_it}
    for model in models
})
