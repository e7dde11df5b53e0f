"""The model servers: a namespace, and per model a vLLM Deployment, Service, PodDisruptionBudget and
NetworkPolicy, as on the EKS Workshop page "Serving the model", hardened.

A user can follow the workshop word for word: `kubectl get deployment -n vllm` shows `mistral`, its pod
has the init container `model-download` and the container `vllm`, and `http://mistral.vllm:8080` serves
the OpenAI-compatible API with the model named `mistral` (and `/models/mistral-7b-v0.3`, as post.json has it).
Unlike the workshop, nothing public is on a model pod's start path: the model comes from the stack's S3
model store (components.model_store) and every image from ECR Public.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import iam, model_pod, neuron
from components.config import ModelConfig
from components.model_store import model_prefix, reader_policy
from components.pods import (DIGEST_SKIP, DNS_EGRESS, checkov_skips, POD_IDENTITY_EGRESS, POD_SECURITY_CONTEXT,
                             restricted_container)

PORT = model_pod.PORT
PART_OF = "trainium-vllm"
SERVER_FILES = Path(__file__).parent / "model_server"
SERVER_FILES_CONFIG_MAP = "model-server"
API_KEY_SECRET = "vllm-api-key"
PREPULL = "vllm-image-prepull"
# Below every system add-on (they run at system-cluster-critical or 0): a model sync yields its node.
SYNC_PRIORITY_CLASS = "trainium-vllm-model-sync"


@dataclass
class VllmNamespaceArgs:
    name: str
    kubernetes_version: str
    k8s_provider: k8s.Provider
    # The ceiling on Neuron devices all model pods together may request, whichever NodePool they land in.
    max_neuron_devices: int
    # The vLLM image, pulled onto every Neuron node as soon as it is ready.
    image: str
    require_api_key: bool = True


class VllmNamespace(pulumi.ComponentResource):
    """The model servers' namespace (Pod Security `restricted`, default-deny, a Neuron device quota) and what
    the models share: the server's start files, the API key, the image pre-pull."""

    def __init__(self, name: str, args: VllmNamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:VllmNamespace", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        pod_security = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
        self.namespace = k8s.core.v1.Namespace(name, metadata={
            "name": args.name,
            "labels": {**pod_security, "pod-security.kubernetes.io/enforce-version": f"v{args.kubernetes_version}",
                       "app.kubernetes.io/part-of": PART_OF},
        }, opts=child)
        self.name: pulumi.Output[str] = self.namespace.metadata["name"]
        # Every pod here starts with no traffic in or out; each workload's policy opens what it needs.
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", metadata={
            "name": "default-deny", "namespace": self.name,
        }, spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)
        # Karpenter's limits are per NodePool; this quota is the one ceiling across them: a pod beyond it is
        # refused at creation, never Pending, so no NodePool launches a node for it.
        k8s.core.v1.ResourceQuota(f"{name}-neuron-devices", metadata={
            "name": "neuron-devices", "namespace": self.name,
        }, spec={"hard": {f"requests.{neuron.NEURON_DEVICE_RESOURCE}": str(args.max_neuron_devices)}}, opts=child)

        files = {path.name: path.read_text() for path in sorted(SERVER_FILES.iterdir()) if path.is_file()}
        self.server_files = k8s.core.v1.ConfigMap(f"{name}-server-files", metadata={
            "name": SERVER_FILES_CONFIG_MAP, "namespace": self.name, "labels": {"app.kubernetes.io/part-of": PART_OF},
        }, data=files, opts=child)
        # Pods roll when the start path changes.
        self.server_files_sha256 = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

        self.api_key: pulumi.Output[str] | None = None
        self.api_key_sha256: pulumi.Output[str] | None = None
        if args.require_api_key:
            key = random.RandomPassword(f"{name}-api-key", random.RandomPasswordArgs(length=48, special=False),
                                        pulumi.ResourceOptions(parent=self))
            k8s.core.v1.Secret(f"{name}-api-key", metadata={
                "name": API_KEY_SECRET, "namespace": self.name, "labels": {"app.kubernetes.io/part-of": PART_OF},
            }, string_data={"api-key": key.result}, opts=child)
            self.api_key = pulumi.Output.secret(key.result)
            # A digest of a 48-character random key reveals nothing; as a pod annotation it rolls the pods.
            self.api_key_sha256 = pulumi.Output.unsecret(key.result.apply(lambda k: hashlib.sha256(k.encode()).hexdigest()))

        priority = k8s.scheduling.v1.PriorityClass(f"{name}-sync-priority", metadata={"name": SYNC_PRIORITY_CLASS},
            value=-10, preemption_policy="Never", global_default=False,
            description="Model sync Jobs: below every system add-on, never preempting one.", opts=child)
        # An output of the PriorityClass, so a sync Job is created only once its priority exists.
        self.sync_priority_class_name: pulumi.Output[str] = priority.metadata["name"]

        self._image_prepull(name, args, child)
        self.register_outputs({"name": self.name})

    def _image_prepull(self, name: str, args: VllmNamespaceArgs, opts: pulumi.ResourceOptions) -> None:
        """Pull the ~10 GB vLLM image onto each Neuron node as soon as it is ready, while the model pod's init
        container is still copying the model (kubelet pulls images in parallel: AL2023's nodeadm sets
        serializeImagePulls false), instead of after it, when the server container starts."""
        labels = {"app.kubernetes.io/name": PREPULL, "app.kubernetes.io/part-of": PART_OF}
        k8s.apps.v1.DaemonSet(f"{name}-image-prepull", metadata={
            "name": PREPULL, "namespace": self.name, "labels": labels, "annotations": checkov_skips({
                **DIGEST_SKIP,
                "CKV_K8S_8": "The container only sleeps so the image stays on the node; there is no process to "
                             "probe for liveness.",
                "CKV_K8S_9": "The container only sleeps so the image stays on the node; it serves nothing, so "
                             "there is nothing to be ready for.",
            }),
        }, spec={
            "selector": {"matchLabels": labels},
            # A new image: every node starts pulling it at once, ahead of the model pods.
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": neuron.NEURON_NODE_SELECTOR,
                    "tolerations": [neuron.NEURON_TOLERATION],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 1,
                    "securityContext": POD_SECURITY_CONTEXT,
                    # Keeping a container of the image running keeps the image from being garbage-collected.
                    "containers": [restricted_container({
                        "name": "image",
                        "image": args.image,
                        "command": ["sleep", "infinity"],
                        "resources": {"requests": model_pod.PREPULL_RESOURCES, "limits": model_pod.PREPULL_RESOURCES},
                    })],
                },
            },
        }, opts=opts)


