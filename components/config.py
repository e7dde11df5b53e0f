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

from components import neuron, versions

PROJECT = "trainium-vllm"
PROJECT_DIR = Path(__file__).resolve().parent.parent

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Model names also name a Service, and Service names must start with a letter (DNS-1035).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
CLUSTER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
IAM_PRINCIPAL_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
CAPACITY_TYPES = ("on-demand", "spot", "reserved")


class ConfigError(pulumi.RunError):
    """Invalid stack settings. A RunError, so `pulumi up` prints the message without a traceback."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mistral"
    hugging_face_repo: str = versions.DEFAULT_MODEL_REPO
    tensor_parallel_size: int = 2
    neuron_devices: int = 1
    max_model_len: int = 2048
    max_num_seqs: int = 4
    replicas: int = 1


@dataclass(frozen=True)
class NeuronConfig:
    instance_types: tuple[str, ...] = ("trn1.2xlarge", "inf2.xlarge")
    capacity_types: tuple[str, ...] = ("on-demand",)
    max_neuron_devices: int = 2


@dataclass(frozen=True)
class VllmConfig:
    namespace: str = "vllm"
    image: str = versions.VLLM_IMAGE
    models: tuple[ModelConfig, ...] = (ModelConfig(),)
    # Namespaces whose pods may call the models; empty means every namespace of the cluster.
    client_namespaces: tuple[str, ...] = ()
    # How long `pulumi up` waits for each model to become ready; 0 means it does not wait.
    rollout_timeout_minutes: int = 45


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    cluster_name: str
    kubernetes_version: str = versions.KUBERNETES_VERSION
    region: str | None = None
    vpc_cidr: str = "10.0.0.0/16"
    # IAM roles/users given cluster-admin access entries, besides whoever runs `pulumi up`.
    cluster_admin_arns: tuple[str, ...] = ()
    api_public_access_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)

    @property
    def spare_neuron_devices(self) -> int:
        """Neuron devices left under the NodePool's limit when every model replica runs."""
        return self.neuron.max_neuron_devices - sum(m.neuron_devices * m.replicas for m in self.vllm.models)


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


# --- the model -------------------------------------------------------------------------------------

_TOP_KEYS = ("clusterName", "kubernetesVersion", "vpcCidr", "clusterAdminArns", "apiPublicAccessCidrs",
             "neuron", "vllm")
_NEURON_KEYS = ("instanceTypes", "capacityTypes", "maxNeuronDevices")
_VLLM_KEYS = ("namespace", "image", "models", "clientNamespaces", "rolloutTimeoutMinutes")
_MODEL_KEYS = ("name", "huggingFaceRepo", "tensorParallelSize", "neuronDevices", "maxModelLen", "maxNumSeqs",
               "replicas")


