"""The stack settings: defaults, and every validation rule failing clearly before anything is registered."""

from __future__ import annotations

import copy
import textwrap

import pytest

from components import config as stack_config
from components import versions
from components.config import PROJECT, ConfigError
from tests.conftest import with_settings
from tools.offline import Deployment, run_program

NEURON = f"{PROJECT}:neuron"
VLLM = f"{PROJECT}:vllm"


def test_dev_stack_file_spells_out_the_defaults(dev_config):
    """Pulumi.dev.yaml is what a stack without settings gets, written out for users to edit."""
    from_file = stack_config.parse({k.split(":", 1)[1]: v for k, v in dev_config.items() if k.startswith(PROJECT)},
                                   stack="dev", region="us-west-2")
    from_nothing = stack_config.parse({}, stack="dev", region="us-west-2")
    assert from_file == from_nothing
    assert set(k.split(":", 1)[1] for k in dev_config if k.startswith(PROJECT)) == set(stack_config._TOP_KEYS)


def test_defaults_serve_the_workshop_model():
    config = stack_config.parse({}, stack="prod")
    assert config.cluster_name == "trainium-vllm-prod"
    assert config.kubernetes_version == "1.35"
    assert config.neuron.instance_types == ("trn1.2xlarge", "inf2.xlarge")
    assert config.neuron.capacity_types == ("on-demand",)
    assert config.neuron.max_neuron_devices == 2
    assert config.vllm.namespace == "vllm"
    assert config.vllm.image == versions.VLLM_IMAGE
    (model,) = config.vllm.models
    assert (model.name, model.hugging_face_repo) == ("mistral", "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2")
    assert (model.tensor_parallel_size, model.neuron_devices, model.max_model_len, model.max_num_seqs,
            model.replicas, model.max_replicas) == (2, 1, 2048, 1, 1, 1)
    # The artifact's compiled batch size is 1 ("bs-1"); the workshop's request body names it by path.
    assert model.served_model_names == ("mistral", "/models/mistral-7b-v0.3")
    assert (model.revision, model.neuron_core_version) == (None, 2)


def test_program_without_project_settings_deploys_the_defaults():
    """A stack with only a region still serves the workshop's model."""
    deployment = run_program({"aws:region": "us-west-2"})
    assert deployment.one("eks:index:Cluster").inputs["name"] == "trainium-vllm-dev"
    assert deployment.one("eks:index:Cluster").inputs["version"] == "1.35"


def _neuron(**changes):
    return {"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "capacityTypes": ["on-demand"], "maxNeuronDevices": 2,
            **changes}


def _vllm(models=None, **changes):
    model = {"name": "mistral", "tensorParallelSize": 2, "neuronDevices": 1, "replicas": 1}
    return {"models": models if models is not None else [model], **changes}


def _model(**changes):
    return {"name": "mistral", "tensorParallelSize": 2, "neuronDevices": 1, "replicas": 1, **changes}


