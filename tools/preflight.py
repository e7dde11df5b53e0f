"""Preflight: can this AWS account and region run the stack's Neuron capacity? Run before `pulumi up`.

    python -m tools.preflight [--stack dev] [--region R] [--instance-types a,b] [--json]

Reads `Pulumi.<stack>.yaml` (the settings `pulumi up` uses) and asks AWS, with your usual credentials
(AWS_PROFILE, AWS_ENDPOINT_URL and the rest are honoured):
  - credentials: who you are (STS GetCallerIdentity);
  - offerings: which availability zones offer each instance type (a warning per type that is not
    offered, a failure when none is), and their Neuron devices versus what the models request;
  - quotas: the on-demand (and, with spot capacity, spot) vCPU quotas of the Trn and Inf families
    versus what neuron.maxNeuronDevices lets Karpenter launch;
  - the stack's Kubernetes version is still supported by EKS.

Exit status: 0 ready (warnings allowed), 1 a check failed, 2 bad flags or stack settings.
--json prints {"ok", "region", "offerings": {type: [zones]}, "checks": [{"name", "status", "detail"}]}.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from components import neuron
from components.config import StackConfig
from tools import cli
from tools.cli import Check

# Fail in seconds when the endpoint is unreachable, instead of botocore's 60 s timeouts and 5 attempts.
BOTO_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})

AwsError = (BotoCoreError, ClientError)
SERVICES = ("sts", "ec2", "service-quotas", "eks")


@dataclass(frozen=True)
class Quota:
    """A Service Quotas vCPU quota of the "ec2" service covering some Neuron families."""

    code: str
    name: str
    families: tuple[str, ...]


# Codes as ListServiceQuotas reports them for service code "ec2" (the names are AWS's own).
ON_DEMAND_QUOTAS = (
    Quota("L-2C3B7624", "Running On-Demand Trn instances", ("trn1", "trn1n", "trn2")),
    Quota("L-1945791B", "Running On-Demand Inf instances", ("inf2",)),
)
SPOT_QUOTAS = (
    Quota("L-6B0D517C", "All Trn Spot Instance Requests", ("trn1", "trn1n", "trn2")),
    Quota("L-B5D1601B", "All Inf Spot Instance Requests", ("inf2",)),
)


@dataclass(frozen=True)
class TypeInfo:
    """What EC2 says about one instance type in the region."""

    name: str
    exists: bool
    zones: tuple[str, ...]
    neuron_devices: int | None

    @property
    def catalog_devices(self) -> int:
        return neuron.NEURON_INSTANCE_TYPES[self.name].neuron_devices

    @property
    def devices(self) -> int:
        # EC2's count when it gave one, else the catalog's.
        return self.neuron_devices if self.neuron_devices is not None else self.catalog_devices


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("preflight", "Check that an AWS account and region can run the stack's Neuron instances.",
                        "0 ready, 1 a check failed, 2 usage error")
    parser.add_argument("--region", help="AWS region (default: the stack's aws:region, else your AWS default)")
    parser.add_argument("--instance-types", metavar="A,B",
                        help="comma-separated Neuron instance types instead of the stack's neuron.instanceTypes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a report")
    return parser.parse_args(argv)


def instance_types(option: str | None, config: StackConfig) -> tuple[str, ...]:
    if option is None:
        return config.neuron.instance_types
    types = tuple(t.strip() for t in option.split(",") if t.strip())
    unknown = [t for t in types if t not in neuron.NEURON_INSTANCE_TYPES]
    if not types or unknown:
        raise cli.UsageError(f"--instance-types: {', '.join(unknown) or 'no type given'} is not a Neuron instance "
                             f"type; allowed: {', '.join(neuron.NEURON_INSTANCE_TYPES)}")
    return tuple(dict.fromkeys(types))


def resolve_region(option: str | None, config: StackConfig, session: boto3.Session) -> str:
    region = option or config.region or session.region_name
    if not region:
        raise cli.UsageError(f"no AWS region: pass --region, set aws:region in Pulumi.{config.stack}.yaml, "
                             "or set AWS_REGION")
    return region


def describe(error: Exception) -> str:
    if isinstance(error, ClientError):
        err = error.response.get("Error", {})
        message = " ".join(str(err.get("Message", "")).split())
        # An endpoint without the API (an emulator, a proxy) answers with an HTML page: its code says enough.
        return f"{err.get('Code', 'error')}" + (f": {message}" if message and not message.startswith("<") else "")
    return str(error)


# --- checks ----------------------------------------------------------------------------------------


def check_credentials(sts: Any) -> Check:
    try:
        identity = sts.get_caller_identity()
    except AwsError as error:
        return Check("credentials", "fail", f"STS GetCallerIdentity failed ({describe(error)}); check your AWS "
                     "credentials and endpoint: aws sts get-caller-identity (AWS_PROFILE, AWS_ENDPOINT_URL, "
                     "`aws sso login`)")
    return Check("credentials", "pass", f"account {identity['Account']} as {identity['Arn']}")


def lookup_types(ec2: Any, types: tuple[str, ...]) -> dict[str, TypeInfo]:
    """Zones and Neuron devices of each type. Raises botocore errors other than 'no such type here'."""
    zones: dict[str, list[str]] = {t: [] for t in types}
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": list(types)}])
    for page in pages:
        for offering in page["InstanceTypeOfferings"]:
            zones[offering["InstanceType"]].append(offering["Location"])
    return {t: _describe_type(ec2, t, tuple(sorted(zones[t]))) for t in types}


def _describe_type(ec2: Any, name: str, zones: tuple[str, ...]) -> TypeInfo:
    # One call per type: a single unknown type fails a batched call as a whole.
    try:
        (found,) = ec2.describe_instance_types(InstanceTypes=[name])["InstanceTypes"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "InvalidInstanceType":
            return TypeInfo(name, exists=False, zones=zones, neuron_devices=None)
        raise
    devices = found.get("NeuronInfo", {}).get("NeuronDevices")
    count = sum(d.get("Count", 0) for d in devices) if devices else None
    return TypeInfo(name, exists=True, zones=zones, neuron_devices=count)


def offering_checks(infos: dict[str, TypeInfo], region: str, max_devices: int) -> list[Check]:
    checks = [_type_check(info, region, max_devices) for info in infos.values()]
    offered = [i.name for i in infos.values() if i.zones]
    if offered:
        checks.append(Check("offerings", "pass", f"{len(offered)} of {len(infos)} instance types offered in {region}"))
    else:
        checks.append(Check("offerings", "fail", f"none of {', '.join(infos)} is offered in any zone of {region}; "
                            "use a region that offers them (trn1.2xlarge: us-east-1, us-east-2, us-west-2, ...; "
                            "try `python -m tools.preflight --region us-west-2`) or add types offered here "
                            "(--instance-types, neuron.instanceTypes)"))
    return checks


def _type_check(info: TypeInfo, region: str, max_devices: int) -> Check:
    name = f"instance type {info.name}"
    if not info.exists:
        return Check(name, "warn", f"does not exist in {region}; Karpenter can only use the other types")
    if not info.zones:
        return Check(name, "warn", f"not offered in any zone of {region}; Karpenter can only use the other types")
    where = f"offered in {', '.join(info.zones)}, {info.devices} Neuron device(s)"
    if info.devices > max_devices:
        return Check(name, "warn", f"{where}, more than neuron.maxNeuronDevices ({max_devices}): "
                     "Karpenter will never launch it")
    return Check(name, "pass", where)


def catalog_check(infos: dict[str, TypeInfo]) -> Check:
    """components.neuron sizes pods and pool limits; warn when EC2 counts devices differently."""
    differ = [f"{i.name}: EC2 {i.neuron_devices}, catalog {i.catalog_devices}" for i in infos.values()
              if i.neuron_devices is not None and i.neuron_devices != i.catalog_devices]
    if differ:
        return Check("neuron catalog", "warn", f"Neuron device counts differ ({'; '.join(differ)}); "
                     "update components/neuron.py")
    return Check("neuron catalog", "pass", "EC2's Neuron device counts match components/neuron.py")


def model_checks(config: StackConfig, infos: dict[str, TypeInfo], region: str) -> list[Check]:
    offered = [i for i in infos.values() if i.zones]
    checks = []
    for model in config.vllm.models:
        name = f"model {model.name}"
        hosts = [i.name for i in offered if i.devices >= model.neuron_devices]
        if hosts:
            checks.append(Check(name, "pass",
                                f"{model.neuron_devices} Neuron device(s) per pod fit {', '.join(hosts)}"))
        elif not offered:
            checks.append(Check(name, "fail", f"no configured instance type is offered in {region} (see offerings)"))
        else:
            have = ", ".join(f"{i.name} ({i.devices})" for i in offered)
            checks.append(Check(name, "fail", f"needs {model.neuron_devices} Neuron device(s) per pod, but no instance "
                                f"type offered in {region} has that many (offered: {have}); add a larger type to "
                                "neuron.instanceTypes or lower neuronDevices"))
    return checks


def needed_vcpus(quota: Quota, types: tuple[str, ...], max_devices: int) -> tuple[int, int] | None:
    """(vCPUs Karpenter may launch, vCPUs of the smallest type) in the quota's families; None if none."""
    catalog = [neuron.NEURON_INSTANCE_TYPES[t] for t in types]
    family = [t for t in catalog if t.family in quota.families]
    # The NodePool's CPU limit for these types is exactly what Karpenter may launch of them.
    most = int(neuron.pool_limits(max_devices, [t.name for t in family])["cpu"]) if family else 0
    return (most, min(t.vcpus for t in family)) if most else None


