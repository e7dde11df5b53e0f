"""tools.preflight against moto's local AWS server (real per-zone offerings), and botocore stubs for the
answers moto cannot give (Service Quotas for EC2, EKS cluster versions)."""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from components import config as stack_config
from components.config import PROJECT, PROJECT_DIR
from tools import cli, preflight

US_WEST_2_INF2 = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path, moto_url) -> None:
    """Fake credentials aimed at moto, and nothing from this machine's AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = preflight.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def by_name(result: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in result["checks"]}


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


def dev_config() -> stack_config.StackConfig:
    return stack_config.from_stack_file("dev")


# --- against moto ----------------------------------------------------------------------------------


def test_dev_stack_in_us_west_2(capsys):
    code, result = run_json(capsys)

    assert code == 0
    assert set(result) == {"ok", "region", "checks", "offerings"}
    assert (result["ok"], result["region"]) == (True, "us-west-2")
    assert result["offerings"] == {"trn1.2xlarge": ["us-west-2b", "us-west-2d"], "inf2.xlarge": US_WEST_2_INF2}
    assert all(set(c) == {"name", "status", "detail"} and c["status"] in ("pass", "warn", "fail")
               for c in result["checks"])
    assert [(c["name"], c["status"]) for c in result["checks"]] == [
        ("credentials", "pass"),
        ("instance type trn1.2xlarge", "pass"),
        ("instance type inf2.xlarge", "pass"),
        ("offerings", "pass"),
        ("neuron catalog", "pass"),
        ("model mistral", "pass"),
        ("quota Running On-Demand Trn instances", "warn"),
        ("quota Running On-Demand Inf instances", "warn"),
        ("kubernetes version 1.35", "warn"),
    ]
    checks = by_name(result)
    # Every client went to AWS_ENDPOINT_URL: moto's account, moto's answers for quotas and EKS.
    assert checks["credentials"]["detail"] == "account 123456789012 as arn:aws:sts::123456789012:user/moto"
    assert checks["instance type trn1.2xlarge"]["detail"] == "offered in us-west-2b, us-west-2d, 1 Neuron device(s)"
    assert checks["model mistral"]["detail"] == "1 Neuron device(s) per pod fit trn1.2xlarge, inf2.xlarge"
    trn_quota = checks["quota Running On-Demand Trn instances"]["detail"]
    assert trn_quota.startswith("could not check (NoSuchResourceException")
    assert "--service-code ec2 --quota-code L-2C3B7624" in trn_quota
    assert "--quota-code L-1945791B" in checks["quota Running On-Demand Inf instances"]["detail"]
    assert checks["kubernetes version 1.35"]["detail"].startswith("could not check (404)")


def test_human_report(capsys):
    code = preflight.main([])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("Preflight for stack 'dev' in us-west-2 (trn1.2xlarge, inf2.xlarge):\n")
    assert "  PASS  instance type inf2.xlarge: offered in us-west-2a, us-west-2b, us-west-2c, us-west-2d" in out
    assert "  WARN  quota Running On-Demand Trn instances: could not check" in out
    assert out.rstrip().endswith("OK (3 warning(s))")


def test_region_without_trainium_fails(capsys):
    code, result = run_json(capsys, "--region", "eu-west-1", "--instance-types", "trn1.2xlarge")

    assert code == 1
    assert (result["ok"], result["region"], result["offerings"]) == (False, "eu-west-1", {"trn1.2xlarge": []})
    checks = by_name(result)
    assert checks["instance type trn1.2xlarge"]["status"] == "warn"
    assert checks["offerings"]["status"] == "fail"
    assert checks["offerings"]["detail"].startswith("none of trn1.2xlarge is offered in any zone of eu-west-1")
    assert "--region us-west-2" in checks["offerings"]["detail"]
    assert checks["model mistral"] == {"name": "model mistral", "status": "fail",
                                       "detail": "no configured instance type is offered in eu-west-1 (see offerings)"}
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
    checks = by_name(result)
    assert checks[f"instance type {missing}"] == {
        "name": f"instance type {missing}", "status": "warn",
        "detail": f"not offered in any zone of {region}; Karpenter can only use the other types"}
    assert checks["offerings"] == {"name": "offerings", "status": "pass",
                                   "detail": f"1 of 2 instance types offered in {region}"}
    assert checks["model mistral"]["status"] == "pass"
    assert not [c for c in result["checks"] if c["status"] == "fail"]


def test_spot_capacity_checks_the_spot_quotas_too(capsys, tmp_path, monkeypatch):
    write_stack(tmp_path, monkeypatch, "spot", neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"],
                                                       "capacityTypes": ["spot", "on-demand"], "maxNeuronDevices": 2})

    code, result = run_json(capsys, "--stack", "spot")

    assert code == 0
    quotas = {n: c["detail"] for n, c in by_name(result).items() if n.startswith("quota")}
    assert list(quotas) == ["quota Running On-Demand Trn instances", "quota Running On-Demand Inf instances",
                            "quota All Trn Spot Instance Requests", "quota All Inf Spot Instance Requests"]
    assert "--quota-code L-6B0D517C" in quotas["quota All Trn Spot Instance Requests"]
    assert "--quota-code L-B5D1601B" in quotas["quota All Inf Spot Instance Requests"]


def test_unreachable_endpoint_fails_fast(capsys, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")

    started = time.monotonic()
    code, result = run_json(capsys)

    assert time.monotonic() - started < 5
    assert code == 1
    assert (result["ok"], result["offerings"]) == (False, {})
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


def stubbed(service: str) -> tuple[Any, Stubber]:
    client = boto3.client(service, region_name="us-west-2", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    return client, Stubber(client)


def quota_answer(code: str, value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "QuotaName": "n/a", "Value": value}}


@pytest.mark.parametrize(("trn_value", "status", "detail"), [
    (0.0, "fail", "0 vCPUs: not enough for a single instance (8 vCPUs); request 16: aws service-quotas "
                  "request-service-quota-increase --region us-west-2 --service-code ec2 --quota-code L-2C3B7624 "
                  "--desired-value 16 (or the console: "
                  "https://us-west-2.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-2C3B7624)"),
    (8.0, "warn", "8 vCPUs, less than the 16 that neuron.maxNeuronDevices may launch; request 16: "),
    (256.0, "pass", "256 vCPUs, at least the 16 that neuron.maxNeuronDevices may launch"),
])
def test_quota_values(trn_value, status, detail):
    client, stub = stubbed("service-quotas")
    # Dev stack: 2 devices -> two trn1.2xlarge (16 vCPUs) or two inf2.xlarge (8 vCPUs).
    stub.add_response("get_service_quota", quota_answer("L-2C3B7624", trn_value),
                      {"ServiceCode": "ec2", "QuotaCode": "L-2C3B7624"})
    stub.add_response("get_service_quota", quota_answer("L-1945791B", 8.0),
                      {"ServiceCode": "ec2", "QuotaCode": "L-1945791B"})
    config = dev_config()

    with stub:
        trn, inf = preflight.quota_checks(client, config, config.neuron.instance_types, "us-west-2")

    assert (trn.name, trn.status) == ("quota Running On-Demand Trn instances", status)
    assert trn.detail.startswith(detail)
    assert (inf.status, inf.detail) == ("pass", "8 vCPUs, at least the 8 that neuron.maxNeuronDevices may launch")
    stub.assert_no_pending_responses()


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
