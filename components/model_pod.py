"""A model server's pod: copy the model from the store, check it, serve it.

    init container `model-download` (AWS CLI image)   fetch-model.sh: waits for the model's sync Job if it has
                                                      not finished, then copies s3://<store>/models/<model>/<revision>/
                                                      to /models/<model> with the CRT transfer client
    container `vllm` (the Neuron vLLM image)          start.py: refuses artifacts compiled for other settings,
                                                      then execs `vllm serve`, which requires the API key on
                                                      every path but health and metrics (api_key_auth.py)

The three scripts live in components/model_server/ and reach the pod through one ConfigMap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi

from components import neuron, versions
from components.config import ModelConfig
from components.pods import POD_SECURITY_CONTEXT, env, restricted_container

PORT = 8080
MODELS_DIR = "/models"
SERVER_FILES_DIR = "/etc/model-server"
# Only the middleware module, on PYTHONPATH: nothing else there can shadow a module vLLM imports.
MIDDLEWARE_DIR = "/etc/vllm-middleware"
MIDDLEWARE_FILE = "api_key_auth.py"
# The API key, as a file (a key in the environment is readable by anything that reads the process's).
API_KEY_DIR = "/etc/vllm-api-key"
# Set by Karpenter on the nodes it launches (karpenter-provider-aws well-known labels).
INSTANCE_FAMILY_LABEL = "karpenter.k8s.aws/instance-family"
# How long a new pod waits for its model's first sync before it gives up and restarts.
SYNC_WAIT_SECONDS = 3600
MODEL_DOWNLOAD_RESOURCES = {"requests": {"cpu": "1", "memory": "1536Mi"}, "limits": {"cpu": "2", "memory": "1536Mi"}}
# The pre-pull DaemonSet's container only sleeps; part of neuron.DAEMONSET_* headroom.
PREPULL_RESOURCES = {"cpu": "10m", "memory": "16Mi"}


@dataclass(frozen=True)
class PodSettings:
    model: ModelConfig
    setting_path: str
    image: str
    instance_types: Sequence[str]
    service_account: str
    bucket_name: pulumi.Input[str]
    region: pulumi.Input[str]
    prefix: str
    sync_job_name: str
    server_files_config_map: str
    # The Secret holding the API key; None: no key required.
    api_key_secret: str | None


def serve_command(model: ModelConfig, api_key_required: bool) -> list[str]:
    model_dir = f"{MODELS_DIR}/{model.name}"
    return ["vllm", "serve", model_dir,
            # The first name is the one responses and metrics report.
            "--served-model-name", *model.served_model_names,
            "--tokenizer", model_dir,
            "--device", "neuron",
            "--tensor-parallel-size", str(model.tensor_parallel_size),
            "--max-num-seqs", str(model.max_num_seqs),
            "--max-model-len", str(model.max_model_len),
            "--dtype", "bfloat16",
            "--host", "0.0.0.0",
            "--port", str(PORT),
            # vLLM's own --api-key check covers only /v1 paths; this one covers every path but health and metrics.
            *(["--middleware", "api_key_auth.ApiKeyAuth"] if api_key_required else [])]


def pod_spec(settings: PodSettings) -> dict:
    model = settings.model
    model_dir = f"{MODELS_DIR}/{model.name}"
    size = neuron.pod_size(model.neuron_devices, settings.instance_types, model.neuron_core_version)
    devices = str(model.neuron_devices)
    health = {"httpGet": {"path": "/health", "port": "http"}}
    api_key = settings.api_key_secret is not None
    return {
        "serviceAccountName": settings.service_account,
        "nodeSelector": neuron.NEURON_NODE_SELECTOR,
        "tolerations": [neuron.NEURON_TOLERATION],
        # Pre-compiled artifacts run only on the NeuronCore generation they were compiled for.
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": INSTANCE_FAMILY_LABEL, "operator": "In",
                                  "values": neuron.families_for(model.neuron_core_version, settings.instance_types)}],
        }]}}},
        # No pod talks to the Kubernetes API; Pod Identity brings its own token volume.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": POD_SECURITY_CONTEXT,
        "initContainers": [restricted_container({
            "name": "model-download",
            "image": versions.AWS_CLI_IMAGE,
            "command": ["/bin/bash", f"{SERVER_FILES_DIR}/fetch-model.sh"],
            "env": env({
                "MODEL_BUCKET": settings.bucket_name,
                "MODEL_PREFIX": settings.prefix,
                "AWS_REGION": settings.region,
                "MODEL_REPO": model.hugging_face_repo,
                "MODEL_REVISION": model.revision or "",
                "MODEL_DIR": model_dir,
                "SYNC_JOB": settings.sync_job_name,
                "SYNC_WAIT_SECONDS": str(SYNC_WAIT_SECONDS),
                "HOME": "/tmp",
            }) + [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
            "resources": MODEL_DOWNLOAD_RESOURCES,
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR},
                             {"name": "server-files", "mountPath": SERVER_FILES_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        })],
        "containers": [restricted_container({
            "name": "vllm",
            "image": settings.image,
            # start.py checks the artifacts, then execs vllm (not the image's Python wrapper), so SIGTERM
            # reaches the server.
            "command": ["python3", f"{SERVER_FILES_DIR}/start.py", settings.setting_path, "--",
                        *serve_command(model, api_key)],
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "env": env({
                "NEURON_RT_NUM_CORES": str(model.tensor_parallel_size),
                "NEURON_COMPILED_ARTIFACTS": model_dir,
                "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
                "MALLOC_ARENA_MAX": "1",
                "VLLM_LOGGING_LEVEL": "INFO",
                # The middleware module, read from the ConfigMap; nothing is written next to it.
                "PYTHONPATH": MIDDLEWARE_DIR,
                "PYTHONDONTWRITEBYTECODE": "1",
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
                **({"VLLM_API_KEY_FILE": f"{API_KEY_DIR}/api-key"} if api_key else {}),
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
            "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR},
                             {"name": "server-files", "mountPath": SERVER_FILES_DIR, "readOnly": True},
                             {"name": "middleware", "mountPath": MIDDLEWARE_DIR, "readOnly": True},
                             *([{"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True}] if api_key else []),
                             {"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "tmp", "mountPath": "/tmp"}],
        })],
        "volumes": [
            {"name": "models", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "server-files", "configMap": {"name": settings.server_files_config_map, "defaultMode": 0o444}},
            {"name": "middleware", "configMap": {"name": settings.server_files_config_map, "defaultMode": 0o444,
                                                 "items": [{"key": MIDDLEWARE_FILE, "path": MIDDLEWARE_FILE}]}},
            # Readable by the pod's group (fsGroup) only.
            *([{"name": "api-key", "secret": {"secretName": settings.api_key_secret, "defaultMode": 0o440}}]
              if api_key else []),
        ],
    }