def quota_checks(quotas_client: Any, config: StackConfig, types: tuple[str, ...], region: str) -> list[Check]:
    quotas = ON_DEMAND_QUOTAS + (SPOT_QUOTAS if "spot" in config.neuron.capacity_types else ())
    checks = []
    for quota in quotas:
        need = needed_vcpus(quota, types, config.neuron.max_neuron_devices)
        if need:
            checks.append(_quota_check(quotas_client, quota, need[0], need[1], region))
    return checks


def _quota_check(client: Any, quota: Quota, needed: int, smallest: int, region: str) -> Check:
    name = f"quota {quota.name}"
    try:
        value = client.get_service_quota(ServiceCode="ec2", QuotaCode=quota.code)["Quota"]["Value"]
    except AwsError as error:
        return Check(name, "warn", f"could not check ({describe(error)}); look it up with: aws service-quotas "
                     f"get-service-quota --region {region} --service-code ec2 --quota-code {quota.code}")
    vcpus = int(value)
    request = (f"request {needed}: aws service-quotas request-service-quota-increase --region {region} "
               f"--service-code ec2 --quota-code {quota.code} --desired-value {needed} (or the console: "
               f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{quota.code})")
    if vcpus < smallest:
        return Check(name, "fail", f"{vcpus} vCPUs: not enough for a single instance ({smallest} vCPUs); {request}")
    if vcpus < needed:
        return Check(name, "warn", f"{vcpus} vCPUs, less than the {needed} that neuron.maxNeuronDevices may "
                     f"launch; {request}")
    return Check(name, "pass", f"{vcpus} vCPUs, at least the {needed} that neuron.maxNeuronDevices may launch")