@dataclass
class ModelStoreAccess:
    """Where a model's files are: the store's bucket, the Job that fills it, and the S3 addresses to reach it."""

    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    region: pulumi.Input[str]
    sync_job_name: str
    s3_cidr_blocks: pulumi.Input[Sequence[str]]


@dataclass
class VllmModelArgs:
    model: ModelConfig
    # How the settings name this model in error messages, e.g. "vllm.models[0] (mistral)".
    setting_path: str
    namespace: VllmNamespace
    image: str
    cluster_name: pulumi.Input[str]
    k8s_provider: k8s.Provider
    store: ModelStoreAccess
    # The Neuron instance types the pod must fit, whichever Karpenter picks.
    instance_types: Sequence[str]
    # Neuron devices left under the ceiling once every model runs at its maximum: is there room for a
    # second copy of this one during an update?
    spare_neuron_devices: int
    # Namespaces whose pods may call the model; empty means all of the cluster.
    client_namespaces: Sequence[str] = ()
    # Address ranges of the metrics collector, admitted to the server port; empty: no collector.
    collector_cidr_blocks: Sequence[str] = ()
    # How long `pulumi up` waits for the model to be ready; 0: it does not wait.
    rollout_timeout_minutes: int = 45
    # The Neuron node pools and device plugin: nowhere to run before them.
    capacity_ready: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