def parse(values: Mapping[str, Any], *, project: str = PROJECT, stack: str, region: str | None = None) -> StackConfig:
    """Build the validated model from settings keyed without the project prefix; raise ConfigError."""
    problems: list[str] = []
    read = _Reader(problems)
    top = read.section(dict(values), "", _TOP_KEYS)

    neuron_config = _parse_neuron(read, read.section(top.get("neuron"), "neuron", _NEURON_KEYS))
    vllm_config = _parse_vllm(read, read.section(top.get("vllm"), "vllm", _VLLM_KEYS))
    config = StackConfig(
        project=project,
        stack=stack,
        region=region,
        cluster_name=read.string(top, "clusterName", "", default_cluster_name(project, stack), _check_cluster_name),
        kubernetes_version=read.string(top, "kubernetesVersion", "", versions.KUBERNETES_VERSION,
                                       _check_kubernetes_version),
        vpc_cidr=read.string(top, "vpcCidr", "", StackConfig.vpc_cidr, _check_vpc_cidr),
        cluster_admin_arns=read.strings(top, "clusterAdminArns", "", (), _check_principal_arn, allow_empty=True),
        api_public_access_cidrs=read.strings(top, "apiPublicAccessCidrs", "", StackConfig.api_public_access_cidrs,
                                             _check_cidr),
        neuron=neuron_config,
        vllm=vllm_config,
    )
    if not problems:
        _check_capacity(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def _parse_neuron(read: _Reader, raw: dict[str, Any]) -> NeuronConfig:
    defaults = NeuronConfig()
    return NeuronConfig(
        instance_types=read.strings(raw, "instanceTypes", "neuron", defaults.instance_types, _check_instance_type),
        capacity_types=read.strings(raw, "capacityTypes", "neuron", defaults.capacity_types, _check_capacity_type),
        max_neuron_devices=read.integer(raw, "maxNeuronDevices", "neuron", defaults.max_neuron_devices),
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
    )


def _parse_model(read: _Reader, raw: Any, path: str) -> ModelConfig:
    if not isinstance(raw, dict):
        read.problems.append(f"{path} must be a mapping of model settings, got {_describe(raw)}")
        raw = {}
    raw = read.section(raw, path, _MODEL_KEYS)
    d = ModelConfig()
    return ModelConfig(
        name=read.string(raw, "name", path, d.name, _check_model_name),
        hugging_face_repo=read.string(raw, "huggingFaceRepo", path, d.hugging_face_repo, _check_hf_repo),
        tensor_parallel_size=read.integer(raw, "tensorParallelSize", path, d.tensor_parallel_size),
        neuron_devices=read.integer(raw, "neuronDevices", path, d.neuron_devices),
        max_model_len=read.integer(raw, "maxModelLen", path, d.max_model_len),
        max_num_seqs=read.integer(raw, "maxNumSeqs", path, d.max_num_seqs),
        replicas=read.integer(raw, "replicas", path, d.replicas),
    )


def _check_capacity(config: StackConfig, problems: list[str]) -> None:
    """Cross-setting rules: every model fits a node, and all models together fit the pool's limit."""
    types = config.neuron.instance_types
    limit = config.neuron.max_neuron_devices
    for name in types:
        devices = neuron.NEURON_INSTANCE_TYPES[name].neuron_devices
        if devices > limit:
            problems.append(f"neuron.instanceTypes: {name} has {devices} Neuron devices, more than "
                            f"neuron.maxNeuronDevices ({limit}), so Karpenter would never launch it; "
                            f"raise maxNeuronDevices to {devices} or remove {name}")
    total = 0
    for i, model in enumerate(config.vllm.models):
        path = f"vllm.models[{i}] ({model.name})"
        hosts = neuron.hosts_for(model.neuron_devices, types)
        if not hosts:
            most = max(types, key=lambda n: neuron.NEURON_INSTANCE_TYPES[n].neuron_devices)
            problems.append(f"{path}: neuronDevices {model.neuron_devices} fits none of neuron.instanceTypes "
                            f"(the most is {neuron.NEURON_INSTANCE_TYPES[most].neuron_devices} on {most})")
            continue
        cores = model.neuron_devices * min(h.cores_per_device for h in hosts)
        if model.tensor_parallel_size > cores:
            problems.append(f"{path}: tensorParallelSize {model.tensor_parallel_size} needs that many NeuronCores, "
                            f"but neuronDevices {model.neuron_devices} gives {cores}; "
                            f"lower tensorParallelSize to at most {cores} or request more devices")
        total += model.neuron_devices * model.replicas
    if total > limit:
        problems.append(f"vllm.models request {total} Neuron devices in all (neuronDevices x replicas), "
                        f"more than neuron.maxNeuronDevices ({limit}); raise the limit or shrink the models")


# --- sources ---------------------------------------------------------------------------------------


def from_pulumi() -> StackConfig:
    """Read this project's settings from the running Pulumi program."""
    prefix = f"{PROJECT}:"
    values: dict[str, Any] = {}
    raw_config = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    for full_key, raw in raw_config.items():
        if full_key.startswith(prefix):
            values[full_key[len(prefix):]] = _decode(raw)
    region = pulumi.Config("aws").get("region")
    return parse(values, project=PROJECT, stack=pulumi.get_stack(), region=region)


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
    region = config.get("aws:region")
    return parse(values, project=PROJECT, stack=stack, region=region if isinstance(region, str) else None)
