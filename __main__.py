"""vLLM on AWS Trainium: network, EKS, Karpenter, Neuron capacity and the model servers, from one `pulumi up`."""

import pulumi
import pulumi_aws as aws

from components import config as stack_config
from components.autoscaling import Autoscaling, AutoscalingArgs
from components.cluster import SYSTEM_NODE_LABEL, SYSTEM_TOLERATIONS, EksCluster, EksClusterArgs
from components.karpenter import Karpenter, KarpenterArgs
from components.model_store import ModelStore, ModelStoreArgs, ModelSync, ModelSyncArgs
from components.network import Network, NetworkArgs, lookup_availability_zones
from components.neuron_capacity import NeuronCapacity, NeuronCapacityArgs
from components.observability.monitoring import (NAMESPACE as MONITORING_NAMESPACE,
                                                 NEURON_MONITOR_NAMESPACE, Monitoring, MonitoringArgs)
from components.observability.workspace import MetricsWorkspace, MetricsWorkspaceArgs
from components.vllm import ModelStoreAccess, VllmModel, VllmModelArgs, VllmNamespace, VllmNamespaceArgs

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

store = ModelStore("model-store", ModelStoreArgs(
    bucket_prefix=f"{config.cluster_name[:28].lower()}-models-",
    vpc_id=network.vpc_id,
    route_table_ids=network.private_route_table_ids,
    tags=tags,
))

namespace = VllmNamespace(config.vllm.namespace, VllmNamespaceArgs(
    name=config.vllm.namespace,
    kubernetes_version=config.kubernetes_version,
    k8s_provider=cluster.provider,
    max_neuron_devices=config.neuron.max_neuron_devices,
    image=config.vllm.image,
    require_api_key=config.vllm.require_api_key,
))

models = []
for index, model in enumerate(config.vllm.models):
    sync = ModelSync(f"{model.name}-sync", ModelSyncArgs(
        model=model,
        namespace=namespace.name,
        cluster_name=cluster.name,
        bucket_name=store.bucket_name,
        bucket_arn=store.bucket_arn,
        region=store.region,
        k8s_provider=cluster.provider,
        node_selector=SYSTEM_NODE_LABEL,
        tolerations=SYSTEM_TOLERATIONS,
        priority_class_name=namespace.sync_priority_class_name,
        await_minutes=config.vllm.rollout_timeout_minutes,
        tags=tags,
    ))
    models.append(VllmModel(model.name, VllmModelArgs(
        model=model,
        setting_path=f"vllm.models[{index}] ({model.name})",
        namespace=namespace,
        image=config.vllm.image,
        cluster_name=cluster.name,
        k8s_provider=cluster.provider,
        store=ModelStoreAccess(bucket_name=store.bucket_name, bucket_arn=store.bucket_arn, region=store.region,
                               sync_job_name=sync.job_name, s3_cidr_blocks=store.s3_cidr_blocks),
        instance_types=config.neuron.instance_types,
        spare_neuron_devices=config.spare_neuron_devices,
        client_namespaces=config.vllm.client_namespaces,
        collector_cidr_blocks=network.collector_cidr_blocks if config.observability.enabled else (),
        rollout_timeout_minutes=config.vllm.rollout_timeout_minutes,
        capacity_ready=capacity.ready,
        tags=tags,
    )))

region = aws.get_region_output().region
if config.observability.enabled:
    metrics = MetricsWorkspace("metrics", MetricsWorkspaceArgs(
        cluster_name=cluster.name,
        cluster_security_group_id=cluster.security_group_id,
        collector_subnet_ids=network.collector_subnet_ids,
        k8s_provider=cluster.provider,
        model_namespace=config.vllm.namespace,
        models=config.vllm.models,
        ttft_target_seconds=config.observability.ttft_target_seconds,
        neuron_device_limit=config.neuron.max_neuron_devices,
        kube_state_metrics_namespace=MONITORING_NAMESPACE,
        neuron_monitor_namespace=NEURON_MONITOR_NAMESPACE,
        alert_emails=config.observability.alert_emails,
        tags=tags,
    ))
    monitoring = Monitoring("monitoring", MonitoringArgs(
        cluster_name=cluster.name,
        k8s_provider=cluster.provider,
        region=region,
        workspace_arn=metrics.workspace_arn,
        query_url=metrics.query_url,
        model_namespace=config.vllm.namespace,
        model_names=[m.name for m in config.vllm.models],
        ttft_target_seconds=config.observability.ttft_target_seconds,
        collector_cidr_blocks=network.collector_cidr_blocks,
        node_selector=SYSTEM_NODE_LABEL,
        tolerations=SYSTEM_TOLERATIONS,
        cluster_ready=cluster.ready,
        tags=tags,
    ))
    autoscaled = [m for m in config.vllm.models if m.autoscaled]
    if autoscaled:
        Autoscaling("autoscaling", AutoscalingArgs(
            models=autoscaled,
            model_namespace=namespace.name,
            cluster_name=cluster.name,
            region=region,
            workspace_id=metrics.workspace_id,
            workspace_arn=metrics.workspace_arn,
            k8s_provider=cluster.provider,
            node_selector=SYSTEM_NODE_LABEL,
            tolerations=SYSTEM_TOLERATIONS,
            deployments=[model.deployment for model in models if model.autoscaled],
            cluster_ready=cluster.ready,
            tags=tags,
        ))
    pulumi.export("metricsWorkspace", metrics.query_url)
    pulumi.export("grafanaAdminPassword", monitoring.admin_password)

pulumi.export("region", region)
pulumi.export("clusterName", cluster.name)
pulumi.export("availabilityZones", zones)
pulumi.export("kubeconfig", pulumi.Output.secret(cluster.kubeconfig))
pulumi.export("modelStore", store.bucket_name)
if namespace.api_key is not None:
    pulumi.export("apiKey", namespace.api_key)
pulumi.export("models", {
    model.served_model_name: {"url": model.url, "servedModelName": model.served_model_name, "tryIt": model.try_it}
    for model in models
})