class VllmModel(pulumi.ComponentResource):
    """One model: a vLLM Deployment on Neuron nodes, its Service, disruption budget, network policy, and the
    read-only identity its pods copy the model with."""

    def __init__(self, name: str, args: VllmModelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:VllmModel", name, None, opts)
        model = args.model
        namespace = args.namespace.name
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self.labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": model.name,
                       "app.kubernetes.io/component": "model-server", "app.kubernetes.io/part-of": PART_OF}
        selector = {k: self.labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

        service_account = k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata={
            "name": model.name, "namespace": namespace, "labels": self.labels,
        }, automount_service_account_token=False, opts=child)
        reader = iam.pod_identity(
            f"{name}-reader", self, cluster_name=args.cluster_name, namespace=namespace,
            service_account=model.name, description=f"Model pods of {model.name}: read its prefix of the model store",
            policy=pulumi.Output.from_input(args.store.bucket_arn).apply(
                lambda arn: json.dumps(reader_policy(arn, model.name))),
            tags=args.tags)

        annotations = {
            # Consolidation must not evict a model that takes minutes to start.
            "karpenter.sh/do-not-disrupt": "true",
            # Roll the pods when their start files or the API key change.
            "trainium-vllm/server-files-sha256": args.namespace.server_files_sha256,
            **({"trainium-vllm/api-key-sha256": args.namespace.api_key_sha256}
               if args.namespace.api_key_sha256 is not None else {}),
        }
        pod = model_pod.PodSettings(
            model=model, setting_path=args.setting_path, image=args.image, instance_types=args.instance_types,
            service_account=model.name, bucket_name=args.store.bucket_name, region=args.store.region,
            prefix=model_prefix(model.name),
            sync_job_name=args.store.sync_job_name, server_files_config_map=SERVER_FILES_CONFIG_MAP,
            api_key_secret=API_KEY_SECRET if args.namespace.api_key is not None else None)
        self.deployment = k8s.apps.v1.Deployment(name, metadata={
            "name": model.name,
            "namespace": namespace,
            "labels": self.labels,
            "annotations": {
                **checkov_skips(DIGEST_SKIP),
                **({"pulumi.com/skipAwait": "true"} if args.rollout_timeout_minutes == 0 else {}),
            },
        }, spec={
            # With autoscaling, the starting point only: KEDA owns the count afterwards (ignore_changes below).
            "replicas": model.replicas,
            "selector": {"matchLabels": selector},
            "strategy": _strategy(model, args.spare_neuron_devices),
            # A cold start (node launch, image pull, model copy, load) takes long; do not call it stalled.
            "progressDeadlineSeconds": max(args.rollout_timeout_minutes, 60) * 60,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": self.labels, "annotations": annotations},
                "spec": model_pod.pod_spec(pod),
            },
        }, opts=pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider,
            depends_on=[args.namespace.server_files, service_account, reader.association, reader.policy,
                        *args.capacity_ready],
            custom_timeouts=_await_budget(args.rollout_timeout_minutes),
            # A later `pulumi up` must not reset the replica count KEDA set.
            ignore_changes=["spec.replicas"] if model.autoscaled else None,
        ))

        self.service = k8s.core.v1.Service(f"{name}-service", metadata={
            "name": model.name,
            "namespace": namespace,
            "labels": self.labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                            "prometheus.io/path": "/metrics",
                            # pulumi-kubernetes waits up to 10 minutes for a Service's endpoints; a cold start
                            # takes longer. Readiness is the Deployment's await (rolloutTimeoutMinutes).
                            "pulumi.com/skipAwait": "true"},
        }, spec={
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        }, opts=child)

        k8s.policy.v1.PodDisruptionBudget(f"{name}-disruption-budget", metadata={
            "name": model.name, "namespace": namespace, "labels": self.labels,
        }, spec={"selector": {"matchLabels": selector}, **_disruption_budget(model)}, opts=child)

        clients = ({"namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": list(args.client_namespaces)}]}}
                   if args.client_namespaces else {"namespaceSelector": {}})
        collector = [{"ipBlock": {"cidr": cidr}} for cidr in args.collector_cidr_blocks]
        k8s.networking.v1.NetworkPolicy(f"{name}-network-policy", metadata={
            "name": model.name, "namespace": namespace, "labels": self.labels,
        }, spec={
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            # The clients, and the metrics collector from its own subnets (kubelet probes from the node are
            # always allowed by the VPC CNI).
            "ingress": [{"from": [clients, *collector], "ports": [{"port": PORT, "protocol": "TCP"}]}],
            # The model copy reaches S3 (in-region, through the gateway endpoint) with Pod Identity
            # credentials; the server itself reaches nothing.
            "egress": [DNS_EGRESS, POD_IDENTITY_EGRESS, {
                "to": pulumi.Output.from_input(args.store.s3_cidr_blocks).apply(
                    lambda blocks: [{"ipBlock": {"cidr": cidr}} for cidr in blocks]),
                "ports": [{"port": 443, "protocol": "TCP"}],
            }],
        }, opts=child)

        self.autoscaled = model.autoscaled
        self.url = pulumi.Output.concat("http://", model.name, ".", namespace, f":{PORT}")
        self.served_model_name = model.name
        self.try_it = pulumi.Output.from_input(namespace).apply(
            lambda ns: _try_it_command(model.name, ns, args.namespace.api_key is not None))
        self.register_outputs({"url": self.url, "servedModelName": self.served_model_name, "tryIt": self.try_it})


def _strategy(model: ModelConfig, spare_neuron_devices: int) -> dict:
    # A rolling update starts a new pod before stopping an old one; that pod needs its own devices.
    if spare_neuron_devices >= model.neuron_devices:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "Recreate"}


def _disruption_budget(model: ModelConfig) -> dict:
    # One pod that never scales may not be evicted at all: a drain waits for the NodePool's
    # terminationGracePeriod instead. Otherwise one pod at a time, whatever the count KEDA set.
    if model.replicas == model.max_replicas == 1:
        return {"minAvailable": 1}
    return {"maxUnavailable": 1}


def _await_budget(minutes: int) -> pulumi.CustomTimeouts | None:
    if minutes == 0:
        return None
    return pulumi.CustomTimeouts(create=f"{minutes}m", update=f"{minutes}m")


def workshop_completion(model_name: str) -> dict:
    """The EKS workshop's request (post.json), addressed to the served model name."""
    return {"model": model_name, "prompt": "The names of the colors in the rainbow are: ", "max_tokens": 100,
            "temperature": 0}


def _try_it_command(model_name: str, namespace: str, with_key: bool) -> str:
    """A ready-to-paste line: forward the Service to localhost and ask the model something."""
    body = shlex.quote(json.dumps(workshop_completion(model_name)))
    key = (" -H \"Authorization: Bearer $(pulumi stack output apiKey --show-secrets)\"" if with_key else "")
    return (f"kubectl port-forward -n {namespace} service/{model_name} {PORT}:{PORT} & sleep 3; "
            f"curl -s http://localhost:{PORT}/v1/completions -H 'Content-Type: application/json'{key} -d {body}")
