"""tools.preflight against moto's local AWS server (real per-zone offerings, STS identities, assumed roles) and
a stand-in for the Hugging Face Hub, with botocore stubs for the answers moto cannot give (Service Quotas for
EC2, EKS cluster versions, EC2 DescribeCapacityReservations, which moto 5.2 does not implement)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import boto3
import botocore.loaders
import botocore.session
import pytest
import yaml
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from moto.server import ThreadedMotoServer

from components import config as stack_config
from components.config import PROJECT, PROJECT_DIR
from tests.fakes.fake_hub import COMMIT, FakeHub
from tools import cli, preflight

US_WEST_2_INF2 = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]
REPO = "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"
ACCOUNT = "123456789012"
TRN_ON_DEMAND, INF_ON_DEMAND = "L-2C3B7624", "L-1945791B"
TRN_SPOT, INF_SPOT = "L-6B0D517C", "L-B5D1601B"
# neuron.capacityReservationIds entries: cr- and 17 hex digits.
CR_ACTIVE, CR_BLOCK, CR_EXPIRED, CR_ZONE, CR_TYPE, CR_MISSING = (f"cr-{n:017x}" for n in range(1, 7))


# botocore reads its service models (megabytes of JSON) afresh for every session, which is most of the time a
# preflight run takes; the tests' sessions share one loader. Credentials, profiles and endpoints stay per session.
MODELS = botocore.loaders.create_loader()


class SessionSharingModels(boto3.Session):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("botocore_session") is None:
            kwargs["botocore_session"] = botocore.session.Session()
            kwargs["botocore_session"].register_component("data_loader", MODELS)
        super().__init__(*args, **kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    """The dev stack's model repository; `main` is COMMIT."""
    with FakeHub(REPO, {"config.json": b"{}"}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path, moto_url, hub) -> None:
    """Fake credentials aimed at moto, the fake Hub, and nothing from this machine's AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(boto3, "Session", SessionSharingModels)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = preflight.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def by_name(result: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in result["checks"]}


def statuses(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["name"], c["status"]) for c in result["checks"]]


def write_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, **settings: Any) -> None:
    """A copy of the dev stack as Pulumi.<name>.yaml in a scratch project; None removes a setting."""
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    for key, value in settings.items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if value is None:
            document["config"].pop(full_key)
        else:
            document["config"][full_key] = value
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)


def dev_config(**neuron: Any) -> stack_config.StackConfig:
    config = stack_config.from_stack_file("dev")
    return dataclasses.replace(config, neuron=dataclasses.replace(config.neuron, **neuron)) if neuron else config


def neuron_settings(**changes: Any) -> dict[str, Any]:
    settings = {"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "capacityTypes": ["on-demand"],
                "maxNeuronDevices": 2, "capacityReservationIds": []}
    return {**settings, **changes}


def dev_model(**changes: Any) -> dict[str, Any]:
    """The dev stack's model entry, as Pulumi.dev.yaml spells it, with some settings changed."""
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    return {**document["config"][f"{PROJECT}:vllm"]["models"][0], **changes}


