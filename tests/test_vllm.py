"""The model servers: the workshop's names, strict schema validity, and agreement between the pieces."""

from __future__ import annotations

import pytest

from components import neuron, versions
from components.config import PROJECT
from components.neuron import NEURON_INSTANCE_TYPES
from tests.schemas import core_problems

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def _objects(deployment, kind):
    return {r.manifest()["metadata"]["name"]: r.manifest() for r in deployment.of_type(kind)}


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
    return {e["name"]: e["value"] for e in container["env"]}


def _flag(command, name):
    return command[command.index(name) + 1]


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
    assert _objects(dev_deployment, "kubernetes:core/v1:Namespace").keys() == {"vllm"}
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
                                                  "prometheus.io/path": "/metrics"}


def test_server_command_comes_from_the_model_settings(pod):
    vllm = _container(pod, "vllm")
    command = vllm["command"]
    assert command[:3] == ["vllm", "serve", "/models/mistral"]
    assert _flag(command, "--served-model-name") == "mistral"  # clients send "model": "mistral"
    assert _flag(command, "--device") == "neuron"
    assert _flag(command, "--tensor-parallel-size") == "2"
    assert _flag(command, "--max-num-seqs") == "1"
    assert _flag(command, "--max-model-len") == "2048"
    assert _flag(command, "--host") == "0.0.0.0"
    assert vllm["image"] == versions.VLLM_IMAGE
    env = _env(vllm)
    assert env["NEURON_COMPILED_ARTIFACTS"] == "/models/mistral" == command[2]
    assert env["VLLM_NEURON_FRAMEWORK"] == "neuronx-distributed-inference"


def test_tensor_parallelism_cores_and_devices_agree(deploy):
    config = {"name": "big", "tensorParallelSize": 8, "neuronDevices": 4,
              "huggingFaceRepo": "aws-neuron/some-model-cores-8"}
    deployment = deploy(neuron={"instanceTypes": ["trn1.32xlarge"], "maxNeuronDevices": 16},
                        vllm={"models": [config]})
    vllm = _container(_objects(deployment, DEPLOYMENT)["big"]["spec"]["template"], "vllm")
    assert _env(vllm)["NEURON_RT_NUM_CORES"] == _flag(vllm["command"], "--tensor-parallel-size") == "8"
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


def test_model_download_is_pinned_and_works_around_xet(dev_deployment, pod):
    download = _container(pod, "model-download")
    assert download["image"] == versions.MODEL_DOWNLOAD_IMAGE
    assert not download["image"].endswith(":latest") and ":" in download["image"]
    env = _env(download)
    assert env["MODEL_REPO"] == "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
    assert env["MODEL_DIR"] == "/models/mistral"
    assert env["HF_HUB_DISABLE_XET"] == "1"
    assert download["resources"]["requests"] and download["resources"]["limits"]
    config_map = _objects(dev_deployment, "kubernetes:core/v1:ConfigMap")["mistral-model-download"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["download"]["configMap"]["name"] == "mistral-model-download"
    assert download["command"] == ["/bin/sh", "/etc/model-download/download.sh"]
    assert "--require-hashes" in config_map["data"]["download.sh"]
    assert "huggingface-hub==" in config_map["data"]["requirements.txt"]
    assert pod["metadata"]["annotations"]["trainium-vllm/model-download-sha256"]


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


def test_network_policy_admits_the_cluster_on_8080_and_lets_the_download_out(dev_deployment, pod):
    policies = _objects(dev_deployment, NETWORK_POLICY)
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    policy = policies["mistral"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (ingress,) = policy["ingress"]
    assert ingress == {"from": [{"namespaceSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
    dns, https = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]


def test_client_namespaces_narrow_who_may_call(deploy, dev_config):
    vllm = dict(dev_config[f"{PROJECT}:vllm"], clientNamespaces=["web", "monitoring"])
    policy = _objects(deploy(vllm=vllm), NETWORK_POLICY)["mistral"]["spec"]
    assert policy["ingress"][0]["from"] == [{"namespaceSelector": {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["web", "monitoring"]}]}}]


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
    long = _container(deployments["mistral-long"]["spec"]["template"], "vllm")["command"]
    assert _flag(long, "--max-model-len") == "4096" and _flag(long, "--served-model-name") == "mistral-long"
    # Both use every device the pool allows: no room for a surge copy.
    assert {d["spec"]["strategy"]["type"] for d in deployments.values()} == {"Recreate"}
    assert set(deployment.exports["models"]) == {"mistral", "mistral-long"}
    assert len(_objects(deployment, NETWORK_POLICY)) == 3 and len(_objects(deployment, PDB)) == 2


def test_exports_give_url_served_name_and_a_try_it_line(dev_deployment):
    (model,) = dev_deployment.exports["models"].values()
    assert model["url"] == "http://mistral.vllm:8080"
    assert model["servedModelName"] == "mistral"
    assert model["tryIt"].startswith("kubectl port-forward -n vllm service/mistral 8080:8080")
    assert "/v1/completions" in model["tryIt"] and '"model": "mistral"' in model["tryIt"]
