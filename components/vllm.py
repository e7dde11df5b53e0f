"""The model servers: a namespace, and per model a vLLM Deployment, Service, PodDisruptionBudget and
NetworkPolicy, as on the EKS Workshop page "Serving the model", hardened.

A user can follow the workshop word for word: `kubectl get deployment -n vllm` shows `mistral`, its pod
has the init container `model-download` and the container `vllm`, and `http://mistral.vllm:8080` serves
the OpenAI-compatible API with the model named `mistral`.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import neuron, versions
from components.config import ModelConfig

PORT = 8080
MODELS_DIR = "/models"
# Not root, and above the UIDs a node's own users take. Neuron device files are world-read/writable
# (udev rule of aws-neuronx-dkms), so the server needs no root, capability or privilege to use them.
USER_ID = 10001
DOWNLOAD_FILES = Path(__file__).parent / "model_download"
PART_OF = "trainium-vllm"
# Set by Karpenter on the nodes it launches (karpenter-provider-aws well-known labels).
INSTANCE_FAMILY_LABEL = "karpenter.k8s.aws/instance-family"

# Checks checkov cannot see satisfied, or that do not apply; each one is skipped on the object, with why.
DIGEST_SKIP = ("CKV_K8S_43=Images are pinned to release tags in components/versions.py; digests cannot be "
               "resolved offline. Pin the digest there after pulling the image once.")


@dataclass
class VllmNamespaceArgs:
    name: str
    kubernetes_version: str
    k8s_provider: k8s.Provider
    # The ceiling on Neuron devices all model pods together may request, whichever NodePool they land in.
    max_neuron_devices: int


class VllmNamespace(pulumi.ComponentResource):
    """The namespace of the model servers: Pod Security `restricted`, and traffic denied unless allowed."""

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
        # Every pod here starts with no traffic in or out; each model's policy opens what it needs.
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", metadata={
            "name": "default-deny", "namespace": self.name,
        }, spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=child)
        # Karpenter's limits are per NodePool; this quota is the one ceiling across them: a pod beyond it is
        # refused at creation, never Pending, so no NodePool launches a node for it.
        k8s.core.v1.ResourceQuota(f"{name}-neuron-devices", metadata={
            "name": "neuron-devices", "namespace": self.name,
        }, spec={"hard": {f"requests.{neuron.NEURON_DEVICE_RESOURCE}": str(args.max_neuron_devices)}}, opts=child)
        self.register_outputs({"name": self.name})


@dataclass
class VllmModelArgs:
    model: ModelConfig
    namespace: pulumi.Input[str]
    image: str
    k8s_provider: k8s.Provider
    # The Neuron instance types the pod must fit, whichever Karpenter picks.
    instance_types: Sequence[str]
    # Neuron devices left under the NodePool's limit once every model runs: is there room for a
    # second copy of this one during an update?
    spare_neuron_devices: int
    # Namespaces whose pods may call the model; empty means all of the cluster.
    client_namespaces: Sequence[str] = ()
    # How long `pulumi up` waits for the model to be ready; 0: it does not wait.
    rollout_timeout_minutes: int = 45
    # The Neuron node pool and device plugin: nowhere to run before them.
    capacity_ready: Sequence[pulumi.Resource] = ()


class VllmModel(pulumi.ComponentResource):
    """One model: a vLLM Deployment on Neuron nodes, its Service, disruption budget and network policy."""

    def __init__(self, name: str, args: VllmModelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:VllmModel", name, None, opts)
        model = args.model
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self.labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": model.name,
                       "app.kubernetes.io/component": "model-server", "app.kubernetes.io/part-of": PART_OF}
        selector = {k: self.labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}

        script = (DOWNLOAD_FILES / "download.sh").read_text()
        requirements = (DOWNLOAD_FILES / "requirements.txt").read_text()
        download = k8s.core.v1.ConfigMap(f"{name}-model-download", metadata={
            "name": f"{model.name}-model-download", "namespace": args.namespace, "labels": self.labels,
        }, data={"download.sh": script, "requirements.txt": requirements}, opts=child)

        self.deployment = k8s.apps.v1.Deployment(name, metadata={
            "name": model.name,
            "namespace": args.namespace,
            "labels": self.labels,
            "annotations": {
                "checkov.io/skip1": DIGEST_SKIP,
                **({"pulumi.com/skipAwait": "true"} if args.rollout_timeout_minutes == 0 else {}),
            },
        }, spec={
            "replicas": model.replicas,
            "selector": {"matchLabels": selector},
            "strategy": _strategy(model, args.spare_neuron_devices),
            # A cold start (node launch, image pull, download, load) takes long; do not call it stalled.
            "progressDeadlineSeconds": max(args.rollout_timeout_minutes, 60) * 60,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": self.labels,
                    "annotations": {
                        # Consolidation must not evict a model that takes many minutes to load.
                        "karpenter.sh/do-not-disrupt": "true",
                        # Roll the pods when the download script or its locked tools change.
                        "trainium-vllm/model-download-sha256":
                            hashlib.sha256((script + requirements).encode()).hexdigest(),
                    },
                },
                "spec": _pod_spec(model, args.image, args.instance_types, download_config_map=f"{model.name}-model-download"),
            },
        }, opts=pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=[download, *args.capacity_ready],
            custom_timeouts=_await_budget(args.rollout_timeout_minutes),
        ))

        self.service = k8s.core.v1.Service(f"{name}-service", metadata={
            "name": model.name,
            "namespace": args.namespace,
            "labels": self.labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                            "prometheus.io/path": "/metrics"},
        }, spec={
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        }, opts=child)

        k8s.policy.v1.PodDisruptionBudget(f"{name}-disruption-budget", metadata={
            "name": model.name, "namespace": args.namespace, "labels": self.labels,
        }, spec={
            "selector": {"matchLabels": selector},
            # With several replicas, keep all but one serving. A single replica may not be evicted at
            # all: a drain waits for the NodePool's terminationGracePeriod instead.
            "minAvailable": max(model.replicas - 1, 1),
        }, opts=child)

        clients = ({"namespaceSelector": {"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": list(args.client_namespaces)}]}}
                   if args.client_namespaces else {"namespaceSelector": {}})
        k8s.networking.v1.NetworkPolicy(f"{name}-network-policy", metadata={
            "name": model.name, "namespace": args.namespace, "labels": self.labels,
        }, spec={
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            # Pods of the cluster (kubelet probes from the node are always allowed by the VPC CNI).
            "ingress": [{"from": [clients], "ports": [{"port": PORT, "protocol": "TCP"}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                # The download reaches PyPI and Hugging Face over HTTPS; never the instance metadata.
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                 "ports": [{"port": 443, "protocol": "TCP"}]},
            ],
        }, opts=child)

        self.url = pulumi.Output.concat("http://", model.name, ".", args.namespace, f":{PORT}")
        self.served_model_name = model.name
        self.try_it = pulumi.Output.from_input(args.namespace).apply(lambda ns: _try_it_command(model.name, ns))
        self.register_outputs({"url": self.url, "servedModelName": self.served_model_name, "tryIt": self.try_it})


def _strategy(model: ModelConfig, spare_neuron_devices: int) -> dict:
    # A rolling update starts a new pod before stopping an old one; that pod needs its own devices.
    if spare_neuron_devices >= model.neuron_devices:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "Recreate"}


def _await_budget(minutes: int) -> pulumi.CustomTimeouts | None:
    if minutes == 0:
        return None
    return pulumi.CustomTimeouts(create=f"{minutes}m", update=f"{minutes}m")


def _restricted(read_only_root: bool = True) -> dict:
    """Container security context that Pod Security `restricted` admits."""
    return {"allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": read_only_root,
            "runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _env(variables: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in variables.items()]


def _pod_spec(model: ModelConfig, image: str, instance_types: Sequence[str], download_config_map: str) -> dict:
    model_dir = f"{MODELS_DIR}/{model.name}"
    size = neuron.pod_size(model.neuron_devices, instance_types, model.neuron_core_version)
    devices = str(model.neuron_devices)
    serve = ["vllm", "serve", model_dir,
             "--served-model-name", model.name,
             "--tokenizer", model_dir,
             "--device", "neuron",
             "--tensor-parallel-size", str(model.tensor_parallel_size),
             "--max-num-seqs", str(model.max_num_seqs),
             "--max-model-len", str(model.max_model_len),
             "--dtype", "bfloat16",
             "--host", "0.0.0.0",
             "--port", str(PORT)]
    health = {"httpGet": {"path": "/health", "port": "http"}}
    return {
        "nodeSelector": neuron.NEURON_NODE_SELECTOR,
        "tolerations": [neuron.NEURON_TOLERATION],
        # Pre-compiled artifacts run only on the NeuronCore generation they were compiled for.
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": INSTANCE_FAMILY_LABEL, "operator": "In",
                                  "values": neuron.families_for(model.neuron_core_version, instance_types)}],
        }]}}},
        "automountServiceAccountToken": False,  # the server never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{
            "name": "model-download",
            "image": versions.MODEL_DOWNLOAD_IMAGE,
            "imagePullPolicy": "Always",
            "command": ["/bin/sh", "/etc/model-download/download.sh"],
            "env": _env({
                "MODEL_REPO": model.hugging_face_repo,
                "MODEL_DIR": model_dir,
                "TOOLS_DIR": "/tmp/tools",
                "HOME": "/tmp",
                "HF_HOME": "/tmp/hf",
                # Xet downloads stalled (workshop fix, May 2026): plain HTTPS from the Hub's CDN instead.
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_UPDATE_CHECK": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            }),
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
            "securityContext": _restricted(),
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR},
                             {"name": "download", "mountPath": "/etc/model-download", "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "containers": [{
            "name": "vllm",
            "image": image,
            "imagePullPolicy": "Always",
            # vllm directly, not the image's Python wrapper, so SIGTERM reaches the server.
            "command": serve,
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": _env({
                "NEURON_RT_NUM_CORES": str(model.tensor_parallel_size),
                "NEURON_COMPILED_ARTIFACTS": model_dir,
                "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
                "MALLOC_ARENA_MAX": "1",
                "VLLM_LOGGING_LEVEL": "INFO",
                # The root filesystem is read-only: every cache goes to /tmp.
                "HOME": "/tmp",
                # The UID has no passwd entry; getpass.getuser() (torch's cache paths) reads these first.
                "USER": "vllm",
                "LOGNAME": "vllm",
                "HF_HOME": "/tmp/hf",
                "NEURON_COMPILE_CACHE_URL": "/tmp/neuron-compile-cache",
                "BASE_COMPILE_WORK_DIR": "/tmp/nxd_model",
                # Everything is on disk already: never reach the Hub or send usage statistics.
                "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }),
            "resources": {
                "requests": {"cpu": size.cpu, "memory": size.memory, neuron.NEURON_DEVICE_RESOURCE: devices},
                "limits": {"cpu": size.cpu, "memory": size.memory, neuron.NEURON_DEVICE_RESOURCE: devices},
            },
            # Loading a 7B model onto Neuron takes minutes: liveness waits until the server has started.
            "startupProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 90},
            "readinessProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
            "livenessProbe": {**health, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 5},
            # Keep serving in-flight requests while the endpoint is removed from the Service.
            "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
            "securityContext": _restricted(),
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR},
                             {"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "download", "configMap": {"name": download_config_map, "defaultMode": 0o555}},
        ],
    }


def workshop_completion(model_name: str) -> dict:
    """The EKS workshop's request (post.json), addressed to the served model name."""
    return {"model": model_name, "prompt": "The names of the colors in the rainbow are: ", "max_tokens": 100,
            "temperature": 0}


def _try_it_command(model_name: str, namespace: str) -> str:
    """A ready-to-paste line: forward the Service to localhost and ask the model something."""
    body = shlex.quote(json.dumps(workshop_completion(model_name)))
    return (f"kubectl port-forward -n {namespace} service/{model_name} {PORT}:{PORT} & sleep 3; "
            f"curl -s http://localhost:{PORT}/v1/completions -H 'Content-Type: application/json' -d {body}")