BAD_SETTINGS = [
    # (settings to replace, words the error must contain)
    ({"kubernetesVersion": "1.25"}, ["kubernetesVersion", "'1.25' is not supported", "1.30-1.36"]),
    ({"kubernetesVersion": "1.37"}, ["kubernetesVersion", "1.30-1.36"]),
    ({"kubernetesVersion": "v1.35"}, ["kubernetesVersion", "'v1.35'"]),
    # Unquoted in YAML, 1.30 is the number 1.3, and Pulumi hands the program "1.3".
    ({"kubernetesVersion": 1.30}, ["kubernetesVersion", "'1.3' is not supported", 'quote it ("1.30")']),
    ({"clusterName": "my_cluster!"}, ["clusterName", "must start with a letter"]),
    ({"clusterName": "c" * 64}, ["clusterName", "at most 63 characters"]),
    ({"vpcCidr": "10.0.0.0/8"}, ["vpcCidr", "between /16 and /20"]),
    ({"vpcCidr": "not-a-cidr"}, ["vpcCidr", "not an IPv4 CIDR"]),
    ({"clusterAdminArns": ["arn:aws:iam::123:role/x"]}, ["clusterAdminArns[0]", "not an IAM role or user ARN"]),
    ({"apiPublicAccessCidrs": []}, ["apiPublicAccessCidrs must not be empty"]),
    ({"apiPublicAccessCidrs": ["1.2.3.4/40"]}, ["apiPublicAccessCidrs[0]", "not an IPv4 CIDR"]),
    ({"neuron": _neuron(instanceTypes=["p4d.24xlarge"])},
     ["neuron.instanceTypes[0]", "'p4d.24xlarge' is not a Neuron instance type", "trn1.2xlarge"]),
    ({"neuron": _neuron(instanceTypes=["inf1.xlarge"])}, ["'inf1.xlarge' is not a Neuron instance type"]),
    ({"neuron": _neuron(instanceTypes=[])}, ["neuron.instanceTypes must not be empty"]),
    ({"neuron": _neuron(instanceTypes="trn1.2xlarge")}, ["neuron.instanceTypes must be a list of strings"]),
    ({"neuron": _neuron(instanceTypes=["trn1.2xlarge", "trn1.2xlarge"])}, ["neuron.instanceTypes lists a value twice"]),
    ({"neuron": _neuron(capacityTypes=["preemptible"])},
     ["neuron.capacityTypes[0]", "'preemptible' is not a capacity type", "on-demand, spot, reserved"]),
    ({"neuron": _neuron(maxNeuronDevices=0)}, ["neuron.maxNeuronDevices must be at least 1, got 0"]),
    ({"neuron": _neuron(maxNeuronDevices="2")}, ["neuron.maxNeuronDevices must be an integer", '"2" (a string)']),
    ({"neuron": _neuron(maxNeuronDevices=2.5)}, ["neuron.maxNeuronDevices must be an integer", "(a number)"]),
    ({"neuron": _neuron(maxNeuronDevices=True)}, ["neuron.maxNeuronDevices must be an integer", "(a boolean)"]),
    ({"neuron": _neuron(instanceType=["trn1.2xlarge"])}, ["neuron.instanceType is not a setting",
                                                          "did you mean 'instanceTypes'"]),
    ({"neuron": ["trn1.2xlarge"]}, ["neuron must be a mapping of settings"]),
    ({"neuron": _neuron(instanceTypes=["trn1.32xlarge"])},
     ["trn1.32xlarge has 16 Neuron devices, more than neuron.maxNeuronDevices (2)"]),
    ({"vllm": _vllm(namespace="vLLM")}, ["vllm.namespace", "not a DNS-1123 label"]),
    ({"vllm": _vllm(image="public.ecr.aws/neuron/pytorch-inference-vllm-neuronx")}, ["vllm.image", "must be pinned"]),
    ({"vllm": _vllm(image="example.com:5000/vllm:latest")}, ["vllm.image", "other than 'latest'"]),
    ({"vllm": _vllm(clientNamespaces=["Web"])}, ["vllm.clientNamespaces[0]", "not a DNS-1123 label"]),
    ({"vllm": _vllm(rolloutTimeoutMinutes=-1)}, ["vllm.rolloutTimeoutMinutes must be between 0 and 180"]),
    ({"vllm": _vllm(models=[])}, ["vllm.models must be a non-empty list"]),
    ({"vllm": _vllm(models=["mistral"])}, ["vllm.models[0] must be a mapping of model settings"]),
    ({"vllm": _vllm(models=[_model(name="Mistral")])}, ["vllm.models[0].name", "DNS-1035 label"]),
    ({"vllm": _vllm(models=[_model(name="7b")])}, ["vllm.models[0].name", "starting with a letter"]),
    ({"vllm": _vllm(models=[_model(name="m" * 64)])}, ["vllm.models[0].name", "at most 63 characters"]),
    ({"vllm": _vllm(models=[_model(), _model(neuronDevices=1)])},
     ["the name 'mistral' is used by more than one model"]),
    ({"vllm": _vllm(models=[_model(huggingFaceRepo="mistral-7b")])},
     ["vllm.models[0].huggingFaceRepo", "'owner/name'"]),
    ({"vllm": _vllm(models=[_model(huggingFaceRepo="https://huggingface.co/a/b")])},
     ["vllm.models[0].huggingFaceRepo"]),
    ({"vllm": _vllm(models=[_model(tensorParallelSize=0)])}, ["vllm.models[0].tensorParallelSize must be at least 1"]),
    ({"vllm": _vllm(models=[_model(maxModelLen="2048")])}, ["vllm.models[0].maxModelLen must be an integer"]),
    ({"vllm": _vllm(models=[_model(maxNumSeqs=None)])}, ["vllm.models[0].maxNumSeqs must be an integer",
                                                         "null (nothing)"]),
    ({"vllm": _vllm(models=[_model(replicas=1.0)])}, ["vllm.models[0].replicas must be an integer"]),
    ({"vllm": _vllm(models=[_model(tensorParalelSize=2)])}, ["vllm.models[0].tensorParalelSize is not a setting",
                                                             "did you mean 'tensorParallelSize'"]),
    ({"vllm": _vllm(models=[_model(tensorParallelSize=4)])},
     ["vllm.models[0] (mistral): tensorParallelSize 4 needs that many NeuronCores", "neuronDevices 1 gives 2"]),
    ({"vllm": _vllm(models=[_model(neuronDevices=2)])},
     ["vllm.models[0] (mistral): neuronDevices 2 fits none of neuron.instanceTypes", "the most is 1"]),
    ({"vllm": _vllm(models=[_model(replicas=3)])},
     ["request 3 Neuron devices in all", "more than neuron.maxNeuronDevices (2)"]),
    ({"vllm": _vllm(models=[_model(), _model(name="llama"), _model(name="qwen")])},
     ["request 3 Neuron devices in all"]),
    ({"clustername": "x"}, ["clustername is not a setting", "did you mean 'clusterName'"]),
    # Capacity reservations and the `reserved` capacity type come together.
    ({"neuron": _neuron(capacityTypes=["reserved", "on-demand"])},
     ["neuron.capacityTypes includes 'reserved'", "neuron.capacityReservationIds is empty"]),
    ({"neuron": _neuron(capacityReservationIds=["cr-0123456789abcdef0"])},
     ["neuron.capacityReservationIds is set", "does not include 'reserved'", "neuron.capacityTypes"]),
    ({"neuron": _neuron(capacityTypes=["reserved"], capacityReservationIds=["cr-123"])},
     ["neuron.capacityReservationIds[0]", "'cr-123' is not a capacity reservation ID"]),
    # A model only where its compiled artifacts run.
    ({"neuron": _neuron(instanceTypes=["trn2.3xlarge"], maxNeuronDevices=2)},
     ["vllm.models[0] (mistral): its artifacts run on NeuronCore-v2 (inf2, trn1, trn1n)", "trn2.3xlarge"]),
    ({"vllm": _vllm(models=[_model(neuronCoreVersion=4)])}, ["vllm.models[0].neuronCoreVersion must be between 2 and 3"]),
    ({"vllm": _vllm(models=[_model(neuronCoreVersion=3, tensorParallelSize=4)])},
     ["its artifacts run on NeuronCore-v3 (trn2)", "trn1.2xlarge, inf2.xlarge"]),
    # Autoscaling bounds, sized for the maximum.
    ({"vllm": _vllm(models=[_model(replicas=2, maxReplicas=1)])},
     ["vllm.models[0].maxReplicas (1) must be at least replicas (2)"]),
    ({"vllm": _vllm(models=[_model(maxReplicas=3)])},
     ["request 3 Neuron devices in all (neuronDevices x maxReplicas)", "neuron.maxNeuronDevices (2)"]),
    ({"vllm": _vllm(models=[_model(targetRequestsPerReplica=0)])},
     ["vllm.models[0].targetRequestsPerReplica must be at least 1"]),
    ({"observability": {"enabled": False}, "vllm": _vllm(models=[_model(maxReplicas=2)])},
     ["observability.enabled is false, but mistral autoscale(s)"]),
    ({"observability": {"enabled": "yes"}}, ["observability.enabled must be true or false"]),
    ({"observability": {"ttftTargetSeconds": 0}}, ["observability.ttftTargetSeconds must be between 0.05 and 600"]),
    ({"observability": {"ttftTargetSeconds": "2s"}}, ["observability.ttftTargetSeconds must be a number"]),
    ({"observability": {"alertEmails": ["oncall"]}}, ["observability.alertEmails[0]", "not an email address"]),
    # Pinned model revisions and served names.
    ({"vllm": _vllm(models=[_model(revision="main")])}, ["vllm.models[0].revision", "'main' is not a commit"]),
    ({"vllm": _vllm(models=[_model(revision="ABCDEF" * 7)])}, ["vllm.models[0].revision", "is not a commit"]),
    ({"vllm": _vllm(models=[_model(servedModelAliases=["mistral"])])},
     ["vllm.models[0].servedModelAliases repeats the model's name 'mistral'"]),
    ({"vllm": _vllm(models=[_model(servedModelAliases=["a b"])])}, ["servedModelAliases[0]", "must not contain spaces"]),
    ({"vllm": _vllm(requireApiKey="false")}, ["vllm.requireApiKey must be true or false", '"false" (a string)']),
    # Add-on versions and the system nodes.
    ({"addonVersions": {"coredns": "1.12"}}, ["addonVersions.coredns", "'1.12' is not an EKS add-on version"]),
    ({"addonVersions": {"core-dns": "v1.12.4-eksbuild.1"}}, ["addonVersions.core-dns is not a setting",
                                                              "did you mean 'coredns'"]),
    ({"addonVersions": ["v1"]}, ["addonVersions must be a mapping of names to strings"]),
    ({"systemNodes": {"count": 1}}, ["systemNodes.count must be between 2 and 10, got 1"]),
    ({"systemNodes": {"instanceType": "t3.micro"}}, ["systemNodes.instanceType", "'t3.micro' is not one of"]),
]


