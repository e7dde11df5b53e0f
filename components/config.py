"""The stack's settings: one typed, validated model, read before any resource is registered.

`__main__.py` reads it from the Pulumi runtime with `from_pulumi()`; the operator tools read the same
settings from `Pulumi.<stack>.yaml` with `from_stack_file()`. Both go through `parse()`, which checks
everything and reports every problem at once, each naming the setting and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import pulumi
import yaml

from components import instances, neuron, versions

PROJECT = "trainium-vllm"
PROJECT_DIR = Path(__file__).resolve().parent.parent

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Model names also name a Service, and Service names must start with a letter (DNS-1035).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CLUSTER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
IAM_PRINCIPAL_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
CAPACITY_TYPES = ("on-demand", "spot", "reserved")
CAPACITY_RESERVATION_ID = re.compile(r"^cr-[0-9a-f]{17}$")
GIT_COMMIT = re.compile(r"^[0-9a-f]{40}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
ADDON_VERSION = re.compile(r"^v\d+\.\d+\.\d+-eksbuild\.\d+$")
# The add-ons whose versions the stack manages (pulumi-eks creates the first two, EksCluster the others).
ADDONS = ("vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent")
# The name the EKS workshop's request body (post.json) gives the model; the default model answers to it too.
WORKSHOP_MODEL_NAME = "/models/mistral-7b-v0.3"


class ConfigError(pulumi.RunError):
    """Invalid stack settings. A RunError, so `pulumi up` prints the message without a traceback."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mistral"
    hugging_face_repo: str = versions.DEFAULT_MODEL_REPO
    # A commit of the repository; None: the first sync pins what `main` points to then.
    revision: str | None = None
    # Further names the server answers to (vLLM's --served-model-name takes several; the first is reported).
    served_model_aliases: tuple[str, ...] = (WORKSHOP_MODEL_NAME,)
    tensor_parallel_size: int = 2
    neuron_devices: int = 1
    # The NeuronCore generation the artifacts were compiled for: 2 (trn1, trn1n, inf2) or 3 (trn2).
    neuron_core_version: int = 2
    max_model_len: int = 2048
    # The default artifact was compiled for batch size 1 ("bs-1"): more sequences than that do not fit.
    max_num_seqs: int = 1
    replicas: int = 1
    max_replicas: int = 1
    # Requests (running + waiting) one replica should carry before KEDA adds another.
    target_requests_per_replica: int = 1

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.replicas

    @property
    def served_model_names(self) -> tuple[str, ...]:
        return (self.name, *self.served_model_aliases)


@dataclass(frozen=True)
class NeuronConfig:
    instance_types: tuple[str, ...] = ("trn1.2xlarge", "inf2.xlarge")
    capacity_types: tuple[str, ...] = ("on-demand",)
    # The ceiling on Neuron devices the models may hold, across every NodePool (see components.neuron).
    max_neuron_devices: int = 2
    # On-Demand Capacity Reservations and Capacity Blocks for ML Karpenter may launch into.
    capacity_reservation_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class VllmConfig:
    namespace: str = "vllm"
    image: str = versions.VLLM_IMAGE
    models: tuple[ModelConfig, ...] = (ModelConfig(),)
    # Namespaces whose pods may call the models; empty means every namespace of the cluster.
    client_namespaces: tuple[str, ...] = ()
    # How long `pulumi up` waits for each model to become ready; 0 means it does not wait.
    rollout_timeout_minutes: int = 45
    # Every inference path needs the stack's API key (Authorization: Bearer ...).
    require_api_key: bool = True


@dataclass(frozen=True)
class SystemNodesConfig:
    instance_type: str = "m6i.large"
    count: int = 3


@dataclass(frozen=True)
class ObservabilityConfig:
    enabled: bool = True
    # Alert when a model's time to first token, 95th percentile, stays above this.
    ttft_target_seconds: float = 2.0
    alert_emails: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    cluster_name: str
    kubernetes_version: str = versions.KUBERNETES_VERSION
    region: str | None = None
    # The AWS CLI profile of the stack (aws:profile), which the Kubernetes provider's kubeconfig must name.
    aws_profile: str | None = None
    vpc_cidr: str = "10.0.0.0/16"
    # IAM roles/users (people, CI roles) given cluster-admin access entries, besides the cluster's creator.
    cluster_admin_arns: tuple[str, ...] = ()
    api_public_access_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    # EKS add-on versions by add-on name; an add-on not listed keeps the version it was created with.
    addon_versions: Mapping[str, str] = field(default_factory=dict)
    system_nodes: SystemNodesConfig = field(default_factory=SystemNodesConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)

    @property
    def neuron_devices_needed(self) -> int:
        """Neuron devices the models hold at their largest (maxReplicas), before any update surge."""
        return sum(m.neuron_devices * m.max_replicas for m in self.vllm.models)

    @property
    def spare_neuron_devices(self) -> int:
        """Neuron devices left under the ceiling when every model runs at its maximum."""
        return self.neuron.max_neuron_devices - self.neuron_devices_needed


