"""The model servers: the workshop's names, strict schema validity, and agreement between the pieces."""

from __future__ import annotations

import pytest

import hashlib
import json

from components import neuron, versions
from components.config import PROJECT
from tools import offline
from components.neuron import NEURON_INSTANCE_TYPES
from tests.schemas import core_problems

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def _objects(deployment, kind, namespace="vllm"):
    """The objects of a kind in the model namespace (or cluster-wide ones), by name."""
    objects = [r.manifest() for r in deployment.of_type(kind)]
    return {o["metadata"]["name"]: o for o in objects if o["metadata"].get("namespace", namespace) == namespace}


@pytest.fixture(scope="module")
def mistral(dev_deployment):
    return _objects(dev_deployment, DEPLOYMENT)["mistral"]


@pytest.fixture(scope="module")
def pod(mistral):
    return mistral["spec"]["template"]


def _container(pod, name):
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return container


def _env(container):
    """Plain values; references (a Secret, the pod's namespace) as their source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _flag(command, name):
    return command[command.index(name) + 1]


def _serve(container):
    """The `vllm serve` command start.py execs, after its own arguments."""
    command = container["command"]
    assert command[:2] == ["python3", "/etc/model-server/start.py"]
    return command[command.index("--") + 1:]


def test_every_core_object_validates_strictly_at_the_cluster_version(dev_deployment):
    core = [r for r in dev_deployment.kubernetes_objects() if not r.type.startswith("kubernetes:karpenter")]
    kinds = sorted({r.manifest()["kind"] for r in core})
    assert {"ConfigMap", "Deployment", "Namespace", "NetworkPolicy", "PodDisruptionBudget", "ResourceQuota",
            "Service"} <= set(kinds)
    for resource in core:
        assert core_problems(resource.manifest(), "1.35") == [], resource.name


def test_strict_validation_rejects_an_unknown_field(mistral):
    broken = {**mistral, "spec": {**mistral["spec"], "replica": 1}}
    assert core_problems(broken)


def test_workshop_names(dev_deployment, pod):
    assert {"vllm"} <= _objects(dev_deployment, "kubernetes:core/v1:Namespace").keys()
    assert _objects(dev_deployment, DEPLOYMENT).keys() == {"mistral"}
    assert _objects(dev_deployment, SERVICE).keys() == {"mistral"}
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["model-download"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["vllm"]
    for kind in (DEPLOYMENT, SERVICE, PDB):
        assert all(o["metadata"]["namespace"] == "vllm" for o in _objects(dev_deployment, kind).values())


def test_service_selects_the_pods_and_reaches_the_server_port(dev_deployment, mistral, pod):
    service = _objects(dev_deployment, SERVICE)["mistral"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert mistral["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"], port["protocol"]) == ("http", 8080, "TCP")
    (container_port,) = _container(pod, "vllm")["ports"]
    assert port["targetPort"] == container_port["name"] and container_port["containerPort"] == 8080
    assert _flag(_container(pod, "vllm")["command"], "--port") == "8080"
    assert service["metadata"]["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": "8080",
                                                  "prometheus.io/path": "/metrics", "pulumi.com/skipAwait": "true"}


def test_server_command_comes_from_the_model_settings(pod):
    vllm = _container(pod, "vllm")
    assert vllm["command"][2] == "vllm.models[0] (mistral)"  # how start.py names the setting when it refuses
    command = _serve(vllm)
    assert command[:3] == ["vllm", "serve", "/models/mistral"]
    # Clients send "model": "mistral"; the workshop's post.json sends its path, which works too.
    served = command[command.index("--served-model-name") + 1:command.index("--tokenizer")]
    assert served == ["mistral", "/models/mistral-7b-v0.3"]
    assert _flag(command, "--device") == "neuron"
    assert _flag(command, "--tensor-parallel-size") == "2"
    # The artifact was compiled for batch size 1 ("bs-1").
    assert _flag(command, "--max-num-seqs") == "1"
    assert _flag(command, "--max-model-len") == "2048"
    assert _flag(command, "--host") == "0.0.0.0"
    assert vllm["image"] == versions.VLLM_IMAGE
    env = _env(vllm)
    assert env["NEURON_COMPILED_ARTIFACTS"] == "/models/mistral" == command[2]
    assert env["VLLM_NEURON_FRAMEWORK"] == "neuronx-distributed-inference"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_tensor_parallelism_cores_and_devices_agree(deploy):
    config = {"name": "big", "tensorParallelSize": 8, "neuronDevices": 4,
              "huggingFaceRepo": "aws-neuron/some-model-cores-8"}
    deployment = deploy(neuron={"instanceTypes": ["trn1.32xlarge"], "maxNeuronDevices": 16},
                        vllm={"models": [config]})
    vllm = _container(_objects(deployment, DEPLOYMENT)["big"]["spec"]["template"], "vllm")
    assert _env(vllm)["NEURON_RT_NUM_CORES"] == _flag(_serve(vllm), "--tensor-parallel-size") == "8"
    assert vllm["resources"]["requests"][neuron.NEURON_DEVICE_RESOURCE] == "4"
    assert vllm["resources"]["limits"][neuron.NEURON_DEVICE_RESOURCE] == "4"
    cores = int(vllm["resources"]["limits"][neuron.NEURON_DEVICE_RESOURCE]) * NEURON_INSTANCE_TYPES["trn1.32xlarge"].cores_per_device
    assert int(_env(vllm)["NEURON_RT_NUM_CORES"]) <= cores


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_pod_fits_an_inf2_xlarge_as_well_as_a_trn1_2xlarge(pod):
    resources = _container(pod, "vllm")["resources"]
    assert resources["requests"] == {"cpu": "3000m", "memory": "12Gi", "aws.amazon.com/neuron": "1"}  # the workshop's
    assert resources["limits"] == resources["requests"]  # a Guaranteed pod: nothing else shares the node's devices
    init = _container(pod, "model-download")["resources"]["requests"]
    for name in ("inf2.xlarge", "trn1.2xlarge"):
        node = NEURON_INSTANCE_TYPES[name]
        # What the node offers pods, minus what its DaemonSets take.
        cpu = (node.allocatable_cpu_millis - neuron.DAEMONSET_CPU_MILLIS) / 1000
        memory = (node.allocatable_memory_mib - neuron.DAEMONSET_MEMORY_MIB) * 2**20
        assert max(_quantity(resources["requests"]["cpu"]), _quantity(init["cpu"])) <= cpu, name
        assert max(_quantity(resources["requests"]["memory"]), _quantity(init["memory"])) <= memory, name


def test_pods_run_only_on_neuron_nodes_and_tolerate_their_taint(dev_deployment, pod):
    for pool in dev_deployment.of_type("kubernetes:karpenter.sh/v1:NodePool"):
        template = pool.manifest()["spec"]["template"]
        assert pod["spec"]["nodeSelector"].items() <= template["metadata"]["labels"].items()
        (taint,) = template["spec"]["taints"]
        assert any(t["key"] == taint["key"] and t["effect"] == taint["effect"] and t["operator"] == "Exists"
                   for t in pod["spec"]["tolerations"])


def _families(pod):
    (term,) = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    (expression,) = term["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("karpenter.k8s.aws/instance-family", "In")
    return expression["values"]


def test_pods_land_only_where_their_compiled_artifacts_run(deploy, pod):
    assert _families(pod) == ["inf2", "trn1"]
    # NeuronCore-v2 artifacts never go to trn2 (v3), and the pod is sized for the v2 hosts only.
    mixed = deploy(neuron={"instanceTypes": ["trn2.3xlarge", "trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 2})
    v2 = _objects(mixed, DEPLOYMENT)["mistral"]["spec"]["template"]
    assert _families(v2) == ["inf2", "trn1"]
    assert _container(v2, "vllm")["resources"]["requests"]["memory"] == "12Gi"
    v3 = deploy(neuron={"instanceTypes": ["trn2.3xlarge", "inf2.xlarge"], "maxNeuronDevices": 2},
                vllm={"models": [{"name": "mistral", "neuronCoreVersion": 3, "tensorParallelSize": 4,
                                  "huggingFaceRepo": "aws-neuron/a-trn2-build"}]})
    v3_pod = _objects(v3, DEPLOYMENT)["mistral"]["spec"]["template"]
    assert _families(v3_pod) == ["trn2"]
    assert _container(v3_pod, "vllm")["resources"]["requests"]["memory"] == "116Gi"  # a trn2.3xlarge, less headroom


def test_model_waits_for_the_neuron_capacity(dev_deployment):
    model = dev_deployment.one(DEPLOYMENT)
    needed = [*dev_deployment.of_type("kubernetes:karpenter.sh/v1:NodePool"),
              dev_deployment.one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"),
              dev_deployment.one("kubernetes:helm.sh/v3:Release", "neuron-device-plugin")]
    assert len(needed) == 4
    for resource in needed:
        assert resource.urn in model.dependencies


def test_probes_give_a_slow_model_load_ten_minutes_and_more(pod):
    vllm = _container(pod, "vllm")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert vllm["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert pod["spec"]["terminationGracePeriodSeconds"] > vllm["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_shared_memory_is_memory_backed(pod):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(pod, "vllm")["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory"}
    # The model files go from the init container to the server through one volume.
    download_mounts = {m["mountPath"]: m["name"] for m in _container(pod, "model-download")["volumeMounts"]}
    assert mounts["/models"] == download_mounts["/models"]


def test_the_model_comes_from_the_store_with_nothing_public_on_the_start_path(dev_deployment, pod):
    download = _container(pod, "model-download")
    assert download["image"] == versions.AWS_CLI_IMAGE
    assert download["command"] == ["/bin/bash", "/etc/model-server/fetch-model.sh"]
    env = _env(download)
    bucket = dev_deployment.one("aws:s3/bucket:Bucket").outputs["bucket"]
    sync = dev_deployment.one("kubernetes:batch/v1:Job").manifest()
    assert (env["MODEL_BUCKET"], env["MODEL_PREFIX"], env["MODEL_DIR"]) == (bucket, "models/mistral", "/models/mistral")
    assert env["MODEL_REPO"] == "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
    assert env["MODEL_REVISION"] == ""  # unset: the sync pins `main` once, the pod reads the pin
    assert env["SYNC_JOB"] == sync["metadata"]["name"]
    assert env["AWS_REGION"] == "us-west-2"  # the bucket's region: the AWS CLI needs it
    assert int(env["SYNC_WAIT_SECONDS"]) > 0
    assert download["resources"]["requests"] and download["resources"]["limits"]
    # Every image a model pod needs comes from ECR Public: no Docker Hub, no PyPI, no Hugging Face.
    spec = pod["spec"]
    assert all(c["image"].startswith("public.ecr.aws/") for c in spec["containers"] + spec["initContainers"])
    assert not any("pip" in " ".join(c["command"]) for c in spec["containers"] + spec["initContainers"])
    files = _objects(dev_deployment, "kubernetes:core/v1:ConfigMap")["model-server"]["data"]
    assert set(files) == {"fetch-model.sh", "start.py", "api_key_auth.py"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["server-files"]["configMap"]["name"] == "model-server"
    assert pod["metadata"]["annotations"]["trainium-vllm/server-files-sha256"]


def test_a_pinned_revision_reaches_the_pod_and_names_a_new_sync_job(deploy, dev_deployment):
    revision = "0417f4babd26db0f5ed5c1f0e5e7f9b3f8c6a2d1"
    pinned = deploy(vllm={"models": [{"name": "mistral", "revision": revision}]})
    pod = _objects(pinned, DEPLOYMENT)["mistral"]["spec"]["template"]
    assert _env(_container(pod, "model-download"))["MODEL_REVISION"] == revision
    job = pinned.one("kubernetes:batch/v1:Job").manifest()
    assert job["metadata"]["name"] != dev_deployment.one("kubernetes:batch/v1:Job").manifest()["metadata"]["name"]
    assert {"name": "MODEL_REVISION", "value": revision} in job["spec"]["template"]["spec"]["containers"][0]["env"]


def test_the_pod_reads_its_model_with_a_read_only_identity_of_its_own(dev_deployment, pod):
    assert pod["spec"]["serviceAccountName"] == "mistral"
    account = _objects(dev_deployment, "kubernetes:core/v1:ServiceAccount")["mistral"]
    assert account["metadata"]["namespace"] == "vllm" and account["automountServiceAccountToken"] is False
    association = next(a for a in dev_deployment.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
                       if a.inputs["serviceAccount"] == "mistral")
    assert association.inputs["namespace"] == "vllm"
    role = next(r for r in dev_deployment.of_type("aws:iam/role:Role") if r.outputs["arn"] == association.inputs["roleArn"])
    policy = next(p for p in dev_deployment.of_type("aws:iam/rolePolicy:RolePolicy")
                  if p.inputs["role"] == role.outputs["name"])
    bucket = dev_deployment.one("aws:s3/bucket:Bucket").outputs["arn"]
    statements = json.loads(policy.inputs["policy"])["Statement"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket"}  # no write of any kind
    assert {s["Resource"] for s in statements} == {f"{bucket}/models/mistral/*", bucket}
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/mistral/*"]}}
    # The pods start only once they can get credentials.
    model = dev_deployment.one(DEPLOYMENT)
    assert association.urn in model.dependencies


def test_pods_meet_pod_security_restricted(dev_deployment, pod):
    namespace = _objects(dev_deployment, "kubernetes:core/v1:Namespace")["vllm"]
    labels = namespace["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "audit", "warn")} == {"restricted"}
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.35"
    spec = pod["spec"]
    # The restricted profile's rules (kubernetes.io/docs/concepts/security/pod-security-standards).
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert all(set(v) - {"name"} <= {"emptyDir", "configMap", "secret", "projected", "persistentVolumeClaim",
                                     "downwardAPI", "ephemeral", "csi"} for v in spec["volumes"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert context["readOnlyRootFilesystem"] is True
        assert not context.get("privileged")
        assert not any("hostPort" in p for p in container.get("ports", []))
    assert spec["automountServiceAccountToken"] is False


def test_karpenter_does_not_disrupt_a_serving_model_and_a_budget_guards_drains(dev_deployment, pod):
    assert pod["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    budget = _objects(dev_deployment, PDB)["mistral"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert budget["spec"]["minAvailable"] == 1


def test_update_strategy_follows_the_spare_devices(deploy, mistral):
    # Two devices allowed, one used: a second copy fits, so updates roll without downtime.
    assert mistral["spec"]["strategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    full = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 1})
    assert _objects(full, DEPLOYMENT)["mistral"]["spec"]["strategy"] == {"type": "Recreate"}


def test_pulumi_up_waits_long_enough_for_a_cold_start(dev_deployment, mistral):
    resource = dev_deployment.one(DEPLOYMENT)
    assert resource.custom_timeouts == {"create": "45m", "update": "45m"}
    # Kubernetes must not call the rollout stalled before Pulumi stops waiting.
    assert mistral["spec"]["progressDeadlineSeconds"] >= 45 * 60
    assert "pulumi.com/skipAwait" not in mistral["metadata"]["annotations"]


def test_rollout_timeout_zero_means_pulumi_up_does_not_wait(deploy, dev_config):
    vllm = dict(dev_config[f"{PROJECT}:vllm"], rolloutTimeoutMinutes=0)
    deployment = deploy(vllm=vllm)
    resource = deployment.one(DEPLOYMENT)
    assert resource.custom_timeouts == {}
    assert resource.manifest()["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_network_policy_admits_clients_and_the_collector_and_lets_out_only_dns_credentials_and_s3(dev_deployment, pod):
    policies = _objects(dev_deployment, NETWORK_POLICY)
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policy = policies["mistral"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (ingress,) = policy["ingress"]
    collector = sorted(s.inputs["cidrBlock"] for s in dev_deployment.of_type("aws:ec2/subnet:Subnet")
                       if "-collector-" in s.name)
    assert ingress["from"] == [{"namespaceSelector": {}}, *[{"ipBlock": {"cidr": c}} for c in collector]]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    dns, credentials, s3 = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert credentials == {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}
    assert s3["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert [t["ipBlock"]["cidr"] for t in s3["to"]] == sorted(offline.S3_PREFIX_LIST["us-west-2"])


def test_without_observability_the_collector_is_not_admitted(deploy):
    policy = _objects(deploy(observability={"enabled": False}), NETWORK_POLICY)["mistral"]["spec"]
    assert policy["ingress"][0]["from"] == [{"namespaceSelector": {}}]


def test_client_namespaces_narrow_who_may_call(deploy, dev_config):
    vllm = dict(dev_config[f"{PROJECT}:vllm"], clientNamespaces=["web", "monitoring"])
    policy = _objects(deploy(vllm=vllm), NETWORK_POLICY)["mistral"]["spec"]
    assert policy["ingress"][0]["from"][0] == {"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["web", "monitoring"]}]}}
    assert all("ipBlock" in peer for peer in policy["ingress"][0]["from"][1:])


def test_two_models_give_two_independent_deployments_and_services(deploy):
    models = [{"name": "mistral"},
              {"name": "mistral-long", "maxModelLen": 4096, "maxNumSeqs": 2}]
    deployment = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 2},
                        vllm={"models": models})
    deployments, services = _objects(deployment, DEPLOYMENT), _objects(deployment, SERVICE)
    assert deployments.keys() == services.keys() == {"mistral", "mistral-long"}
    for name, service in services.items():
        selector = service["spec"]["selector"].items()
        selected = [n for n, d in deployments.items() if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert selected == [name]
    long = _serve(_container(deployments["mistral-long"]["spec"]["template"], "vllm"))
    assert _flag(long, "--max-model-len") == "4096" and _flag(long, "--served-model-name") == "mistral-long"
    # Both use every device the pool allows: no room for a surge copy.
    assert {d["spec"]["strategy"]["type"] for d in deployments.values()} == {"Recreate"}
    assert set(deployment.exports["models"]) == {"mistral", "mistral-long"}
    # Per model: its server's policy and its sync Job's; and the namespace's default deny.
    assert len(_objects(deployment, NETWORK_POLICY)) == 5 and len(_objects(deployment, PDB)) == 2
    assert len(deployment.of_type("kubernetes:batch/v1:Job")) == 2


def test_exports_give_url_served_name_and_a_try_it_line(dev_deployment):
    (model,) = dev_deployment.exports["models"].values()
    assert model["url"] == "http://mistral.vllm:8080"
    assert model["servedModelName"] == "mistral"
    assert model["tryIt"].startswith("kubectl port-forward -n vllm service/mistral 8080:8080")
    assert "/v1/completions" in model["tryIt"] and '"model": "mistral"' in model["tryIt"]


def test_inference_requires_the_stack_api_key_on_every_path(dev_deployment, pod):
    secret = _objects(dev_deployment, "kubernetes:core/v1:Secret")["vllm-api-key"]
    key = dev_deployment.exports["apiKey"]
    assert secret["metadata"]["namespace"] == "vllm" and secret["stringData"] == {"api-key": key}
    assert len(key) == 48 and "apiKey" in dev_deployment.secret_exports
    vllm = _container(pod, "vllm")
    # As a file from the Secret, readable by the pod's group only, never in the environment.
    assert _env(vllm)["VLLM_API_KEY_FILE"] == "/etc/vllm-api-key/api-key" and "VLLM_API_KEY" not in _env(vllm)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    key_mount = next(m for m in vllm["volumeMounts"] if m["mountPath"] == "/etc/vllm-api-key")
    assert volumes[key_mount["name"]]["secret"] == {"secretName": "vllm-api-key", "defaultMode": 0o440}
    # vLLM's own check covers /v1 only; the middleware (from the mounted ConfigMap) covers the rest.
    assert _flag(_serve(vllm), "--middleware") == "api_key_auth.ApiKeyAuth"
    # Only the middleware is on PYTHONPATH: nothing else there can shadow a module vLLM imports.
    assert _env(vllm)["PYTHONPATH"] == "/etc/vllm-middleware"
    mounts = {m["mountPath"]: m["name"] for m in vllm["volumeMounts"]}
    (middleware,) = [v for v in pod["spec"]["volumes"] if v["name"] == mounts["/etc/vllm-middleware"]]
    assert middleware["configMap"]["items"] == [{"key": "api_key_auth.py", "path": "api_key_auth.py"}]
    # A new key rolls the pods; the annotation is a digest, never the key.
    assert pod["metadata"]["annotations"]["trainium-vllm/api-key-sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in json.dumps(pod)
    (model,) = dev_deployment.exports["models"].values()
    assert 'Authorization: Bearer $(pulumi stack output apiKey --show-secrets)' in model["tryIt"]


def test_the_api_key_can_be_turned_off_to_follow_the_workshop_verbatim(deploy, dev_config):
    deployment = deploy(vllm=dict(dev_config[f"{PROJECT}:vllm"], requireApiKey=False))
    pod = _objects(deployment, DEPLOYMENT)["mistral"]["spec"]["template"]
    vllm = _container(pod, "vllm")
    assert "--middleware" not in _serve(vllm) and "VLLM_API_KEY_FILE" not in _env(vllm)
    assert "apiKey" not in deployment.exports
    assert not _objects(deployment, "kubernetes:core/v1:Secret")
    assert not [p for p in deployment.of_type("random:index/randomPassword:RandomPassword") if "api-key" in p.name]
    assert "Authorization" not in deployment.exports["models"]["mistral"]["tryIt"]


def test_every_path_a_read_only_container_writes_is_a_volume(dev_deployment):
    """Containers run with a read-only root: whatever they write must land on a mounted volume."""
    written = {
        # The server's caches and scratch space, the model files, shared memory, the AWS CLI's config.
        "vllm": ["HOME", "HF_HOME", "NEURON_COMPILE_CACHE_URL", "BASE_COMPILE_WORK_DIR", "NEURON_COMPILED_ARTIFACTS"],
        "model-download": ["HOME", "MODEL_DIR"],
        "sync": ["HOME", "HF_HOME", "PYTHONPATH"],
    }
    pods = [r.manifest()["spec"]["template"]["spec"] for r in dev_deployment.of_type(DEPLOYMENT)]
    pods += [r.manifest()["spec"]["template"]["spec"] for r in dev_deployment.of_type("kubernetes:batch/v1:Job")]
    checked = 0
    for spec in pods:
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            writable = [path for path, m in mounts.items() if not m.get("readOnly") and
                        ("emptyDir" in volumes[m["name"]])]
            for name in written[container["name"]]:
                path = _env(container)[name]
                assert any(path == w or path.startswith(w + "/") for w in writable), (container["name"], name, path)
                checked += 1
            if container["name"] == "vllm":
                assert "/dev/shm" in writable
    assert checked == 10


def test_the_image_is_pulled_onto_each_neuron_node_while_the_model_copies(dev_deployment, pod):
    (prepull,) = _objects(dev_deployment, "kubernetes:apps/v1:DaemonSet").values()
    spec = prepull["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == _container(pod, "vllm")["image"]
    assert container["command"] == ["sleep", "infinity"]
    assert spec["nodeSelector"] == pod["spec"]["nodeSelector"] and spec["tolerations"] == pod["spec"]["tolerations"]
    # Small enough to fit in the headroom the model pod's sizing leaves for DaemonSets.
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "10m", "memory": "16Mi"}
    assert core_problems(prepull) == []


def test_an_autoscaled_model_keeps_the_replica_count_keda_sets(deploy):
    deployment = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 4},
                        vllm={"models": [{"name": "mistral", "replicas": 1, "maxReplicas": 3}]})
    resource = deployment.one(DEPLOYMENT)
    assert resource.ignore_changes == ["spec.replicas"]
    assert resource.manifest()["spec"]["replicas"] == 1
    # Disruption: one pod at a time, whatever the count, not a minimum frozen at deploy time.
    assert deployment.one(PDB).manifest()["spec"]["maxUnavailable"] == 1
    # 3 at most, 4 devices allowed: room for a surge pod, so updates roll.
    assert resource.manifest()["spec"]["strategy"]["type"] == "RollingUpdate"


def test_a_fixed_size_model_has_its_count_managed_by_pulumi(dev_deployment, deploy):
    assert dev_deployment.one(DEPLOYMENT).ignore_changes == []
    two = deploy(vllm={"models": [{"name": "mistral", "replicas": 2}]})
    assert two.one(DEPLOYMENT).manifest()["spec"]["replicas"] == 2
    assert two.one(DEPLOYMENT).manifest()["spec"]["strategy"] == {"type": "Recreate"}  # 2 of 2 devices in use
    assert two.one(PDB).manifest()["spec"] == {"selector": two.one(PDB).manifest()["spec"]["selector"],
                                               "maxUnavailable": 1}