def vllm_settings(*models: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    return {**document["config"][f"{PROJECT}:vllm"], "models": list(models)}


# --- answers moto does not give ---------------------------------------------------------------------


def quota_answer(code: str, value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": "n/a", "Value": value}}


def reservation(reservation_id: str, state: str = "active", instance_type: str = "trn1.2xlarge",
                zone: str = "us-west-2b", total: int = 2, available: int = 2, block: bool = False,
                start: datetime.datetime | None = None, end: datetime.datetime | None = None) -> dict[str, Any]:
    """A CapacityReservation as EC2 DescribeCapacityReservations describes one."""
    answer: dict[str, Any] = {
        "CapacityReservationId": reservation_id, "InstanceType": instance_type, "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": zone, "Tenancy": "default", "TotalInstanceCount": total,
        "AvailableInstanceCount": available, "State": state, "InstanceMatchCriteria": "targeted",
        "EndDateType": "limited" if block else "unlimited",
        "ReservationType": "capacity-block" if block else "default",
        "StartDate": start or datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)}
    if end:
        answer["EndDate"] = end
    return answer


class CannedAws:
    """Answers for the calls moto's server lacks, given through the hook botocore's Stubber uses (an answer
    to "before-call" replaces the HTTP request), each validated against botocore's output shape as the Stubber
    validates; every other call goes on to moto. Records the parameters of the calls it answered."""

    def __init__(self) -> None:
        self.quotas: dict[str, float] = {}
        self.reservations: dict[str, dict[str, Any]] | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def attach(self, clients: dict[str, Any]) -> None:
        for service, operation in (("service-quotas", "GetServiceQuota"), ("ec2", "DescribeCapacityReservations")):
            events = clients[service].meta.events
            events.register(f"before-parameter-build.{service}.{operation}", self._remember)
            events.register(f"before-call.{service}.{operation}", self._answer)

    def _remember(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        params = self.calls[-1][1]
        if model.name == "GetServiceQuota":
            if params["QuotaCode"] not in self.quotas:
                return None  # moto answers: NoSuchResourceException, "could not check"
            return self._ok(model, quota_answer(params["QuotaCode"], self.quotas[params["QuotaCode"]]))
        if self.reservations is None:
            return None
        ids = params.get("CapacityReservationIds", [])
        missing = [i for i in ids if i not in self.reservations]
        if missing:
            # EC2 fails the whole call for an unknown ID, naming it.
            return AWSResponse(None, 400, {}, None), {"Error": {
                "Code": "InvalidCapacityReservationId.NotFound",
                "Message": f"The capacity reservation ID '{missing[0]}' does not exist"}}
        return self._ok(model, {"CapacityReservations": [self.reservations[i] for i in ids]})

    @staticmethod
    def _ok(model: Any, answer: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
        validate_parameters(answer, model.output_shape)
        return AWSResponse(None, 200, {}, None), answer


@pytest.fixture
def canned(monkeypatch) -> CannedAws:
    answers = CannedAws()
    make_clients = preflight.aws_clients

    def clients_with_answers(option, config):
        region, clients = make_clients(option, config)
        answers.attach(clients)
        return region, clients

    monkeypatch.setattr(preflight, "aws_clients", clients_with_answers)
    return answers


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return client, Stubber(client)


@pytest.fixture(scope="module")
def offered(moto_url) -> Any:
    """preflight.lookup_types against moto, once per region and types."""
    cache: dict[tuple[str, tuple[str, ...]], dict[str, preflight.TypeInfo]] = {}

    def lookup(region: str, *types: str) -> dict[str, preflight.TypeInfo]:
        if (region, types) not in cache:
            ec2 = boto3.client("ec2", region_name=region, endpoint_url=moto_url, aws_access_key_id="testing",
                               aws_secret_access_key="testing")
            cache[region, types] = preflight.lookup_types(ec2, types)
        return cache[region, types]

    return lookup


def readings(**values: float | None) -> list[preflight.QuotaReading]:
    """Quota readings by code name (trn=..., inf=..., trn_spot=..., inf_spot=...); None: could not check."""
    quotas = {"trn": preflight.ON_DEMAND_QUOTAS[0], "inf": preflight.ON_DEMAND_QUOTAS[1],
              "trn_spot": preflight.SPOT_QUOTAS[0], "inf_spot": preflight.SPOT_QUOTAS[1]}
    return [preflight.QuotaReading(quotas[k], None if v is None else int(v), None if v is not None else "n/a")
            for k, v in values.items()]


# --- the dev stack against moto ----------------------------------------------------------------------


def test_dev_stack_in_us_west_2(capsys):
    code, result = run_json(capsys)

    assert code == 0
    assert set(result) == {"ok", "region", "checks", "offerings", "models"}
    assert (result["ok"], result["region"]) == (True, "us-west-2")
    assert result["offerings"] == {"trn1.2xlarge": ["us-west-2b", "us-west-2d"], "inf2.xlarge": US_WEST_2_INF2}
    assert result["models"] == {"mistral": {"placement": "trainium", "revision": COMMIT}}
    assert all(set(c) == {"name", "status", "detail"} and c["status"] in ("pass", "warn", "fail")
               for c in result["checks"])
    assert statuses(result) == [
        ("credentials", "pass"),
        ("cluster admins", "pass"),
        ("instance type trn1.2xlarge", "pass"),
        ("instance type inf2.xlarge", "pass"),
        ("offerings", "pass"),
        ("neuron catalog", "pass"),
        ("model mistral", "pass"),
        ("quota Running On-Demand Trn instances", "warn"),
        ("quota Running On-Demand Inf instances", "warn"),
        ("kubernetes version 1.35", "warn"),
        ("model mistral revision", "pass"),
    ]
    checks = by_name(result)
    # Every client went to AWS_ENDPOINT_URL: moto's account, moto's answers for quotas and EKS.
    assert checks["credentials"]["detail"] == "account 123456789012 as arn:aws:sts::123456789012:user/moto"
    assert checks["cluster admins"]["detail"].startswith("clusterAdminArns is empty: you (arn:aws:sts::")
    assert checks["instance type trn1.2xlarge"]["detail"] == "offered in us-west-2b, us-west-2d, 1 Neuron device(s)"
    # Quotas that could not be checked count as enough: Trainium first, Inferentia2 behind it.
    assert checks["model mistral"]["detail"] == ("runs on Trainium: trn1.2xlarge (NodePool neuron); falls back to "
                                                 "Inferentia2: inf2.xlarge (NodePool neuron-inf2)")
    trn_quota = checks["quota Running On-Demand Trn instances"]["detail"]
    assert trn_quota.startswith("could not check (NoSuchResourceException")
    assert "--service-code ec2 --quota-code L-2C3B7624" in trn_quota
    assert "--quota-code L-1945791B" in checks["quota Running On-Demand Inf instances"]["detail"]
    assert checks["kubernetes version 1.35"]["detail"].startswith("could not check (404)")
    assert checks["model mistral revision"]["detail"] == (
        f"the first sync will pin main = {COMMIT}; to pin it now: pulumi config set --path "
        f"'trainium-vllm:vllm.models[0].revision' {COMMIT} --stack dev")


def test_human_report(capsys):
    code = preflight.main([])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Preflight for stack 'dev' in us-west-2 (trn1.2xlarge, inf2.xlarge):\n")
    assert "  PASS  instance type inf2.xlarge: offered in us-west-2a, us-west-2b, us-west-2c, us-west-2d" in out
    assert "  WARN  quota Running On-Demand Trn instances: could not check" in out
    assert f"  PASS  model mistral revision: the first sync will pin main = {COMMIT};" in out
    assert out.rstrip().endswith("OK (3 warning(s))")


# --- where the models run: Trainium first, Inferentia2 behind it -------------------------------------------


def test_trn_quota_of_0_falls_back_to_inferentia2_and_passes(capsys, canned):
    canned.quotas = {TRN_ON_DEMAND: 0.0, INF_ON_DEMAND: 8.0}

    code, result = run_json(capsys)

    assert code == 0 and result["ok"] is True
    assert result["models"]["mistral"]["placement"] == "inferentia2"
    checks = by_name(result)
    assert [n for n, _ in canned.calls] == ["GetServiceQuota", "GetServiceQuota"]
    model = checks["model mistral"]
    assert model["status"] == "warn"
    assert model["detail"].startswith(
        "will run on Inferentia2 (inf2.xlarge) from the fallback NodePool neuron-inf2, not on Trainium: the Running "
        "On-Demand Trn instances quota is 0 vCPUs (trn1.2xlarge needs 8). Karpenter takes a quota error "
        "(VcpuLimitExceeded, MaxSpotInstanceCountExceeded) like missing capacity and moves on to the next NodePool")
    assert model["detail"].endswith(
        "To run it on Trainium: request 16: aws service-quotas request-service-quota-increase --region us-west-2 "
        "--service-code ec2 --quota-code L-2C3B7624 --desired-value 16 (or the console: "
        "https://us-west-2.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-2C3B7624)")
    trn = checks["quota Running On-Demand Trn instances"]
    assert trn["status"] == "warn"
    assert trn["detail"].startswith("0 vCPUs: not enough for a single instance (8 vCPUs), but every model can still "
                                    "run (mistral runs on Inferentia2 (inf2.xlarge); Karpenter takes a quota error")
    assert "--desired-value 16" in trn["detail"]
    assert checks["quota Running On-Demand Inf instances"] == {
        "name": "quota Running On-Demand Inf instances", "status": "pass",
        "detail": "8 vCPUs, at least the 8 that neuron.maxNeuronDevices may launch"}


def test_only_trainium_configured_with_a_trn_quota_of_0_fails(capsys, canned, tmp_path, monkeypatch):
    write_stack(tmp_path, monkeypatch, "trn", neuron=neuron_settings(instanceTypes=["trn1.2xlarge"]))
    canned.quotas = {TRN_ON_DEMAND: 0.0}

    code, result = run_json(capsys, "--stack", "trn")

    assert code == 1 and result["ok"] is False
    assert result["models"]["mistral"]["placement"] == "none"
    checks = by_name(result)
    assert checks["model mistral"]["status"] == "fail"
    assert checks["model mistral"]["detail"].startswith(
        "no instance type can run it in us-west-2 (the Running On-Demand Trn instances quota is 0 vCPUs "
        "(trn1.2xlarge needs 8)); request 16: aws service-quotas request-service-quota-increase")
    trn = checks["quota Running On-Demand Trn instances"]
    assert trn["status"] == "fail"
    assert trn["detail"].startswith("0 vCPUs: not enough for a single instance (8 vCPUs), and mistral can run "
                                    "nowhere else; request 16: ")
    assert "quota Running On-Demand Inf instances" not in checks


def test_region_without_trainium_fails(capsys):
    code, result = run_json(capsys, "--region", "eu-west-1", "--instance-types", "trn1.2xlarge")

    assert code == 1
    assert (result["ok"], result["region"], result["offerings"]) == (False, "eu-west-1", {"trn1.2xlarge": []})
    assert result["models"] == {"mistral": {"placement": "none", "revision": COMMIT}}
    checks = by_name(result)
    assert checks["instance type trn1.2xlarge"]["status"] == "warn"
    assert checks["offerings"]["status"] == "fail"
    assert checks["offerings"]["detail"].startswith("none of trn1.2xlarge is offered in any zone of eu-west-1")
    assert "--region us-west-2" in checks["offerings"]["detail"]
    assert checks["model mistral"] == {
        "name": "model mistral", "status": "fail",
        "detail": "no instance type can run it in eu-west-1 (trn1.2xlarge is not offered in eu-west-1); use a region "
                  "that offers trn1.2xlarge (`python -m tools.preflight --region <region>` shows where each type is "
                  "offered)"}
    # Only Trn types were asked for, so only the Trn quota applies.
    assert [n for n in checks if n.startswith("quota")] == ["quota Running On-Demand Trn instances"]


@pytest.mark.parametrize(("region", "types", "missing", "offered"), [
    ("eu-west-1", "trn1.2xlarge,inf2.xlarge", "trn1.2xlarge",
     {"inf2.xlarge": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]}),
    ("us-west-2", "trn2.48xlarge,inf2.xlarge", "trn2.48xlarge", {"inf2.xlarge": US_WEST_2_INF2}),
])
def test_partly_offered_types_warn_but_pass(capsys, region, types, missing, offered):
    code, result = run_json(capsys, "--region", region, "--instance-types", types)

    assert code == 0 and result["ok"] is True
    assert result["offerings"] == {missing: [], **offered}
    assert result["models"]["mistral"]["placement"] == "inferentia2"
    checks = by_name(result)
    assert checks[f"instance type {missing}"] == {
        "name": f"instance type {missing}", "status": "warn",
        "detail": f"not offered in any zone of {region}; Karpenter can only use the other types"}
    assert checks["offerings"] == {"name": "offerings", "status": "pass",
                                   "detail": f"1 of 2 instance types offered in {region}"}
    assert not [c for c in result["checks"] if c["status"] == "fail"]
    model = checks["model mistral"]
    if missing == "trn1.2xlarge":
        # Trainium is configured for the model but not offered here: the fallback pool serves it.
        assert model["status"] == "warn"
        assert model["detail"].startswith(
            "will run on Inferentia2 (inf2.xlarge) from the fallback NodePool neuron-inf2, not on Trainium: "
            "trn1.2xlarge is not offered in eu-west-1. Karpenter launches only what is offered in the stack's zones "
            "and moves on to the next NodePool, so nothing fails")
        assert model["detail"].endswith("To run it on Trainium: use a region that offers trn1.2xlarge "
                                        "(`python -m tools.preflight --region <region>` shows where each type is "
                                        "offered)")
    else:
        # trn2 is NeuronCore-v3: never a host for the v2 model, so Inferentia2 is the plan, not a fallback.
        assert model == {"name": "model mistral", "status": "pass",
                         "detail": "runs on Inferentia2: inf2.xlarge (NodePool neuron-inf2); no configured Trainium "
                                   "type can host it: trn2.48xlarge (NeuronCore-v3, the model is compiled for v2)"}


def test_trn2_never_hosts_a_neuroncore_v2_model(capsys, tmp_path, monkeypatch):
    # sa-east-1 offers trn2.3xlarge in a, b and c, inf2.xlarge in c only (moto's offerings).
    write_stack(tmp_path, monkeypatch, "trn2", neuron=neuron_settings(instanceTypes=["trn2.3xlarge", "inf2.xlarge"]),
                vllm=vllm_settings(dev_model(), dev_model(name="big", huggingFaceRepo="acme/big-trn2",
                                                          neuronCoreVersion=3, tensorParallelSize=4)))

    code, result = run_json(capsys, "--stack", "trn2", "--region", "sa-east-1")

    assert code == 1  # only because the fake Hub has no acme/big-trn2
    assert {m: p["placement"] for m, p in result["models"].items()} == {"mistral": "inferentia2", "big": "trainium"}
    checks = by_name(result)
    assert checks["model mistral"] == {
        "name": "model mistral", "status": "pass",
        "detail": "runs on Inferentia2: inf2.xlarge (NodePool neuron-inf2); no configured Trainium type can host it: "
                  "trn2.3xlarge (NeuronCore-v3, the model is compiled for v2)"}
    assert checks["model big"] == {"name": "model big", "status": "pass",
                                   "detail": "runs on Trainium: trn2.3xlarge (NodePool neuron)"}
    assert [n for n, c in checks.items() if c["status"] == "fail"] == ["model big revision"]


def test_trn2_unusable_for_a_v3_model_fails_even_with_inferentia2(offered):
    config = stack_config.parse({
        "neuron": neuron_settings(instanceTypes=["trn2.3xlarge", "inf2.xlarge"]),
        "vllm": vllm_settings(dev_model(neuronCoreVersion=3, tensorParallelSize=4))}, stack="dev")
    types = config.neuron.instance_types

    placed, quotas, placements = preflight.capacity_checks(
        config, types, "sa-east-1", offered("sa-east-1", *types), readings(trn=0, inf=0), set())

    assert placements["mistral"] == preflight.Placement("none", (), ("trn2.3xlarge",))
    assert [(c.name, c.status) for c in placed] == [("model mistral", "fail")]
    assert placed[0].detail.startswith("no instance type can run it in sa-east-1 (the Running On-Demand Trn "
                                       "instances quota is 0 vCPUs (trn2.3xlarge needs 12)); request 24: ")
    # The Inf quota of 0 strands nothing: no model here can use Inferentia2.
    assert [(c.name, c.status) for c in quotas] == [("quota Running On-Demand Trn instances", "fail"),
                                                    ("quota Running On-Demand Inf instances", "warn")]
    assert quotas[1].detail.startswith("0 vCPUs: not enough for a single instance (4 vCPUs), but no model can run "
                                       "on inf2 anyway; request 8: ")


@pytest.mark.parametrize(("values", "where", "status"), [
    ({"trn": 8, "inf": 0}, "trainium", "pass"),          # the smallest Trainium host fits exactly
    ({"trn": 7, "inf": 4}, "inferentia2", "warn"),
    ({"trn": 7, "inf": 3}, "none", "fail"),
    ({"trn": None, "inf": 0}, "trainium", "pass"),       # could not check: counts as enough
    ({"trn": 0, "inf": None}, "inferentia2", "warn"),
])
def test_placement_follows_the_quotas(offered, values, where, status):
    config = dev_config()
    types = config.neuron.instance_types

    placed, _, placements = preflight.capacity_checks(config, types, "us-west-2", offered("us-west-2", *types),
                                                      readings(**values), set())

    assert (placements["mistral"].where, placed[0].status) == (where, status)


def test_spot_quota_serves_when_the_on_demand_one_is_0(offered):
    config = dev_config(capacity_types=("on-demand", "spot"))
    types = config.neuron.instance_types

    placed, quotas, placements = preflight.capacity_checks(
        config, types, "us-west-2", offered("us-west-2", *types), readings(trn=0, inf=0, trn_spot=16, inf_spot=0),
        set())

    assert placements["mistral"].where == "trainium"
    assert placed[0].detail == ("runs on Trainium: trn1.2xlarge (NodePool neuron)")
    assert [(c.name, c.status) for c in quotas] == [
        ("quota Running On-Demand Trn instances", "warn"), ("quota Running On-Demand Inf instances", "warn"),
        ("quota All Trn Spot Instance Requests", "pass"), ("quota All Inf Spot Instance Requests", "warn")]
    assert "every model can still run (mistral runs on Trainium (trn1.2xlarge);" in quotas[0].detail


def test_spot_capacity_checks_the_spot_quotas_too(capsys, tmp_path, monkeypatch):
    write_stack(tmp_path, monkeypatch, "spot", neuron=neuron_settings(capacityTypes=["spot", "on-demand"]))

    code, result = run_json(capsys, "--stack", "spot")

    assert code == 0
    quotas = {n: c["detail"] for n, c in by_name(result).items() if n.startswith("quota")}
    assert list(quotas) == ["quota Running On-Demand Trn instances", "quota Running On-Demand Inf instances",
                            "quota All Trn Spot Instance Requests", "quota All Inf Spot Instance Requests"]
    assert "--quota-code L-6B0D517C" in quotas["quota All Trn Spot Instance Requests"]
    assert "--quota-code L-B5D1601B" in quotas["quota All Inf Spot Instance Requests"]


@pytest.mark.parametrize(("trn_value", "status", "detail"), [
    (0.0, "warn", "0 vCPUs: not enough for a single instance (8 vCPUs), but every model can still run (mistral "
                  "runs on Inferentia2 (inf2.xlarge); Karpenter takes a quota error (VcpuLimitExceeded, "
                  "MaxSpotInstanceCountExceeded) like missing capacity and moves on to the next NodePool); request 16: "
                  "aws service-quotas request-service-quota-increase --region us-west-2 --service-code ec2 "
                  "--quota-code L-2C3B7624 --desired-value 16 (or the console: "
                  "https://us-west-2.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-2C3B7624)"),
    (8.0, "warn", "8 vCPUs, less than the 16 that neuron.maxNeuronDevices may launch; request 16: "),
    (256.0, "pass", "256 vCPUs, at least the 16 that neuron.maxNeuronDevices may launch"),
])
def test_quota_values(offered, trn_value, status, detail):
    client, stub = stubbed("service-quotas")
    # Dev stack: 2 devices -> two trn1.2xlarge (16 vCPUs) or two inf2.xlarge (8 vCPUs).
    stub.add_response("get_service_quota", quota_answer(TRN_ON_DEMAND, trn_value),
                      {"ServiceCode": "ec2", "QuotaCode": TRN_ON_DEMAND})
    stub.add_response("get_service_quota", quota_answer(INF_ON_DEMAND, 8.0),
                      {"ServiceCode": "ec2", "QuotaCode": INF_ON_DEMAND})
    config = dev_config()
    types = config.neuron.instance_types

    with stub:
        values = preflight.read_quotas(client, config, types)
    _, (trn, inf), _ = preflight.capacity_checks(config, types, "us-west-2", offered("us-west-2", *types), values,
                                                 set())

    assert (trn.name, trn.status) == ("quota Running On-Demand Trn instances", status)
    assert trn.detail.startswith(detail)
    assert (inf.status, inf.detail) == ("pass", "8 vCPUs, at least the 8 that neuron.maxNeuronDevices may launch")
    stub.assert_no_pending_responses()


# --- capacity reservations ----------------------------------------------------------------------------------


def test_capacity_reservations_against_the_stack(capsys, canned, tmp_path, monkeypatch):
    ids = [CR_ACTIVE, CR_BLOCK, CR_EXPIRED, CR_ZONE, CR_TYPE, CR_MISSING]
    write_stack(tmp_path, monkeypatch, "reserved", neuron=neuron_settings(
        capacityTypes=["reserved", "on-demand"], capacityReservationIds=ids))
    canned.quotas = {TRN_ON_DEMAND: 0.0, INF_ON_DEMAND: 8.0}
    starts = datetime.datetime(2026, 12, 3, 11, 30, tzinfo=datetime.timezone.utc)
    canned.reservations = {
        CR_ACTIVE: reservation(CR_ACTIVE, zone="us-west-2d", total=2, available=1),
        CR_BLOCK: reservation(CR_BLOCK, "scheduled", block=True, start=starts,
                              end=starts + datetime.timedelta(days=7)),
        CR_EXPIRED: reservation(CR_EXPIRED, "expired"),
        # The stack's zones in us-west-2: b and d offer both types, then a (see test_stack_zones).
        CR_ZONE: reservation(CR_ZONE, zone="us-west-2c", instance_type="inf2.xlarge"),
        CR_TYPE: reservation(CR_TYPE, instance_type="inf2.8xlarge"),
    }

    code, result = run_json(capsys, "--stack", "reserved")

    assert code == 1
    # One call with every ID; EC2 fails it for the unknown one, so once more without it.
    assert [p for n, p in canned.calls if n == "DescribeCapacityReservations"] == [
        {"CapacityReservationIds": ids}, {"CapacityReservationIds": [i for i in ids if i != CR_MISSING]}]
    checks = by_name(result)
    found = {i: checks[f"capacity reservation {i}"] for i in ids}
    assert [n for n in checks if n.startswith("capacity reservation")] == [f"capacity reservation {i}" for i in ids]
    assert found[CR_ACTIVE] == {"name": f"capacity reservation {CR_ACTIVE}", "status": "pass",
                                "detail": "active reservation for trn1.2xlarge in us-west-2d, 1 of 2 instance(s) "
                                          "available"}
    assert found[CR_BLOCK]["status"] == "warn"
    assert found[CR_BLOCK]["detail"] == (
        "scheduled Capacity Block for trn1.2xlarge in us-west-2b, 2 of 2 instance(s) available, until 2026-12-10; "
        "not active yet (starts 2026-12-03): Karpenter uses only active reservations, so until then the models run "
        "on what else the pools allow")
    assert found[CR_EXPIRED]["status"] == "fail"
    assert found[CR_EXPIRED]["detail"].endswith("it can no longer be used: remove it from "
                                                "neuron.capacityReservationIds")
    assert found[CR_ZONE]["status"] == "fail"
    assert ("us-west-2c is not one of the stack's zones (us-west-2b, us-west-2d, us-west-2a): Karpenter launches "
            "only into the stack's subnets") in found[CR_ZONE]["detail"]
    assert found[CR_TYPE]["status"] == "fail"
    assert ("inf2.8xlarge is not in neuron.instanceTypes (trn1.2xlarge, inf2.xlarge), so no NodePool allows it"
            in found[CR_TYPE]["detail"])
    assert found[CR_MISSING] == {
        "name": f"capacity reservation {CR_MISSING}", "status": "fail",
        "detail": "not found in us-west-2 (InvalidCapacityReservationId.NotFound): check "
                  "neuron.capacityReservationIds, and that the reservation is in this region and account (or shared "
                  "with it)"}
    # The Trn quota is 0, but the active reservation has a free trn1.2xlarge in the stack's zones.
    assert result["models"]["mistral"]["placement"] == "trainium"
    assert checks["model mistral"]["status"] == "pass"
    assert checks["quota Running On-Demand Trn instances"]["status"] == "warn"


def test_reservations_moto_cannot_describe_warn_and_count_as_usable(capsys, canned, tmp_path, monkeypatch):
    # moto 5.2's server has no DescribeCapacityReservations: it answers HTTP 500 with an HTML page.
    write_stack(tmp_path, monkeypatch, "reserved", neuron=neuron_settings(
        capacityTypes=["reserved"], capacityReservationIds=[CR_ACTIVE]))
    canned.quotas = {TRN_ON_DEMAND: 0.0, INF_ON_DEMAND: 0.0}

    code, result = run_json(capsys, "--stack", "reserved")

    assert code == 0
    checks = by_name(result)
    assert checks["capacity reservations"]["status"] == "warn"
    assert checks["capacity reservations"]["detail"].startswith(
        f"could not check {CR_ACTIVE} (the endpoint's answer is not AWS's: Unable to parse response")
    assert f"--capacity-reservation-ids {CR_ACTIVE}" in checks["capacity reservations"]["detail"]
    # Like a quota that could not be read, reservations that could not be read count as usable.
    assert result["models"]["mistral"]["placement"] == "trainium"


def test_stack_zones_are_the_programs(moto_url):
    ec2 = boto3.client("ec2", region_name="us-west-2", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    offerings = {"trn1.2xlarge": ["us-west-2b", "us-west-2d"], "inf2.xlarge": US_WEST_2_INF2}

    assert preflight.stack_zones(ec2, offerings) == ["us-west-2b", "us-west-2d", "us-west-2a"]
    assert preflight.stack_zones(ec2, {"trn1.2xlarge": []}) == []


@pytest.mark.parametrize(("answer", "status", "detail"), [
    (reservation(CR_ACTIVE), "pass", "active reservation for trn1.2xlarge in us-west-2b, 2 of 2 instance(s) available"),
    (reservation(CR_ACTIVE, available=0), "warn", "active reservation for trn1.2xlarge in us-west-2b, 0 of 2 "
     "instance(s) available; no instance is free right now (in use by this stack's nodes or others)"),
    (reservation(CR_ACTIVE, "payment-pending", block=True), "warn", "payment-pending Capacity Block for "
     "trn1.2xlarge in us-west-2b, 2 of 2 instance(s) available; not active yet (starts 2026-11-01)"),
    (reservation(CR_ACTIVE, "cancelled"), "fail", "cancelled reservation for trn1.2xlarge in us-west-2b, 2 of 2 "
     "instance(s) available; it can no longer be used"),
    (reservation(CR_ACTIVE, "failed"), "fail", "failed reservation"),
    (reservation(CR_ACTIVE, zone="us-west-2c"), "fail", "active reservation for trn1.2xlarge in us-west-2c, 2 of 2 "
     "instance(s) available; us-west-2c is not one of the stack's zones (us-west-2b, us-west-2d, us-west-2a)"),
    (reservation(CR_ACTIVE, instance_type="trn1.32xlarge"), "fail", "active reservation for trn1.32xlarge in "
     "us-west-2b, 2 of 2 instance(s) available; trn1.32xlarge is not in neuron.instanceTypes"),
])
def test_reservation_states(answer, status, detail):
    config = dev_config(capacity_types=("reserved", "on-demand"), capacity_reservation_ids=(CR_ACTIVE,))
    client, stub = stubbed("ec2")
    stub.add_response("describe_capacity_reservations", {"CapacityReservations": [answer]},
                      {"CapacityReservationIds": [CR_ACTIVE]})
    stub.add_response("describe_availability_zones", {"AvailabilityZones": [
        {"ZoneName": z, "ZoneId": i, "State": "available", "OptInStatus": "opt-in-not-required"}
        for z, i in zip(US_WEST_2_INF2, ("usw2-az2", "usw2-az1", "usw2-az3", "usw2-az4"))]},
        {"Filters": [{"Name": "state", "Values": ["available"]},
                     {"Name": "opt-in-status", "Values": ["opt-in-not-required"]}]})
    offerings = {"trn1.2xlarge": ["us-west-2b", "us-west-2d"], "inf2.xlarge": US_WEST_2_INF2}

    with stub:
        (check,), usable = preflight.reservation_checks(client, config, config.neuron.instance_types, "us-west-2",
                                                        offerings)

    assert (check.name, check.status) == (f"capacity reservation {CR_ACTIVE}", status)
    assert check.detail.startswith(detail)
    assert usable == ({"trn1.2xlarge"} if status == "pass" else set())
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(("code", "detail"), [
    ("InvalidCapacityReservationId.NotFound", "not found in us-west-2 (InvalidCapacityReservationId.NotFound): "),
    ("InvalidCapacityReservationId.Malformed", "EC2 rejects the ID as malformed "
                                               "(InvalidCapacityReservationId.Malformed); fix it in "),
])
def test_unknown_reservation_ids_fail(code, detail):
    client, stub = stubbed("ec2")
    stub.add_client_error("describe_capacity_reservations", code, f"The capacity reservation ID '{CR_MISSING}' "
                          "does not exist", expected_params={"CapacityReservationIds": [CR_MISSING]})

    with stub:
        found, (check,) = preflight.describe_reservations(client, (CR_MISSING,), "us-west-2")

    assert found == {}
    assert (check.name, check.status) == (f"capacity reservation {CR_MISSING}", "fail")
    assert check.detail.startswith(detail)
    stub.assert_no_pending_responses()


def test_reservations_that_cannot_be_read_warn_and_count_as_usable():
    config = dev_config(capacity_types=("reserved",), capacity_reservation_ids=(CR_ACTIVE, CR_BLOCK))
    client, stub = stubbed("ec2")
    stub.add_client_error("describe_capacity_reservations", "UnauthorizedOperation", "You are not authorized",
                          expected_params={"CapacityReservationIds": [CR_ACTIVE, CR_BLOCK]})

    with stub:
        checks, usable = preflight.reservation_checks(client, config, config.neuron.instance_types, "us-west-2", {})

    assert usable is None
    assert [(c.name, c.status) for c in checks] == [("capacity reservations", "warn")]
    assert checks[0].detail.startswith(f"could not check {CR_ACTIVE}, {CR_BLOCK} (UnauthorizedOperation: You are "
                                       "not authorized); your credentials need ec2:DescribeCapacityReservations")


# --- the cluster's creator ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployer(moto_url) -> dict[str, str]:
    """Credentials of an assumed role with a path, from moto's STS: ARN assumed-role/deployer/<session>."""
    sts = boto3.client("sts", region_name="us-west-2", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    credentials = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/teams/ops/deployer",
                                  RoleSessionName="alice@example.com")["Credentials"]
    return {"AWS_ACCESS_KEY_ID": credentials["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
            "AWS_SESSION_TOKEN": credentials["SessionToken"]}


@pytest.mark.parametrize(("admins", "status"), [
    ([f"arn:aws:iam::{ACCOUNT}:role/teams/ops/deployer"], "fail"),  # the role, path and all
    ([f"arn:aws:iam::{ACCOUNT}:role/deployer"], "fail"),            # the role, path left out
    ([f"arn:aws:iam::{ACCOUNT}:role/teams/ops/ci-deployer", "arn:aws:iam::210987654321:role/deployer"], "pass"),
])
def test_creator_in_cluster_admins_as_an_assumed_role(capsys, tmp_path, monkeypatch, deployer, admins, status):
    for name, value in deployer.items():
        monkeypatch.setenv(name, value)
    write_stack(tmp_path, monkeypatch, "admins", clusterAdminArns=admins)

    code, result = run_json(capsys, "--stack", "admins")

    check = by_name(result)["cluster admins"]
    assert check["status"] == status
    assert code == (1 if status == "fail" else 0)
    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/alice@example.com"
    if status == "fail":
        assert check["detail"] == (
            f"clusterAdminArns lists {admins[0]}, which is you ({caller}): whoever runs `pulumi up` creates the "
            "cluster, and EKS already gives the creator admin through its own access entry, so a second entry for "
            "it makes EKS answer 409 (ResourceInUseException). Remove it from clusterAdminArns; README, \"Who "
            "creates the cluster\", explains why")
    else:
        assert check["detail"] == (f"clusterAdminArns (2) does not list you ({caller}), who create the cluster and "
                                   "get admin from EKS")


def test_listing_yourself_is_fine_once_someone_created_the_cluster(capsys, tmp_path, monkeypatch, deployer,
                                                                   moto_url):
    eks = boto3.client("eks", region_name="us-west-2", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    eks.create_cluster(name="made-by-someone", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks",
                       resourcesVpcConfig={"subnetIds": []})
    for name, value in deployer.items():
        monkeypatch.setenv(name, value)
    write_stack(tmp_path, monkeypatch, "admins", clusterName="made-by-someone",
                clusterAdminArns=[f"arn:aws:iam::{ACCOUNT}:role/teams/ops/deployer"])

    code, result = run_json(capsys, "--stack", "admins")

    assert code == 0
    check = by_name(result)["cluster admins"]
    assert check["status"] == "warn"
    assert "and cluster made-by-someone exists already: fine if someone else created it; if you did" in check["detail"]


def test_creator_in_cluster_admins_as_an_iam_user(capsys, tmp_path, monkeypatch, moto_url):
    iam = boto3.client("iam", region_name="us-west-2", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName="bob", Path="/people/")
    key = iam.create_access_key(UserName="bob")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    bob = f"arn:aws:iam::{ACCOUNT}:user/people/bob"
    write_stack(tmp_path, monkeypatch, "admins", clusterAdminArns=[f"arn:aws:iam::{ACCOUNT}:role/bob", bob])

    code, result = run_json(capsys, "--stack", "admins")

    assert code == 1
    check = by_name(result)["cluster admins"]
    assert check["status"] == "fail"
    # Users are compared by ARN: the role named bob is someone else.
    assert check["detail"].startswith(f"clusterAdminArns lists {bob}, which is you ({bob}): ")


@pytest.mark.parametrize(("caller", "listed", "same"), [
    ("arn:aws:sts::111111111111:assumed-role/Admin/s", "arn:aws:iam::111111111111:role/Admin", True),
    ("arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Admin_0123/alice",
     "arn:aws:iam::111111111111:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Admin_0123", True),
    ("arn:aws:sts::111111111111:assumed-role/Admin/s", "arn:aws:iam::111111111111:role/Admin2", False),
    ("arn:aws:sts::111111111111:assumed-role/Admin/s", "arn:aws:iam::222222222222:role/Admin", False),
    ("arn:aws:sts::111111111111:assumed-role/Admin/s", "arn:aws-cn:iam::111111111111:role/Admin", False),
    ("arn:aws:sts::111111111111:assumed-role/Admin/s", "arn:aws:iam::111111111111:user/Admin", False),
    ("arn:aws:iam::111111111111:user/ops/carol", "arn:aws:iam::111111111111:user/ops/carol", True),
    ("arn:aws:iam::111111111111:user/ops/carol", "arn:aws:iam::111111111111:user/carol", False),
    ("arn:aws:iam::111111111111:root", "arn:aws:iam::111111111111:user/root", False),
])
def test_principal_comparison(caller, listed, same):
    assert preflight.is_same_principal(preflight.parse_principal(caller), preflight.parse_principal(listed)) is same


# --- the revision each model serves (fake Hub) -----------------------------------------------------------------


def with_models(config: stack_config.StackConfig, *models: stack_config.ModelConfig) -> stack_config.StackConfig:
    return dataclasses.replace(config, vllm=dataclasses.replace(config.vllm, models=models))


def test_revision_of_main_is_printed_with_the_command_to_pin_it(hub):
    config = dev_config()
    (first,) = config.vllm.models
    config = with_models(config, first, dataclasses.replace(first, name="second"))
    before = len(hub.info_requests)

    checks, revisions = preflight.revision_checks(config)

    assert revisions == {"mistral": COMMIT, "second": COMMIT}
    assert [(c.name, c.status) for c in checks] == [("model mistral revision", "pass"),
                                                    ("model second revision", "pass")]
    assert checks[1].detail == (f"the first sync will pin main = {COMMIT}; to pin it now: pulumi config set --path "
                                f"'trainium-vllm:vllm.models[1].revision' {COMMIT} --stack dev")
    assert hub.info_requests[before:] == ["main", "main"]


def test_a_set_revision_must_be_a_commit_of_the_repository():
    (model,) = dev_config().vllm.models
    old = "0" * 40
    with FakeHub(REPO, {"config.json": b"{}"}) as moved:
        newer = moved.move_main({"config.json": b'{"v": 2}'})
        assert newer != COMMIT
        config = with_models(dev_config(), dataclasses.replace(model, revision=COMMIT),
                             dataclasses.replace(model, name="other", revision=old))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HF_ENDPOINT", moved.url + "/")
            (kept, missing), revisions = preflight.revision_checks(config)

    # The pinned commit still exists after main moved on; a commit the repository never had does not.
    assert (kept.status, kept.detail) == ("pass", f"{COMMIT} is a commit of {REPO}")
    assert missing.status == "fail"
    assert missing.detail.startswith(f"{old} is not a commit of {REPO} (HTTP 404); set the model's revision to a "
                                     "40-hex commit of it")
    assert revisions == {"mistral": COMMIT, "other": old}


@pytest.mark.parametrize(("hub_options", "status", "detail"), [
    ({"token": "hf_secret"}, "fail", f"the Hub refuses {REPO} without a token (HTTP 401, RepoNotFound): it does not "
                                     "exist, or it is private or gated; check huggingFaceRepo"),
    ({"gated": True}, "warn", f"the first sync will pin main = {COMMIT}; to pin it now: "),
])
def test_private_and_gated_repositories(monkeypatch, hub_options, status, detail):
    with FakeHub(REPO, {"config.json": b"{}"}, **hub_options) as other:
        monkeypatch.setenv("HF_ENDPOINT", other.url)
        (check,), _ = preflight.revision_checks(dev_config())

    assert (check.status, check.detail[:len(detail)]) == (status, detail)
    if hub_options.get("gated"):
        assert check.detail.endswith(f"{REPO} is gated: the sync Job needs a token (HF_TOKEN) of an account that "
                                     "accepted its terms")


def test_a_repository_the_hub_does_not_have_fails():
    (model,) = dev_config().vllm.models
    config = with_models(dev_config(), dataclasses.replace(model, hugging_face_repo="acme/nothing-here"))

    (check,), revisions = preflight.revision_checks(config)

    assert (check.status, check.detail) == ("fail", "no repository acme/nothing-here on the Hub (HTTP 404, "
                                                    "RepoNotFound); check huggingFaceRepo")
    assert revisions == {"mistral": None}


def test_unreachable_hub_warns_and_preflight_still_passes(capsys, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")

    started = time.monotonic()
    code, result = run_json(capsys)

    assert time.monotonic() - started < 10
    assert code == 0
    assert result["models"] == {"mistral": {"placement": "trainium", "revision": None}}
    check = by_name(result)["model mistral revision"]
    assert check["status"] == "warn"
    assert check["detail"].startswith(f"could not reach the Hub from here (http://127.0.0.1:{port}: ")
    assert check["detail"].endswith("; the sync Job will pin what main points to when it runs")
    (model,) = dev_config().vllm.models
    (pinned,), _ = preflight.revision_checks(with_models(dev_config(), dataclasses.replace(model, revision=COMMIT)))
    assert pinned.status == "warn" and pinned.detail.endswith("the sync Job will check the commit when it runs")


# --- failures before anything else --------------------------------------------------------------------------


def test_unreachable_endpoint_fails_fast(capsys, monkeypatch):
    closed = closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")

    started = time.monotonic()
    code, result = run_json(capsys)

    assert time.monotonic() - started < 5
    assert code == 1
    assert (result["ok"], result["offerings"]) == (False, {})
    assert result["models"] == {"mistral": {"placement": None, "revision": None}}
    (check,) = result["checks"]
    assert (check["name"], check["status"]) == ("credentials", "fail")
    assert f'Could not connect to the endpoint URL: "http://127.0.0.1:{closed}/"' in check["detail"]
    assert "check your AWS credentials and endpoint: aws sts get-caller-identity" in check["detail"]


def test_missing_credentials_fail_with_next_step(capsys, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    code = preflight.main([])

    out = capsys.readouterr().out
    assert code == 1
    assert "  FAIL  credentials: STS GetCallerIdentity failed (Unable to locate credentials)" in out
    assert "aws sts get-caller-identity" in out


# --- usage errors ----------------------------------------------------------------------------------


def test_unknown_instance_type_flag_is_a_usage_error(capsys):
    assert preflight.main(["--instance-types", "trn1.2xlarge,p5.48xlarge"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: --instance-types: p5.48xlarge is not a Neuron instance type; allowed: ")
    assert "trn1.2xlarge" in captured.err


def test_bad_stack_setting_is_a_usage_error(capsys, tmp_path, monkeypatch):
    write_stack(tmp_path, monkeypatch, "bad", neuron={"instanceTypes": ["p5.48xlarge"]})

    assert preflight.main(["--stack", "bad"]) == 2
    err = capsys.readouterr().err
    assert "stack 'bad': invalid stack configuration:" in err
    assert "neuron.instanceTypes[0]: 'p5.48xlarge' is not a Neuron instance type" in err
    assert "Traceback" not in err


def test_missing_stack_file_is_a_usage_error(capsys):
    assert preflight.main(["--stack", "nope"]) == 2
    assert "stack file Pulumi.nope.yaml not found" in capsys.readouterr().err


def test_no_region_anywhere_is_a_usage_error(capsys, tmp_path, monkeypatch):
    write_stack(tmp_path, monkeypatch, "noregion", **{"aws:region": None})

    assert preflight.main(["--stack", "noregion"]) == 2
    err = capsys.readouterr().err
    assert "no AWS region: pass --region, set aws:region in Pulumi.noregion.yaml, or set AWS_REGION" in err


def test_the_stacks_aws_profile_is_used(capsys, tmp_path, monkeypatch):
    # `pulumi up` uses aws:profile: so does preflight, even with AWS_PROFILE set to another one.
    monkeypatch.setenv("AWS_PROFILE", "someone-else")
    write_stack(tmp_path, monkeypatch, "profiled", **{"aws:profile": "deploy"})

    assert preflight.main(["--stack", "profiled"]) == 2
    assert "error: AWS configuration: The config profile (deploy) could not be found" in capsys.readouterr().err


def test_malformed_region_is_a_usage_error(capsys):
    assert preflight.main(["--region", "us west 2"]) == 2
    assert "error: AWS configuration: Provided region_name 'us west 2' doesn't match" in capsys.readouterr().err


def test_bad_flag_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        preflight.main(["--regoin", "us-west-2"])
    assert exit_info.value.code == 2


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "tools.preflight", "--help"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=30)

    assert result.returncode == 0
    assert "usage: python -m tools.preflight" in result.stdout
    assert "--instance-types A,B" in result.stdout and "--json" in result.stdout


# --- answers moto does not give, from botocore's stubber ------------------------------------------------


@pytest.mark.parametrize(("answer", "status", "detail"), [
    ({"versionStatus": "STANDARD_SUPPORT", "endOfStandardSupportDate": datetime.datetime(2027, 3, 27)},
     "pass", "in standard support until 2027-03-27"),
    ({"versionStatus": "EXTENDED_SUPPORT", "endOfExtendedSupportDate": datetime.datetime(2028, 3, 27)},
     "warn", "in extended support (extra cost) until 2028-03-27; raise kubernetesVersion"),
    ({"versionStatus": "UNSUPPORTED"}, "fail", "no longer supported by EKS (UNSUPPORTED); raise kubernetesVersion"),
    (None, "fail", "EKS does not offer Kubernetes 1.35 in us-west-2; set kubernetesVersion to one it lists: "
                   "aws eks describe-cluster-versions"),
])
def test_eks_version_support(answer, status, detail):
    client, stub = stubbed("eks")
    versions = [{"clusterVersion": "1.35", **answer}] if answer else []
    stub.add_response("describe_cluster_versions", {"clusterVersions": versions},
                      {"clusterVersions": ["1.35"], "includeAll": True})

    with stub:
        check = preflight.eks_version_check(client, "1.35", "us-west-2")

    assert (check.name, check.status, check.detail) == ("kubernetes version 1.35", status, detail)


def test_type_missing_in_region_and_catalog_mismatch_warn():
    client, stub = stubbed("ec2")
    stub.add_response("describe_instance_type_offerings", {"InstanceTypeOfferings": [
        {"InstanceType": "trn1.2xlarge", "LocationType": "availability-zone", "Location": "us-west-2d"}]})
    # Real EC2 rejects a type the region does not have; here EC2 also counts devices unlike the catalog.
    stub.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "trn1.2xlarge", "NeuronInfo": {
        "NeuronDevices": [{"Count": 2, "Name": "Trainium"}]}}]}, {"InstanceTypes": ["trn1.2xlarge"]})
    stub.add_client_error("describe_instance_types", "InvalidInstanceType", "The following supplied instance types "
                          "do not exist: [trn2.3xlarge]", expected_params={"InstanceTypes": ["trn2.3xlarge"]})

    with stub:
        infos = preflight.lookup_types(client, ("trn1.2xlarge", "trn2.3xlarge"))
    checks = preflight.offering_checks(infos, "us-west-2", max_devices=2) + [preflight.catalog_check(infos)]

    assert [(c.name, c.status) for c in checks] == [("instance type trn1.2xlarge", "pass"),
                                                    ("instance type trn2.3xlarge", "warn"),
                                                    ("offerings", "pass"), ("neuron catalog", "warn")]
    assert checks[0].detail == "offered in us-west-2d, 2 Neuron device(s)"
    assert checks[1].detail == "does not exist in us-west-2; Karpenter can only use the other types"
    assert checks[3].detail == ("Neuron device counts differ (trn1.2xlarge: EC2 2, catalog 1); "
                                "update components/neuron.py")