@pytest.mark.parametrize("settings, words", BAD_SETTINGS, ids=[repr(s)[:60] for s, _ in BAD_SETTINGS])
def test_bad_setting_fails_before_anything_is_registered(dev_config, settings, words):
    deployment = Deployment()
    with pytest.raises(ConfigError) as raised:
        run_program(with_settings(dev_config, **settings), deployment=deployment)
    message = str(raised.value)
    for word in words:
        assert word in message, message
    assert deployment.resources == []


def test_every_problem_is_reported_at_once(dev_config):
    config = with_settings(dev_config, kubernetesVersion="1.20", neuron=_neuron(instanceTypes=["g5.xlarge"]),
                           vllm=_vllm(namespace="Bad_NS"))
    with pytest.raises(ConfigError) as raised:
        run_program(config)
    assert len(raised.value.problems) == 3


def test_config_error_is_a_clean_pulumi_run_error():
    """Pulumi prints a RunError's message without a traceback."""
    import pulumi

    assert issubclass(ConfigError, pulumi.RunError)


def test_larger_instance_types_allow_bigger_models():
    config = stack_config.parse({
        "neuron": {"instanceTypes": ["trn1.32xlarge"], "maxNeuronDevices": 16},
        "vllm": {"models": [{"name": "llama", "huggingFaceRepo": "meta-llama/Llama-3.1-70B-Instruct",
                             "tensorParallelSize": 32, "neuronDevices": 16}]},
    }, stack="dev")
    assert config.vllm.models[0].tensor_parallel_size == 32