def default_cluster_name(project: str, stack: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", f"{project}-{stack}")[:63]


# --- reading ---------------------------------------------------------------------------------------


class _Reader:
    """Reads one mapping of settings, collecting problems instead of raising on the first one."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def section(self, raw: Any, path: str, known: tuple[str, ...]) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problems.append(f"{path} must be a mapping of settings, got {_describe(raw)}")
            return {}
        for key in raw:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; known settings: {', '.join(known)}"
                self.problems.append(f"{_join(path, key)} is not a setting{suggestion}")
        return raw

    def string(self, raw: Mapping[str, Any], key: str, path: str, default: str,
               check: Callable[[str], str | None] | None = None) -> str:
        value = raw.get(key, default)
        if not isinstance(value, str) or not value:
            self.problems.append(f"{_join(path, key)} must be a non-empty string, got {_describe(value)}")
            return default
        if check and (problem := check(value)):
            self.problems.append(f"{_join(path, key)}: {problem}")
        return value

    def integer(self, raw: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 1,
                maximum: int | None = None) -> int:
        value = raw.get(key, default)
        # bool is an int in Python; a flag is never a count.
        if type(value) is not int:
            self.problems.append(f"{_join(path, key)} must be an integer, got {_describe(value)}")
            return default
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.problems.append(f"{_join(path, key)} must be {allowed}, got {value}")
            return default
        return value

    def boolean(self, raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if type(value) is not bool:
            self.problems.append(f"{_join(path, key)} must be true or false, got {_describe(value)}")
            return default
        return value

    def number(self, raw: Mapping[str, Any], key: str, path: str, default: float, minimum: float,
               maximum: float) -> float:
        value = raw.get(key, default)
        if type(value) not in (int, float):
            self.problems.append(f"{_join(path, key)} must be a number, got {_describe(value)}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{_join(path, key)} must be between {minimum:g} and {maximum:g}, got {value:g}")
            return default
        return float(value)

    def optional_string(self, raw: Mapping[str, Any], key: str, path: str,
                        check: Callable[[str], str | None]) -> str | None:
        if raw.get(key) is None:
            return None
        return self.string(raw, key, path, "", check) or None

    def string_map(self, raw: Mapping[str, Any], key: str, path: str, keys: tuple[str, ...],
                   check: Callable[[str], str | None]) -> dict[str, str]:
        value = raw.get(key, {})
        where = _join(path, key)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problems.append(f"{where} must be a mapping of names to strings, got {_describe(value)}")
            return {}
        self.section(value, where, keys)
        for name, item in value.items():
            if name in keys and (problem := check(item)):
                self.problems.append(f"{where}.{name}: {problem}")
        return {k: v for k, v in value.items() if k in keys}

    def strings(self, raw: Mapping[str, Any], key: str, path: str, default: tuple[str, ...],
                check: Callable[[str], str | None], allow_empty: bool = False) -> tuple[str, ...]:
        value = raw.get(key, list(default))
        where = _join(path, key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{where} must be a list of strings, got {_describe(value)}")
            return default
        if not value and not allow_empty:
            self.problems.append(f"{where} must not be empty")
            return default
        if len(set(value)) != len(value):
            self.problems.append(f"{where} lists a value twice: {value}")
        for i, item in enumerate(value):
            if problem := check(item):
                self.problems.append(f"{where}[{i}]: {problem}")
        return tuple(value)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)
    return f"{json.dumps(value, default=str)} ({kind})"


# --- checks (each returns a problem, or None) ------------------------------------------------------


def _check_kubernetes_version(value: str) -> str | None:
    match = re.fullmatch(r"1\.(\d+)", value)
    supported = versions.KUBERNETES_MINORS_SUPPORTED
    if not match or int(match.group(1)) not in supported:
        # YAML reads an unquoted 1.30 as the number 1.3.
        hint = f"; quote it (\"{value}0\") so YAML keeps the zero" if re.fullmatch(r"1\.\d", value) else ""
        return (f"'{value}' is not supported; use one of 1.{supported.start}-1.{supported.stop - 1} "
                f"(Karpenter {versions.KARPENTER_CHART_VERSION} and node AMI {versions.NODE_AMI_ALIAS}){hint}")
    return None


def _check_cluster_name(value: str) -> str | None:
    if not CLUSTER_NAME.match(value) or len(value) > 63:
        return f"'{value}' must start with a letter, use only letters, digits and '-', and be at most 63 characters"
    return None


def _check_instance_type(value: str) -> str | None:
    if value not in neuron.NEURON_INSTANCE_TYPES:
        return (f"'{value}' is not a Neuron instance type (families {', '.join(neuron.NEURON_FAMILIES)}); "
                f"allowed: {', '.join(neuron.NEURON_INSTANCE_TYPES)}")
    return None


def _check_capacity_type(value: str) -> str | None:
    return None if value in CAPACITY_TYPES else f"'{value}' is not a capacity type; allowed: {', '.join(CAPACITY_TYPES)}"


def _check_dns_label(value: str) -> str | None:
    if len(value) > 63 or not DNS_1123_LABEL.match(value):
        return f"'{value}' is not a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"
    return None


def _check_model_name(value: str) -> str | None:
    if len(value) > 63 or not DNS_1035_LABEL.match(value):
        return (f"'{value}' must be a DNS-1035 label: it names a Deployment and a Service (lower-case letters, "
                "digits and '-', starting with a letter, at most 63 characters)")
    return None


def _check_hf_repo(value: str) -> str | None:
    return None if HF_REPO.match(value) else f"'{value}' is not a Hugging Face repository of the form 'owner/name'"


def _check_image(value: str) -> str | None:
    name = value.rsplit("/", 1)[-1]
    if "@sha256:" not in value and (":" not in name or name.endswith(":latest")):
        return f"'{value}' must be pinned to a tag or digest other than 'latest'"
    return None


def _check_cidr(value: str) -> str | None:
    try:
        ipaddress.IPv4Network(value)
    except ValueError:
        return f"'{value}' is not an IPv4 CIDR block such as 203.0.113.0/24"
    return None


def _check_vpc_cidr(value: str) -> str | None:
    if problem := _check_cidr(value):
        return problem
    if not 16 <= ipaddress.IPv4Network(value).prefixlen <= 20:
        return f"'{value}' must have a prefix between /16 and /20 (pods take VPC addresses)"
    return None


def _check_principal_arn(value: str) -> str | None:
    return None if IAM_PRINCIPAL_ARN.match(value) else f"'{value}' is not an IAM role or user ARN"


def _check_capacity_reservation_id(value: str) -> str | None:
    if CAPACITY_RESERVATION_ID.match(value):
        return None
    return f"'{value}' is not a capacity reservation ID (cr- and 17 hexadecimal digits, e.g. cr-0123456789abcdef0)"


def _check_commit(value: str) -> str | None:
    if GIT_COMMIT.match(value):
        return None
    return (f"'{value}' is not a commit: use the 40-character hexadecimal commit of the Hugging Face repository "
            "(`python -m tools.preflight` prints the one `main` points to)")


def _check_email(value: str) -> str | None:
    return None if EMAIL.match(value) else f"'{value}' is not an email address"


def _check_addon_version(value: str) -> str | None:
    if ADDON_VERSION.match(value):
        return None
    return (f"'{value}' is not an EKS add-on version such as v1.19.2-eksbuild.1 (list them with `aws eks "
            "describe-addon-versions --addon-name <name> --kubernetes-version <version>`)")


def _check_served_name(value: str) -> str | None:
    if value.strip() != value or " " in value:
        return f"'{value}' must not contain spaces"
    return None


def _check_system_instance_type(value: str) -> str | None:
    if value not in instances.SYSTEM_INSTANCE_TYPES:
        return f"'{value}' is not one of the system node types: {', '.join(instances.SYSTEM_INSTANCE_TYPES)}"
    return None


# --- the model -------------------------------------------------------------------------------------

_TOP_KEYS = ("clusterName", "kubernetesVersion", "vpcCidr", "clusterAdminArns", "apiPublicAccessCidrs",
             "addonVersions", "systemNodes", "neuron", "vllm", "observability")
_SYSTEM_NODES_KEYS = ("instanceType", "count")
_NEURON_KEYS = ("instanceTypes", "capacityTypes", "maxNeuronDevices", "capacityReservationIds")
_VLLM_KEYS = ("namespace", "image", "models", "clientNamespaces", "rolloutTimeoutMinutes", "requireApiKey")
_MODEL_KEYS = ("name", "huggingFaceRepo", "revision", "servedModelAliases", "tensorParallelSize", "neuronDevices",
               "neuronCoreVersion", "maxModelLen", "maxNumSeqs", "replicas", "maxReplicas",
               "targetRequestsPerReplica")
_OBSERVABILITY_KEYS = ("enabled", "ttftTargetSeconds", "alertEmails")


def parse(values: Mapping[str, Any], *, project: str = PROJECT, stack: str, region: str | None = None,
          aws_profile: str | None = None) -> StackConfig:
    """Build the validated model from settings keyed without the project prefix; raise ConfigError."""
    problems: list[str] = []
    read = _Reader(problems)
    top = read.section(dict(values), "", _TOP_KEYS)

    system_nodes = _parse_system_nodes(read, read.section(top.get("systemNodes"), "systemNodes", _SYSTEM_NODES_KEYS))
    neuron_config = _parse_neuron(read, read.section(top.get("neuron"), "neuron", _NEURON_KEYS))
    vllm_config = _parse_vllm(read, read.section(top.get("vllm"), "vllm", _VLLM_KEYS))
    observability = _parse_observability(read, read.section(top.get("observability"), "observability",
                                                            _OBSERVABILITY_KEYS))
    config = StackConfig(
        project=project,
        stack=stack,
        region=region,
        aws_profile=aws_profile,
        cluster_name=read.string(top, "clusterName", "", default_cluster_name(project, stack), _check_cluster_name),
        kubernetes_version=read.string(top, "kubernetesVersion", "", versions.KUBERNETES_VERSION,
                                       _check_kubernetes_version),
        vpc_cidr=read.string(top, "vpcCidr", "", StackConfig.vpc_cidr, _check_vpc_cidr),
        cluster_admin_arns=read.strings(top, "clusterAdminArns", "", (), _check_principal_arn, allow_empty=True),
        api_public_access_cidrs=read.strings(top, "apiPublicAccessCidrs", "", StackConfig.api_public_access_cidrs,
                                             _check_cidr),
        addon_versions=read.string_map(top, "addonVersions", "", ADDONS, _check_addon_version),
        system_nodes=system_nodes,
        neuron=neuron_config,
        vllm=vllm_config,
        observability=observability,
    )
    if not problems:
        _check_capacity(config, problems)
        _check_reservations(config.neuron, problems)
        _check_observability(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _parse_system_nodes(read: _Reader, raw: dict[str, Any]) -> SystemNodesConfig:
    defaults = SystemNodesConfig()
    return SystemNodesConfig(
        instance_type=read.string(raw, "instanceType", "systemNodes", defaults.instance_type,
                                  _check_system_instance_type),
        # Two at least: the system add-ons run two replicas each, one per node.
        count=read.integer(raw, "count", "systemNodes", defaults.count, minimum=2, maximum=10),
    )


def _parse_neuron(read: _Reader, raw: dict[str, Any]) -> NeuronConfig:
    defaults = NeuronConfig()
    return NeuronConfig(
        instance_types=read.strings(raw, "instanceTypes", "neuron", defaults.instance_types, _check_instance_type),
        capacity_types=read.strings(raw, "capacityTypes", "neuron", defaults.capacity_types, _check_capacity_type),
        max_neuron_devices=read.integer(raw, "maxNeuronDevices", "neuron", defaults.max_neuron_devices),
        capacity_reservation_ids=read.strings(raw, "capacityReservationIds", "neuron", (),
                                              _check_capacity_reservation_id, allow_empty=True),
    )


def _parse_vllm(read: _Reader, raw: dict[str, Any]) -> VllmConfig:
    defaults = VllmConfig()
    models_raw = raw.get("models", None)
    models: tuple[ModelConfig, ...] = defaults.models
    if models_raw is not None:
        if not isinstance(models_raw, list) or not models_raw:
            read.problems.append(f"vllm.models must be a non-empty list of models, got {_describe(models_raw)}")
        else:
            models = tuple(_parse_model(read, m, f"vllm.models[{i}]") for i, m in enumerate(models_raw))
            names = [m.name for m in models]
            for name in sorted({n for n in names if names.count(n) > 1}):
                read.problems.append(f"vllm.models: the name '{name}' is used by more than one model; names must be unique")
    return VllmConfig(
        namespace=read.string(raw, "namespace", "vllm", defaults.namespace, _check_dns_label),
        image=read.string(raw, "image", "vllm", defaults.image, _check_image),
        models=models,
        client_namespaces=read.strings(raw, "clientNamespaces", "vllm", (), _check_dns_label, allow_empty=True),
        rollout_timeout_minutes=read.integer(raw, "rolloutTimeoutMinutes", "vllm", defaults.rollout_timeout_minutes,
                                             minimum=0, maximum=180),
        require_api_key=read.boolean(raw, "requireApiKey", "vllm", defaults.require_api_key),
    )


def _parse_model(read: _Reader, raw: Any, path: str) -> ModelConfig:
    if not isinstance(raw, dict):
        read.problems.append(f"{path} must be a mapping of model settings, got {_describe(raw)}")
        raw = {}
    raw = read.section(raw, path, _MODEL_KEYS)
    d = ModelConfig()
    name = read.string(raw, "name", path, d.name, _check_model_name)
    repo = read.string(raw, "huggingFaceRepo", path, d.hugging_face_repo, _check_hf_repo)
    # The workshop's name for the model belongs to the workshop's artifact only.
    aliases = d.served_model_aliases if repo == d.hugging_face_repo else ()
    max_num_seqs = read.integer(raw, "maxNumSeqs", path, d.max_num_seqs)
    replicas = read.integer(raw, "replicas", path, d.replicas)
    model = ModelConfig(
        name=name,
        hugging_face_repo=repo,
        revision=read.optional_string(raw, "revision", path, _check_commit),
        served_model_aliases=read.strings(raw, "servedModelAliases", path, aliases, _check_served_name,
                                          allow_empty=True),
        tensor_parallel_size=read.integer(raw, "tensorParallelSize", path, d.tensor_parallel_size),
        neuron_devices=read.integer(raw, "neuronDevices", path, d.neuron_devices),
        neuron_core_version=read.integer(raw, "neuronCoreVersion", path, d.neuron_core_version, minimum=2,
                                         maximum=3),
        max_model_len=read.integer(raw, "maxModelLen", path, d.max_model_len),
        max_num_seqs=max_num_seqs,
        replicas=replicas,
        # Unset: as many as `replicas`, which means no autoscaling.
        max_replicas=read.integer(raw, "maxReplicas", path, replicas),
        target_requests_per_replica=read.integer(raw, "targetRequestsPerReplica", path, max_num_seqs),
    )
    if model.max_replicas < model.replicas:
        read.problems.append(f"{path}.maxReplicas ({model.max_replicas}) must be at least replicas "
                             f"({model.replicas}); equal means a fixed size")
    if name in model.served_model_aliases:
        read.problems.append(f"{path}.servedModelAliases repeats the model's name '{name}'")
    return model


def _parse_observability(read: _Reader, raw: dict[str, Any]) -> ObservabilityConfig:
    defaults = ObservabilityConfig()
    return ObservabilityConfig(
        enabled=read.boolean(raw, "enabled", "observability", defaults.enabled),
        ttft_target_seconds=read.number(raw, "ttftTargetSeconds", "observability", defaults.ttft_target_seconds,
                                        minimum=0.05, maximum=600),
        alert_emails=read.strings(raw, "alertEmails", "observability", (), _check_email, allow_empty=True),
    )


def _check_capacity(config: StackConfig, problems: list[str]) -> None:
    """Cross-setting rules: every model fits a node of its generation, and all models fit the device ceiling."""
    types = config.neuron.instance_types
    limit = config.neuron.max_neuron_devices
    for name in types:
        devices = neuron.NEURON_INSTANCE_TYPES[name].neuron_devices
        if devices > limit:
            problems.append(f"neuron.instanceTypes: {name} has {devices} Neuron devices, more than "
                            f"neuron.maxNeuronDevices ({limit}), so Karpenter would never launch it; "
                            f"raise maxNeuronDevices to {devices} or remove {name}")
    for i, model in enumerate(config.vllm.models):
        path = f"vllm.models[{i}] ({model.name})"
        version = model.neuron_core_version
        generation = [n for n in types if neuron.NEURON_INSTANCE_TYPES[n].core_version == version]
        if not generation:
            families = ", ".join(f for f, v in neuron.FAMILY_CORE_VERSION.items() if v == version)
            problems.append(f"{path}: its artifacts run on NeuronCore-v{version} ({families}), but none of "
                            f"neuron.instanceTypes ({', '.join(types)}) is of that generation; add one or set "
                            "neuronCoreVersion to what the model was compiled for")
            continue
        hosts = neuron.hosts_for(model.neuron_devices, types, version)
        if not hosts:
            most = max(generation, key=lambda n: neuron.NEURON_INSTANCE_TYPES[n].neuron_devices)
            problems.append(f"{path}: neuronDevices {model.neuron_devices} fits none of neuron.instanceTypes "
                            f"(the most is {neuron.NEURON_INSTANCE_TYPES[most].neuron_devices} on {most})")
            continue
        cores = model.neuron_devices * min(h.cores_per_device for h in hosts)
        if model.tensor_parallel_size > cores:
            problems.append(f"{path}: tensorParallelSize {model.tensor_parallel_size} needs that many NeuronCores, "
                            f"but neuronDevices {model.neuron_devices} gives {cores}; "
                            f"lower tensorParallelSize to at most {cores} or request more devices")
    if config.neuron_devices_needed > limit:
        counted = "neuronDevices x maxReplicas" if any(m.autoscaled for m in config.vllm.models) else \
            "neuronDevices x replicas"
        problems.append(f"vllm.models request {config.neuron_devices_needed} Neuron devices in all ({counted}), "
                        f"more than neuron.maxNeuronDevices ({limit}); raise the limit or shrink the models")


def _check_reservations(settings: NeuronConfig, problems: list[str]) -> None:
    """Reserved capacity needs reservations to launch into, and reservations need `reserved` to be used."""
    reserved = "reserved" in settings.capacity_types
    if reserved and not settings.capacity_reservation_ids:
        problems.append("neuron.capacityTypes includes 'reserved', but neuron.capacityReservationIds is empty; "
                        "list the cr- IDs of your On-Demand Capacity Reservations or Capacity Blocks")
    if settings.capacity_reservation_ids and not reserved:
        problems.append("neuron.capacityReservationIds is set, but neuron.capacityTypes does not include "
                        "'reserved', so Karpenter would never use them; add 'reserved' to neuron.capacityTypes")


def _check_observability(config: StackConfig, problems: list[str]) -> None:
    autoscaled = [m.name for m in config.vllm.models if m.autoscaled]
    if not config.observability.enabled and autoscaled:
        problems.append(f"observability.enabled is false, but {', '.join(autoscaled)} autoscale(s) on metrics the "
                        "observability stack collects; enable it or set maxReplicas equal to replicas")


# --- sources ---------------------------------------------------------------------------------------


def from_pulumi() -> StackConfig:
    """Read this project's settings from the running Pulumi program."""
    prefix = f"{PROJECT}:"
    values: dict[str, Any] = {}
    raw_config = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    for full_key, raw in raw_config.items():
        if full_key.startswith(prefix):
            values[full_key[len(prefix):]] = _decode(raw)
    aws = pulumi.Config("aws")
    return parse(values, project=PROJECT, stack=pulumi.get_stack(), region=aws.get("region"),
                 aws_profile=aws.get("profile"))


def _decode(raw: Any) -> Any:
    # The runtime hands every value over as a string; structured values are JSON.
    if isinstance(raw, str) and raw[:1] in ("{", "["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def from_stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> StackConfig:
    """Read a stack's settings from `Pulumi.<stack>.yaml`, as the operator tools do."""
    path = stack_file(stack, project_dir)
    if not path.is_file():
        raise ConfigError([f"stack file {path.name} not found in {project_dir} (create it with "
                           f"`pulumi stack select {stack} --create`)"])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError([f"{path.name} is not valid YAML: {error}"]) from None
    config = document.get("config", {}) if isinstance(document, dict) else {}
    if not isinstance(config, dict):
        raise ConfigError([f"{path.name}: 'config' must be a mapping"])
    prefix = f"{PROJECT}:"
    # Pulumi hands top-level scalars to the program as strings (`1.35` arrives as "1.35"); do the same.
    values = {k[len(prefix):]: v if isinstance(v, (str, dict, list)) else json.dumps(v)
              for k, v in config.items() if k.startswith(prefix)}
    region, profile = config.get("aws:region"), config.get("aws:profile")
    return parse(values, project=PROJECT, stack=stack, region=region if isinstance(region, str) else None,
                 aws_profile=profile if isinstance(profile, str) else None)