def eks_version_check(eks: Any, version: str, region: str) -> Check:
    name = f"kubernetes version {version}"
    try:
        found = eks.describe_cluster_versions(clusterVersions=[version], includeAll=True)["clusterVersions"]
    except AwsError as error:
        return Check(name, "warn", f"could not check ({describe(error)}); see "
                     "https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html")
    if not found:
        return Check(name, "fail", f"EKS does not offer Kubernetes {version} in {region}; set kubernetesVersion "
                     "to one it lists: aws eks describe-cluster-versions")
    status = found[0].get("versionStatus") or str(found[0].get("status", "")).upper().replace("-", "_")
    if status == "STANDARD_SUPPORT":
        return Check(name, "pass", f"in standard support until {_date(found[0].get('endOfStandardSupportDate'))}")
    if status == "EXTENDED_SUPPORT":
        return Check(name, "warn", f"in extended support (extra cost) until "
                     f"{_date(found[0].get('endOfExtendedSupportDate'))}; raise kubernetesVersion")
    return Check(name, "fail", f"no longer supported by EKS ({status}); raise kubernetesVersion")


def _date(value: Any) -> str:
    return value.date().isoformat() if hasattr(value, "date") else str(value or "an unknown date")


# --- main ------------------------------------------------------------------------------------------


def aws_clients(option: str | None, config: StackConfig) -> tuple[str, dict[str, Any]]:
    """The region and a client per service. Creating them makes no call; bad AWS settings are usage errors."""
    try:
        session = boto3.Session()
        region = resolve_region(option, config, session)
        # One session and one config for all, so AWS_ENDPOINT_URL and the timeouts apply to every client.
        return region, {s: session.client(s, region_name=region, config=BOTO_CONFIG) for s in SERVICES}
    except BotoCoreError as error:
        raise cli.UsageError(f"AWS configuration: {error}") from None


def run(config: StackConfig, clients: dict[str, Any], region: str,
        types: tuple[str, ...]) -> tuple[list[Check], dict[str, list[str]]]:
    """All checks, and where each type is offered ({} when the offerings could not be read)."""
    checks = [check_credentials(clients["sts"])]
    if cli.failed(checks):
        # Every other call would fail the same way, each after its own timeout.
        return checks, {}
    try:
        infos = lookup_types(clients["ec2"], types)
    except AwsError as error:
        checks.append(Check("offerings", "fail", f"could not read instance types ({describe(error)}); your "
                            "credentials need ec2:DescribeInstanceTypes and ec2:DescribeInstanceTypeOfferings"))
        return checks, {}
    checks += offering_checks(infos, region, config.neuron.max_neuron_devices)
    checks.append(catalog_check(infos))
    checks += model_checks(config, infos, region)
    checks += quota_checks(clients["service-quotas"], config, types, region)
    checks.append(eks_version_check(clients["eks"], config.kubernetes_version, region))
    return checks, {name: list(info.zones) for name, info in infos.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = cli.load_stack(args.stack)
        types = instance_types(args.instance_types, config)
        region, clients = aws_clients(args.region, config)
    except cli.UsageError as error:
        return cli.usage_error(error)
    checks, offerings = run(config, clients, region, types)
    title = f"Preflight for stack '{args.stack}' in {region} ({', '.join(types)}):"
    return cli.report(title, checks, args.json, {"region": region, "offerings": offerings})


if __name__ == "__main__":
    sys.exit(main())