def test_trn2_cores_count_at_the_default_logical_core_size():
    ok = {"neuron": {"instanceTypes": ["trn2.3xlarge"], "maxNeuronDevices": 1},
          "vllm": {"models": [{"name": "m", "tensorParallelSize": 4, "neuronDevices": 1, "neuronCoreVersion": 3}]}}
    stack_config.parse(ok, stack="dev")
    too_wide = copy.deepcopy(ok)
    too_wide["vllm"]["models"][0]["tensorParallelSize"] = 8
    with pytest.raises(ConfigError, match="neuronDevices 1 gives 4"):
        stack_config.parse(too_wide, stack="dev")


def test_tools_read_the_same_model_from_the_stack_file(tmp_path):
    (tmp_path / "Pulumi.ci.yaml").write_text(textwrap.dedent("""
        config:
          aws:region: us-east-1
          trainium-vllm:neuron:
            instanceTypes: [trn1.2xlarge]
            maxNeuronDevices: 1
    """))
    config = stack_config.from_stack_file("ci", tmp_path)
    assert config.region == "us-east-1"
    assert config.cluster_name == "trainium-vllm-ci"
    assert config.neuron.instance_types == ("trn1.2xlarge",)


def test_stack_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="Pulumi.nope.yaml not found"):
        stack_config.from_stack_file("nope", tmp_path)
    (tmp_path / "Pulumi.bad.yaml").write_text("config: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        stack_config.from_stack_file("bad", tmp_path)
    (tmp_path / "Pulumi.typo.yaml").write_text("config:\n  trainium-vllm:neuron:\n    maxNeuronDevices: two\n")
    with pytest.raises(ConfigError, match="maxNeuronDevices must be an integer"):
        stack_config.from_stack_file("typo", tmp_path)


def test_stack_file_scalars_read_as_pulumi_passes_them(tmp_path):
    """Pulumi passes top-level scalars as strings: unquoted 1.35 works, unquoted 1.30 becomes 1.3 for both."""
    (tmp_path / "Pulumi.a.yaml").write_text("config:\n  trainium-vllm:kubernetesVersion: 1.35\n")
    assert stack_config.from_stack_file("a", tmp_path).kubernetes_version == "1.35"
    (tmp_path / "Pulumi.b.yaml").write_text("config:\n  trainium-vllm:kubernetesVersion: 1.30\n")
    with pytest.raises(ConfigError, match="'1.3' is not supported"):
        stack_config.from_stack_file("b", tmp_path)


WRONG_VALUES = [None, True, 0, -1, 1.5, "", "x", [], [None], [1], {}, {"a": 1}]
SETTING_PATHS = [(key,) for key in stack_config._TOP_KEYS]
SETTING_PATHS += [("systemNodes", key) for key in stack_config._SYSTEM_NODES_KEYS]
SETTING_PATHS += [("observability", key) for key in stack_config._OBSERVABILITY_KEYS]
SETTING_PATHS += [("addonVersions", addon) for addon in stack_config.ADDONS]
SETTING_PATHS += [("neuron", key) for key in stack_config._NEURON_KEYS]
SETTING_PATHS += [("vllm", key) for key in stack_config._VLLM_KEYS]
SETTING_PATHS += [("vllm", "models", 0, key) for key in stack_config._MODEL_KEYS]


@pytest.mark.parametrize("path", SETTING_PATHS, ids=[".".join(map(str, p)) for p in SETTING_PATHS])
def test_wrong_types_anywhere_give_config_errors_never_crashes(path):
    """Every setting, given values of every wrong shape: a ConfigError or a valid model, nothing else."""
    for value in WRONG_VALUES:
        settings = {"neuron": {}, "vllm": {"models": [{}]}, "systemNodes": {}, "observability": {},
                    "addonVersions": {}}
        target = settings
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)
        try:
            stack_config.parse(settings, stack="dev")
        except ConfigError as error:
            assert error.problems and all(isinstance(p, str) for p in error.problems)


