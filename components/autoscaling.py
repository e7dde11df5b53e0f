"""Autoscaling on load: KEDA scales a model's Deployment between `replicas` and `maxReplicas` on the requests its
replicas carry, read from Amazon Managed Service for Prometheus; Karpenter brings the Neuron nodes.

KEDA's Prometheus trigger is an AverageValue target: desired = ceil(query / target), whatever the current
count (FACTS section 8). The query is running + waiting requests of the model: on waiting requests alone,
new replicas drain the queue, the query drops to zero, KEDA scales back and the queue returns, each cycle a
cold start. Scale-down waits for the HPA's stabilization window; KEDA's cooldownPeriod only governs scaling
to zero, which never happens here (`replicas` is at least 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import iam, versions
from components.config import ModelConfig
from components.observability.workspace import query_policy

NAMESPACE = "keda"
OPERATOR_SERVICE_ACCOUNT = "keda-operator"  # the chart's serviceAccount.operator.name
TRIGGER_AUTHENTICATION = "amazon-managed-prometheus"
# How often KEDA asks the workspace; the managed collector scrapes every 30 s, faster polling sees nothing new.
POLLING_SECONDS = 30
# Scale down at most one pod per five minutes, and only after the load has stayed low for ten: a replica
# takes minutes to start, so removing one on a short lull costs a cold start when the load returns.
SCALE_DOWN_WINDOW_SECONDS = 600
SCALE_DOWN_PERIOD_SECONDS = 300
# Queries that fail this many polls in a row hold the count (never below `replicas`) instead of guessing.
FALLBACK_FAILURES = 3


def load_query(namespace: str, model: str) -> str:
    """Requests a model's pods are running or queueing, summed over its pods (0 when none report)."""
    match = f'namespace="{namespace}",model="{model}"'
    return (f"(sum(vllm:num_requests_running{{{match}}}) or vector(0)) + "
            f"(sum(vllm:num_requests_waiting{{{match}}}) or vector(0))")


@dataclass
class AutoscalingArgs:
    models: Sequence[ModelConfig]
    model_namespace: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    region: pulumi.Input[str]
    workspace_id: pulumi.Input[str]
    workspace_arn: pulumi.Input[str]
    k8s_provider: k8s.Provider
    # Where KEDA runs: the system nodes.
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    # The model Deployments: a ScaledObject takes over a Deployment's replica count once it exists.
    deployments: Sequence[pulumi.Resource] = ()
    # System nodes with DNS and Pod Identity (EksCluster.ready): KEDA's pods need them to start.
    cluster_ready: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


class Autoscaling(pulumi.ComponentResource):
    """KEDA (official chart, with Pod Identity to query the workspace) and a ScaledObject per autoscaled model."""

    def __init__(self, name: str, args: AutoscalingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:Autoscaling", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={
            "name": NAMESPACE,
            # The chart's pods are non-root, drop every capability and use the runtime's seccomp profile.
            "labels": {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")},
        }, opts=child)
        identity = iam.pod_identity(
            f"{name}-keda", self, cluster_name=args.cluster_name, namespace=NAMESPACE,
            service_account=OPERATOR_SERVICE_ACCOUNT, description="KEDA operator: reads model load from the workspace",
            policy=pulumi.Output.from_input(args.workspace_arn).apply(lambda arn: json.dumps(query_policy(arn))),
            tags=args.tags)

        resources = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
        self.values = {
            "nodeSelector": dict(args.node_selector),
            "tolerations": [dict(t) for t in args.tolerations],
            "resources": {"operator": resources, "metricServer": resources, "webhooks": resources},
            "serviceAccount": {"operator": {"name": OPERATOR_SERVICE_ACCOUNT}},
        }
        self.release = k8s.helm.v3.Release(f"{name}-keda", k8s.helm.v3.ReleaseArgs(
            name="keda",
            chart=versions.KEDA_CHART,
            version=versions.KEDA_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.KEDA_CHART_REPOSITORY),
            namespace=NAMESPACE,
            values=self.values,
        ), pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                  depends_on=[namespace, identity.association, identity.policy, *args.cluster_ready]))

        # On `pulumi destroy` these go before the release, while KEDA can still remove their finalizers.
        after_keda = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                            depends_on=[self.release, *args.deployments])
        authentication = k8s.apiextensions.CustomResource(f"{name}-trigger-authentication",
            api_version="keda.sh/v1alpha1", kind="TriggerAuthentication",
            metadata={"name": TRIGGER_AUTHENTICATION, "namespace": args.model_namespace},
            # The operator's own credentials (EKS Pod Identity on keda/keda-operator), KEDA >= 2.13.
            spec={"podIdentity": {"provider": "aws", "identityOwner": "keda"}},
            opts=after_keda)
        server = pulumi.Output.concat("https://aps-workspaces.", args.region, ".amazonaws.com/workspaces/",
                                      args.workspace_id)
        for model in args.models:
            k8s.apiextensions.CustomResource(f"{name}-{model.name}", api_version="keda.sh/v1alpha1",
                kind="ScaledObject",
                metadata={"name": model.name, "namespace": args.model_namespace},
                spec=_scaled_object_spec(model, args.model_namespace, server, args.region),
                opts=pulumi.ResourceOptions.merge(after_keda, pulumi.ResourceOptions(depends_on=[authentication])))
        self.register_outputs({"namespace": NAMESPACE})


def _scaled_object_spec(model: ModelConfig, namespace: pulumi.Input[str], server: pulumi.Input[str],
                        region: pulumi.Input[str]) -> dict:
    return {
        "scaleTargetRef": {"name": model.name},
        "minReplicaCount": model.replicas,
        "maxReplicaCount": model.max_replicas,
        "pollingInterval": POLLING_SECONDS,
        "fallback": {"failureThreshold": FALLBACK_FAILURES, "replicas": model.replicas,
                     "behavior": "currentReplicasIfHigher"},
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
            "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_SECONDS,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": SCALE_DOWN_PERIOD_SECONDS}]},
            # Add a pod as soon as the load says so; each one still needs minutes to serve.
            "scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 1, "periodSeconds": POLLING_SECONDS}]},
        }}},
        "triggers": [{
            "type": "prometheus",
            "authenticationRef": {"name": TRIGGER_AUTHENTICATION},
            "metadata": {
                "serverAddress": server,
                "awsRegion": region,
                "query": pulumi.Output.from_input(namespace).apply(lambda ns: load_query(ns, model.name)),
                # Requests per replica: desired = ceil(load / target).
                "threshold": str(model.target_requests_per_replica),
            },
        }],
    }