def test_the_workshop_name_belongs_to_the_workshop_artifact_only():
    config = stack_config.parse({"vllm": {"models": [
        {"name": "mistral"}, {"name": "llama", "huggingFaceRepo": "aws-neuron/Llama-3.1-8B-Instruct-bs-1"}]},
        "neuron": {"maxNeuronDevices": 2}}, stack="dev")
    assert [m.served_model_names for m in config.vllm.models] == [("mistral", "/models/mistral-7b-v0.3"), ("llama",)]


def test_autoscaled_models_count_at_their_maximum():
    config = stack_config.parse({
        "neuron": {"maxNeuronDevices": 6},
        "vllm": {"models": [{"name": "a", "replicas": 1, "maxReplicas": 3},
                            {"name": "b", "replicas": 2}]},
    }, stack="dev")
    a, b = config.vllm.models
    assert (a.autoscaled, b.autoscaled, b.max_replicas) == (True, False, 2)
    assert (config.neuron_devices_needed, config.spare_neuron_devices) == (5, 1)
    assert a.target_requests_per_replica == a.max_num_seqs == 1


def test_reserved_capacity_with_reservations_is_accepted():
    config = stack_config.parse({"neuron": {"capacityTypes": ["reserved", "on-demand"],
                                            "capacityReservationIds": ["cr-0123456789abcdef0"]}}, stack="dev")
    assert config.neuron.capacity_reservation_ids == ("cr-0123456789abcdef0",)
