"""Preflight: can this AWS account and region run the stack's Neuron capacity? Run before `pulumi up`.

    python -m tools.preflight [--stack dev] [--region R] [--instance-types a,b] [--json]

Reads `Pulumi.<stack>.yaml` (the settings `pulumi up` uses) and asks AWS, with the credentials `pulumi up` would
use (the stack's aws:profile if it sets one; AWS_PROFILE, AWS_ENDPOINT_URL and the rest are honoured):
  - credentials: who you are (STS GetCallerIdentity);
  - cluster admins: clusterAdminArns must not list you. Whoever runs `pulumi up` creates the cluster, and EKS
    already makes the creator an admin through its own access entry; a second entry for the same principal
    makes EKS answer 409. Assumed roles are compared by account and role name (STS's assumed-role ARN
    carries no path), IAM users by ARN. Once the cluster exists (EKS DescribeCluster) it is only a warning:
    a teammate listed there may run `pulumi up`;
  - offerings: which availability zones offer each instance type (a warning per type that is not offered, a
    failure when none is), and their Neuron devices versus components/neuron.py;
  - where each model runs: its hosts are the configured types of its NeuronCore generation with enough
    devices (components.neuron.hosts_for). A host is usable when it is offered here and one instance fits a
    quota of a configured capacity type (on-demand: the on-demand Trn/Inf vCPU quota, spot: the spot one,
    a quota that could not be checked counts as fitting) or, with `reserved`, an active reservation of it with
    a free instance in the stack's zones. A usable Trainium host passes; only Inferentia2 usable warns that
    the model will be served by the fallback NodePool `neuron-inf2` (Karpenter takes a quota error such as
    VcpuLimitExceeded like missing capacity and moves on to the next pool) and how to get Trainium back;
    no usable host fails;
  - quotas: the on-demand (and, with spot capacity, spot) vCPU quotas of the Trn and Inf families versus what
    neuron.maxNeuronDevices lets Karpenter launch. A quota too small for even one instance fails only when a
    model it would serve has no other usable host; otherwise it warns;
  - capacity reservations (neuron.capacityReservationIds, one EC2 DescribeCapacityReservations call): each must
    exist, be `active` (a Capacity Block not started yet warns with its start date; expired, cancelled or
    failed fails), reserve a type of neuron.instanceTypes, and sit in one of the stack's zones (computed as
    the program does: components.network.choose_availability_zones over DescribeAvailabilityZones);
  - the stack's Kubernetes version is still supported by EKS;
  - the revision each model would serve (Hugging Face Hub, HF_ENDPOINT or https://huggingface.co, no token):
    without `revision`, the commit `main` points to now, which the first sync pins, and the command to pin it
    in the stack; with `revision`, that the commit exists. A missing commit or repository, or a private or
    gated one the Hub refuses without a token (401/403), fails; a gated repository the Hub describes warns
    that the sync Job needs a token; an unreachable Hub warns.
With --instance-types, everything is checked as if neuron.instanceTypes were those types.

Exit status: 0 ready (warnings allowed), 1 a check failed, 2 bad flags or stack settings.
--json prints {"ok", "region", "offerings": {type: [zones]},
               "models": {name: {"placement": "trainium" | "inferentia2" | "none" | null, "revision": sha | null}},
               "checks": [{"name", "status", "detail"}]}.
"placement" is the family the model would run on (null: not checked, e.g. the credentials failed); "revision"
is the model's `revision` setting, else the commit `main` points to on the Hub (null: the Hub could not tell).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Iterable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from components import neuron
from components.config import ConfigError, ModelConfig, StackConfig
from tools import cli
from tools.cli import Check

# Fail in seconds when the endpoint is unreachable, instead of botocore's 60 s timeouts and 5 attempts.
BOTO_CONFIG = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
# The Hub is asked one small JSON document per model; a few seconds is plenty.
HUB_TIMEOUT_SECONDS = 5
DEFAULT_HUB = "https://huggingface.co"

# ResponseParserError: an endpoint that answered something other than AWS's XML/JSON (an emulator or a proxy
# without the API); botocore does not count it among its own errors.
AwsError = (BotoCoreError, ClientError, ResponseParserError)
SERVICES = ("sts", "ec2", "service-quotas", "eks")
COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Karpenter's launch errors that mean "no capacity here, try the next offering/NodePool" (karpenter-provider-aws
# v1.14.1 pkg/errors/errors.go, unfulfillableCapacityErrorCodes; FACTS section 4).
KARPENTER_MOVES_ON = ("Karpenter takes a quota error (VcpuLimitExceeded, MaxSpotInstanceCountExceeded) like missing "
                      "capacity and moves on to the next NodePool")


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
QUOTAS_BY_CAPACITY_TYPE = {"on-demand": ON_DEMAND_QUOTAS, "spot": SPOT_QUOTAS}


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


@dataclass(frozen=True)
class QuotaReading:
    """A quota's value in vCPUs, or None with the reason it could not be read."""

    quota: Quota
    value: int | None
    error: str | None = None


@dataclass(frozen=True)
class Shortfall:
    """Why Karpenter could not launch one instance of a type here, and what would fix it."""

    reason: str
    fix: str
    quota: bool = False  # a quota, not the offering or a reservation, is what is missing


@dataclass(frozen=True)
class Placement:
    """Where a model's pods would run: the family, its usable hosts there, and all hosts it has."""

    where: str  # "trainium", "inferentia2" or "none"
    usable: tuple[str, ...]
    hosts: tuple[str, ...]


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
    if isinstance(error, ResponseParserError):
        return f"the endpoint's answer is not AWS's: {str(error).splitlines()[0]}"
    return str(error)


def _error_code(error: Exception) -> str:
    return str(error.response.get("Error", {}).get("Code", "")) if isinstance(error, ClientError) else ""


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


# --- who you are ------------------------------------------------------------------------------------


def check_credentials(sts: Any) -> tuple[Check, str | None]:
    """The credentials check and the caller's ARN (None when STS could not be asked)."""
    try:
        identity = sts.get_caller_identity()
    except AwsError as error:
        return Check("credentials", "fail", f"STS GetCallerIdentity failed ({describe(error)}); check your AWS "
                     "credentials and endpoint: aws sts get-caller-identity (AWS_PROFILE, AWS_ENDPOINT_URL, "
                     "`aws sso login`)"), None
    return Check("credentials", "pass", f"account {identity['Account']} as {identity['Arn']}"), identity["Arn"]


@dataclass(frozen=True)
class Principal:
    """An IAM role or user as an ARN names it; `name` has no path."""

    partition: str
    account: str
    kind: str  # "role", "user" or "other" (root, federated user, ...)
    name: str
    arn: str


def parse_principal(arn: str) -> Principal | None:
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, _, account, resource = parts
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role":
        # arn:aws:sts::<account>:assumed-role/<role name>/<session>: STS leaves the role's path out
        # (hashicorp/terraform-provider-aws#19957, review of aws_iam_session_context).
        return Principal(partition, account, "role", rest.split("/", 1)[0], arn)
    if service == "iam" and kind in ("role", "user"):
        # arn:aws:iam::<account>:role/<optional/path/><name>
        return Principal(partition, account, kind, rest.rsplit("/", 1)[-1], arn)
    return Principal(partition, account, "other", resource, arn)


def is_same_principal(caller: Principal, listed: Principal) -> bool:
    """Whether an entry of clusterAdminArns names the caller: roles by account and name, users by ARN."""
    if (caller.partition, caller.account, caller.kind) != (listed.partition, listed.account, listed.kind):
        return False
    if caller.kind == "role":
        return caller.name == listed.name
    return caller.kind == "user" and caller.arn == listed.arn


def cluster_admins_check(config: StackConfig, caller_arn: str, eks: Any = None) -> Check:
    """The identity that runs `pulumi up` creates the cluster and gets admin from EKS itself (pulumi-eks sets
    bootstrapClusterCreatorAdminPermissions); an access entry for it too collides: EKS answers 409 (FACTS §6)."""
    name = "cluster admins"
    caller = parse_principal(caller_arn)
    listed = [arn for arn in config.cluster_admin_arns
              if caller and (entry := parse_principal(arn)) and is_same_principal(caller, entry)]
    if listed and eks is not None and _cluster_exists(eks, config.cluster_name):
        # Someone created it already: a teammate listed in clusterAdminArns who runs `pulumi up` now is fine.
        return Check(name, "warn", f"clusterAdminArns lists {', '.join(listed)}, which is you ({caller_arn}), and "
                     f"cluster {config.cluster_name} exists already: fine if someone else created it; if you did, "
                     "EKS gave you admin through its own creator entry and answers 409 to a second one: remove it "
                     "from clusterAdminArns (README, \"Who creates the cluster\")")
    if listed:
        return Check(name, "fail", f"clusterAdminArns lists {', '.join(listed)}, which is you ({caller_arn}): "
                     "whoever runs `pulumi up` creates the cluster, and EKS already gives the creator admin "
                     "through its own access entry, so a second entry for it makes EKS answer 409 "
                     "(ResourceInUseException). Remove it from clusterAdminArns; README, \"Who creates the "
                     "cluster\", explains why")
    if not config.cluster_admin_arns:
        return Check(name, "pass", f"clusterAdminArns is empty: you ({caller_arn}) create the cluster and EKS makes "
                     "you its admin")
    return Check(name, "pass", f"clusterAdminArns ({len(config.cluster_admin_arns)}) does not list you "
                 f"({caller_arn}), who create the cluster and get admin from EKS")


def _cluster_exists(eks: Any, cluster_name: str) -> bool:
    """Whether EKS has the stack's cluster; False too when it cannot be asked (then the creator is unknown)."""
    try:
        eks.describe_cluster(name=cluster_name)
    except AwsError:
        return False
    return True


# --- offerings --------------------------------------------------------------------------------------


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
        if _error_code(error) == "InvalidInstanceType":
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


# --- quotas -----------------------------------------------------------------------------------------


def needed_vcpus(quota: Quota, types: tuple[str, ...], max_devices: int) -> tuple[int, int] | None:
    """(vCPUs Karpenter may launch, vCPUs of the smallest type) in the quota's families; None if none."""
    catalog = [neuron.NEURON_INSTANCE_TYPES[t] for t in types]
    family = [t for t in catalog if t.family in quota.families]
    # The NodePool's CPU limit for these types is exactly what Karpenter may launch of them.
    most = int(neuron.pool_limits(max_devices, [t.name for t in family])["cpu"]) if family else 0
    return (most, min(t.vcpus for t in family)) if most else None


def read_quotas(client: Any, config: StackConfig, types: tuple[str, ...]) -> list[QuotaReading]:
    """The on-demand quotas (and the spot ones with spot capacity) of the families among `types`."""
    quotas = ON_DEMAND_QUOTAS + (SPOT_QUOTAS if "spot" in config.neuron.capacity_types else ())
    readings = []
    for quota in quotas:
        if not needed_vcpus(quota, types, config.neuron.max_neuron_devices):
            continue
        try:
            value = client.get_service_quota(ServiceCode="ec2", QuotaCode=quota.code)["Quota"]["Value"]
        except AwsError as error:
            readings.append(QuotaReading(quota, None, describe(error)))
            continue
        readings.append(QuotaReading(quota, int(value)))
    return readings


def request_command(quota: Quota, needed: int, region: str) -> str:
    return (f"request {needed}: aws service-quotas request-service-quota-increase --region {region} "
            f"--service-code ec2 --quota-code {quota.code} --desired-value {needed} (or the console: "
            f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{quota.code})")


def quota_checks(readings: list[QuotaReading], config: StackConfig, types: tuple[str, ...], region: str,
                 placements: dict[str, Placement]) -> list[Check]:
    checks = []
    for reading in readings:
        quota = reading.quota
        name = f"quota {quota.name}"
        needed, smallest = needed_vcpus(quota, types, config.neuron.max_neuron_devices) or (0, 0)
        if reading.value is None:
            checks.append(Check(name, "warn", f"could not check ({reading.error}); look it up with: aws service-quotas "
                                f"get-service-quota --region {region} --service-code ec2 --quota-code {quota.code}"))
            continue
        vcpus, request = reading.value, request_command(quota, needed, region)
        if vcpus < smallest:
            # Fatal only for a model this quota leaves with nowhere to run; otherwise another family serves.
            served = {m: p for m, p in placements.items() if _families(p.hosts) & set(quota.families)}
            stranded = [m for m, p in served.items() if p.where == "none"]
            if stranded:
                checks.append(Check(name, "fail", f"{vcpus} vCPUs: not enough for a single instance ({smallest} "
                                    f"vCPUs), and {', '.join(stranded)} can run nowhere else; {request}"))
            elif served:
                elsewhere = "; ".join(f"{m} runs on {_placement_text(p)}" for m, p in served.items())
                checks.append(Check(name, "warn", f"{vcpus} vCPUs: not enough for a single instance ({smallest} "
                                    f"vCPUs), but every model can still run ({elsewhere}; {KARPENTER_MOVES_ON}); "
                                    f"{request}"))
            else:
                checks.append(Check(name, "warn", f"{vcpus} vCPUs: not enough for a single instance ({smallest} "
                                    f"vCPUs), but no model can run on {'/'.join(quota.families)} anyway; {request}"))
        elif vcpus < needed:
            checks.append(Check(name, "warn", f"{vcpus} vCPUs, less than the {needed} that neuron.maxNeuronDevices "
                                f"may launch; {request}"))
        else:
            checks.append(Check(name, "pass", f"{vcpus} vCPUs, at least the {needed} that neuron.maxNeuronDevices "
                                "may launch"))
    return checks


def _families(types: Iterable[str]) -> set[str]:
    return {neuron.NEURON_INSTANCE_TYPES[t].family for t in types}


def _placement_text(placement: Placement) -> str:
    label = {"trainium": "Trainium", "inferentia2": "Inferentia2"}.get(placement.where, "nothing")
    return f"{label} ({', '.join(placement.usable)})" if placement.usable else label


# --- capacity reservations ----------------------------------------------------------------------------

# CapacityReservation.State (EC2 API reference). Karpenter 1.14.1 lists reservations with the filter
# state=active only (pkg/providers/capacityreservation/types.go), and EC2 refuses launches into a Capacity Block
# before its start ("Insufficient Capacity Error", EC2 user guide, Capacity Blocks with EC2 Fleet).
NOT_YET_STATES = ("scheduled", "payment-pending", "pending", "assessing", "delayed")
ENDED_STATES = ("expired", "cancelled", "cancelling", "failed", "payment-failed", "unsupported")
RESERVATION_ID_ERRORS = ("InvalidCapacityReservationId.NotFound", "InvalidCapacityReservationId.Malformed")


def stack_zones(ec2: Any, offerings: dict[str, list[str]]) -> list[str]:
    """The zones the stack's subnets go into, chosen as components.network.lookup_availability_zones does."""
    # Imported here: components.network pulls in pulumi_aws, which only this check needs.
    from components.network import choose_availability_zones

    answer = ec2.describe_availability_zones(Filters=[
        {"Name": "state", "Values": ["available"]},
        {"Name": "opt-in-status", "Values": ["opt-in-not-required"]},
    ])
    zones = {z["ZoneName"]: z["ZoneId"] for z in answer["AvailabilityZones"]}
    try:
        return choose_availability_zones(offerings, zones)
    except ConfigError:
        return []  # no zone offers any of the types: the offerings check fails already


def describe_reservations(ec2: Any, ids: tuple[str, ...], region: str) -> tuple[dict[str, dict], list[Check]]:
    """The reservations EC2 knows by ID, and a failed check per ID it does not. One call, unless an unknown or
    malformed ID fails it as a whole: then again without the IDs the error names. Raises other AWS errors."""
    found: dict[str, dict] = {}
    checks: list[Check] = []
    remaining = list(ids)
    while remaining:
        try:
            answer = ec2.describe_capacity_reservations(CapacityReservationIds=remaining)
        except ClientError as error:
            code = _error_code(error)
            if code not in RESERVATION_ID_ERRORS:
                raise
            message = str(error.response.get("Error", {}).get("Message", ""))
            named = [i for i in remaining if i in message] or remaining
            for reservation_id in named:
                checks.append(_unknown_reservation(reservation_id, code, region))
            remaining = [i for i in remaining if i not in named]
            continue
        found.update((r["CapacityReservationId"], r) for r in answer.get("CapacityReservations", []))
        checks += [_unknown_reservation(i, RESERVATION_ID_ERRORS[0], region) for i in remaining if i not in found]
        break
    return found, checks


def _unknown_reservation(reservation_id: str, code: str, region: str) -> Check:
    name = f"capacity reservation {reservation_id}"
    if code.endswith("Malformed"):
        return Check(name, "fail", f"EC2 rejects the ID as malformed ({code}); fix it in "
                     "neuron.capacityReservationIds")
    return Check(name, "fail", f"not found in {region} ({code}): check neuron.capacityReservationIds, and that the "
                 "reservation is in this region and account (or shared with it)")


def reservation_check(reservation: dict, types: tuple[str, ...], zones: list[str] | None) -> Check:
    name = f"capacity reservation {reservation['CapacityReservationId']}"
    state = reservation.get("State", "unknown")
    kind = "Capacity Block" if reservation.get("ReservationType") == "capacity-block" else "reservation"
    instance_type, zone = reservation.get("InstanceType", "?"), reservation.get("AvailabilityZone", "?")
    available, total = reservation.get("AvailableInstanceCount", 0), reservation.get("TotalInstanceCount", 0)
    summary = f"{state} {kind} for {instance_type} in {zone}, {available} of {total} instance(s) available"
    if kind == "Capacity Block" and reservation.get("EndDate"):
        summary += f", until {_when(reservation['EndDate'])}"
    problems, cautions = [], []
    if state in ENDED_STATES:
        problems.append("it can no longer be used: remove it from neuron.capacityReservationIds")
    elif state in NOT_YET_STATES:
        cautions.append(f"not active yet (starts {_when(reservation.get('StartDate'))}): Karpenter uses only "
                        "active reservations, so until then the models run on what else the pools allow")
    elif state != "active":
        cautions.append(f"state {state}: Karpenter uses only active reservations")
    if instance_type not in types:
        problems.append(f"{instance_type} is not in neuron.instanceTypes ({', '.join(types)}), so no NodePool "
                        f"allows it and Karpenter never launches into it: add {instance_type} or drop the reservation")
    if zones is None:
        cautions.append("could not tell the stack's zones (DescribeAvailabilityZones failed)")
    elif zone not in zones:
        problems.append(f"{zone} is not one of the stack's zones ({_names(zones)}): Karpenter launches only into the "
                        "stack's subnets, so it can never use it; reserve capacity in one of those zones")
    if state == "active" and not problems and not available:
        cautions.append("no instance is free right now (in use by this stack's nodes or others)")
    status = "fail" if problems else "warn" if cautions else "pass"
    return Check(name, status, "; ".join([summary, *problems, *cautions]))


def reservation_checks(ec2: Any, config: StackConfig, types: tuple[str, ...], region: str,
                       offerings: dict[str, list[str]]) -> tuple[list[Check], set[str] | None]:
    """A check per reservation, and the types with a usable reservation (None: could not check)."""
    ids = config.neuron.capacity_reservation_ids
    if not ids:
        return [], set()
    try:
        found, checks = describe_reservations(ec2, ids, region)
    except AwsError as error:
        return [Check("capacity reservations", "warn", f"could not check {', '.join(ids)} ({describe(error)}); your "
                      "credentials need ec2:DescribeCapacityReservations; look them up with: aws ec2 "
                      f"describe-capacity-reservations --region {region} --capacity-reservation-ids "
                      f"{' '.join(ids)}")], None
    try:
        zones: list[str] | None = stack_zones(ec2, offerings) if found else []
    except AwsError:
        zones = None
    for reservation_id in ids:
        if reservation_id in found:
            checks.append(reservation_check(found[reservation_id], types, zones))
    order = {f"capacity reservation {i}": n for n, i in enumerate(ids)}
    checks.sort(key=lambda c: order.get(c.name, len(order)))
    usable = {r.get("InstanceType", "") for r in found.values()
              if r.get("State") == "active" and r.get("AvailableInstanceCount", 0) > 0
              and r.get("InstanceType") in types and (zones is None or r.get("AvailabilityZone") in zones)}
    return checks, usable


# --- where each model runs ----------------------------------------------------------------------------


def shortfalls(info: TypeInfo, config: StackConfig, types: tuple[str, ...], region: str,
               readings: dict[str, QuotaReading], reserved: set[str] | None) -> list[Shortfall]:
    """Why Karpenter could not launch one instance of the type here; empty when it could."""
    if not info.exists or not info.zones:
        return [Shortfall(f"{info.name} is not offered in {region}",
                          f"use a region that offers {info.name} (`python -m tools.preflight --region <region>` "
                          "shows where each type is offered)")]
    catalog = neuron.NEURON_INSTANCE_TYPES[info.name]
    found = []
    for capacity_type in config.neuron.capacity_types:
        if capacity_type == "reserved":
            if reserved is None or info.name in reserved:
                return []
            found.append(Shortfall(f"no active capacity reservation has a free {info.name} in the stack's zones",
                                   "see the capacity reservation checks"))
            continue
        quota = next(q for q in QUOTAS_BY_CAPACITY_TYPE[capacity_type] if catalog.family in q.families)
        reading = readings.get(quota.code)
        # A quota that could not be read counts as enough; its own check warns.
        if reading is None or reading.value is None or reading.value >= catalog.vcpus:
            return []
        needed = (needed_vcpus(quota, types, config.neuron.max_neuron_devices) or (catalog.vcpus, 0))[0]
        found.append(Shortfall(f"the {quota.name} quota is {reading.value} vCPUs ({info.name} needs {catalog.vcpus})",
                               request_command(quota, needed, region), quota=True))
    return found


def placement_checks(config: StackConfig, types: tuple[str, ...], region: str,
                     short: dict[str, list[Shortfall]]) -> tuple[list[Check], dict[str, Placement]]:
    pools = {t: pool.name for pool in neuron.node_pools(types) for t in pool.instance_types}
    checks, placements = [], {}
    for model in config.vllm.models:
        check, placement = _placement(model, types, region, short, pools)
        checks.append(check)
        placements[model.name] = placement
    return checks, placements


def _placement(model: ModelConfig, types: tuple[str, ...], region: str, short: dict[str, list[Shortfall]],
               pools: dict[str, str]) -> tuple[Check, Placement]:
    name = f"model {model.name}"
    hosts = [h.name for h in neuron.hosts_for(model.neuron_devices, types, model.neuron_core_version)]
    if not hosts:
        return Check(name, "fail", f"needs {model.neuron_devices} Neuron device(s) per pod of NeuronCore-v"
                     f"{model.neuron_core_version}, but no type among {', '.join(types)} has that; add one to "
                     "neuron.instanceTypes or lower neuronDevices"), Placement("none", (), ())
    trainium = [h for h in hosts if neuron.NEURON_INSTANCE_TYPES[h].is_trainium]
    inferentia = [h for h in hosts if h not in trainium]
    usable_trn = tuple(h for h in trainium if not short[h])
    usable_inf = tuple(h for h in inferentia if not short[h])

    def on(usable: tuple[str, ...]) -> str:
        return "; ".join(f"{', '.join(t for t in usable if pools[t] == pool)} (NodePool {pool})"
                         for pool in dict.fromkeys(pools[t] for t in usable))

    if usable_trn:
        fallback = f"; falls back to Inferentia2: {on(usable_inf)}" if usable_inf else ""
        return (Check(name, "pass", f"runs on Trainium: {on(usable_trn)}{fallback}"),
                Placement("trainium", usable_trn, tuple(hosts)))
    # Why the Trainium hosts (for a fallback) or all hosts (for a failure) cannot be used.
    why = [s for h in (trainium if usable_inf else hosts) for s in short[h]]
    fixes = "; ".join(dict.fromkeys(s.fix for s in why))
    if usable_inf and not trainium:
        # By design, not for want of capacity: no configured Trainium type can take the pod at all.
        cannot = [f"{t} ({_why_not_host(t, model)})" for t in types if neuron.NEURON_INSTANCE_TYPES[t].is_trainium]
        note = f"; no configured Trainium type can host it: {', '.join(cannot)}" if cannot else ""
        return (Check(name, "pass", f"runs on Inferentia2: {on(usable_inf)}{note}"),
                Placement("inferentia2", usable_inf, tuple(hosts)))
    if usable_inf:
        reasons = "; ".join(dict.fromkeys(s.reason for s in why))
        karpenter = KARPENTER_MOVES_ON if any(s.quota for s in why) else \
            "Karpenter launches only what is offered in the stack's zones and moves on to the next NodePool"
        return (Check(name, "warn", f"will run on Inferentia2 ({', '.join(usable_inf)}) from the fallback NodePool "
                      f"{pools[usable_inf[0]]}, not on Trainium: {reasons}. {karpenter}, so nothing fails: the model "
                      f"is just served from Inferentia2. To run it on Trainium: {fixes}"),
                Placement("inferentia2", usable_inf, tuple(hosts)))
    reasons = "; ".join(dict.fromkeys(s.reason for s in why))
    return (Check(name, "fail", f"no instance type can run it in {region} ({reasons}); {fixes}"),
            Placement("none", (), tuple(hosts)))


def _why_not_host(instance_type: str, model: ModelConfig) -> str:
    catalog = neuron.NEURON_INSTANCE_TYPES[instance_type]
    if catalog.core_version != model.neuron_core_version:
        return f"NeuronCore-v{catalog.core_version}, the model is compiled for v{model.neuron_core_version}"
    return f"{catalog.neuron_devices} Neuron device(s), the model needs {model.neuron_devices}"


def capacity_checks(config: StackConfig, types: tuple[str, ...], region: str, infos: dict[str, TypeInfo],
                    readings: list[QuotaReading], reserved: set[str] | None
                    ) -> tuple[list[Check], list[Check], dict[str, Placement]]:
    """Where each model runs (a check per model) and the quota checks, whose verdict depends on it."""
    by_code = {r.quota.code: r for r in readings}
    short = {t: shortfalls(info, config, types, region, by_code, reserved) for t, info in infos.items()}
    placed, placements = placement_checks(config, types, region, short)
    return placed, quota_checks(readings, config, types, region, placements), placements


# --- EKS ----------------------------------------------------------------------------------------------


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
        return Check(name, "pass", f"in standard support until {_when(found[0].get('endOfStandardSupportDate'))}")
    if status == "EXTENDED_SUPPORT":
        return Check(name, "warn", f"in extended support (extra cost) until "
                     f"{_when(found[0].get('endOfExtendedSupportDate'))}; raise kubernetesVersion")
    return Check(name, "fail", f"no longer supported by EKS ({status}); raise kubernetesVersion")


def _when(value: Any) -> str:
    return value.date().isoformat() if hasattr(value, "date") else str(value or "an unknown date")


# --- the Hugging Face Hub -------------------------------------------------------------------------------


class HubUnreachable(Exception):
    """No answer from the Hub (network, timeout, or something that is not the Hub's JSON)."""


def hub_endpoint() -> str:
    # The variable huggingface_hub (and the sync Job) read to talk to another Hub.
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB).rstrip("/")


def hub_revision(repo: str, revision: str, timeout: float = HUB_TIMEOUT_SECONDS) -> tuple[int, dict | None, str]:
    """GET /api/models/<repo>/revision/<revision> (what huggingface_hub's model_info asks), without a token:
    the status, the JSON on 200, and the Hub's X-Error-Code header (RepoNotFound, RevisionNotFound, ...)."""
    url = f"{hub_endpoint()}/api/models/{urllib.parse.quote(repo, safe='/')}/revision/" \
          f"{urllib.parse.quote(revision, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "trainium-vllm-preflight"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers.get("X-Error-Code", "")
    except urllib.error.HTTPError as error:
        return error.code, None, error.headers.get("X-Error-Code", "")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise HubUnreachable(str(getattr(error, "reason", error))) from None


def revision_checks(config: StackConfig) -> tuple[list[Check], dict[str, str | None]]:
    checks, revisions = [], {}
    for index, model in enumerate(config.vllm.models):
        check, revision = _revision_check(config, index, model)
        checks.append(check)
        revisions[model.name] = revision
    return checks, revisions


def _revision_check(config: StackConfig, index: int, model: ModelConfig) -> tuple[Check, str | None]:
    name, repo = f"model {model.name} revision", model.hugging_face_repo
    asked = model.revision or "main"
    try:
        status, answer, error_code = hub_revision(repo, asked)
    except HubUnreachable as error:
        later = "check the commit" if model.revision else "pin what main points to"
        return Check(name, "warn", f"could not reach the Hub from here ({hub_endpoint()}: {error}); the sync Job "
                     f"will {later} when it runs"), model.revision
    sha = answer.get("sha") if isinstance(answer, dict) else None
    if status == 200 and isinstance(sha, str) and COMMIT.match(sha):
        gated = f"; {repo} is gated: the sync Job needs a token (HF_TOKEN) of an account that accepted its " \
                "terms" if answer.get("gated") else ""
        if model.revision:
            return Check(name, "warn" if gated else "pass", f"{model.revision} is a commit of {repo}{gated}"), \
                model.revision
        command = (f"pulumi config set --path '{config.project}:vllm.models[{index}].revision' {sha} "
                   f"--stack {config.stack}")
        return Check(name, "warn" if gated else "pass", f"the first sync will pin main = {sha}; to pin it now: "
                     f"{command}{gated}"), sha
    if status in (401, 403):
        # The Hub answers 401 without a token for a missing repository as for a private or gated one
        # (huggingface_hub utils/_http.py, hf_raise_for_status).
        code = f", {error_code}" if error_code else ""
        return Check(name, "fail", f"the Hub refuses {repo} without a token (HTTP {status}{code}): it does not "
                     "exist, or it is private or gated; "
                     "check huggingFaceRepo, or give the sync Job a token with access"), model.revision
    if status == 404 and error_code == "RevisionNotFound":
        return Check(name, "fail", f"{asked} is not a commit of {repo} (HTTP 404); set the model's revision to a "
                     f"40-hex commit of it ({hub_endpoint()}/{repo}/commits/main)"), model.revision
    if status == 404:
        code = f", {error_code}" if error_code else ""
        return Check(name, "fail", f"no repository {repo} on the Hub (HTTP 404{code}); check huggingFaceRepo"), \
            model.revision
    return Check(name, "warn", f"the Hub answered HTTP {status} for {repo}@{asked}; the sync Job will try again "
                 "when it runs"), model.revision


# --- main -------------------------------------------------------------------------------------------


def aws_clients(option: str | None, config: StackConfig) -> tuple[str, dict[str, Any]]:
    """The region and a client per service. Creating them makes no call; bad AWS settings are usage errors."""
    try:
        # The profile `pulumi up` uses: the stack's aws:profile wins over AWS_PROFILE for the provider too.
        session = boto3.Session(profile_name=config.aws_profile) if config.aws_profile else boto3.Session()
        region = resolve_region(option, config, session)
        # One session and one config for all, so AWS_ENDPOINT_URL and the timeouts apply to every client.
        return region, {s: session.client(s, region_name=region, config=BOTO_CONFIG) for s in SERVICES}
    except BotoCoreError as error:
        raise cli.UsageError(f"AWS configuration: {error}") from None


@dataclass
class Result:
    checks: list[Check]
    offerings: dict[str, list[str]]
    models: dict[str, dict[str, str | None]]


def run(config: StackConfig, clients: dict[str, Any], region: str, types: tuple[str, ...]) -> Result:
    """All checks, where each type is offered ({} when the offerings could not be read), and per model its
    placement and revision."""
    models: dict[str, dict[str, str | None]] = {m.name: {"placement": None, "revision": None}
                                                 for m in config.vllm.models}
    credentials, caller = check_credentials(clients["sts"])
    if caller is None:
        # Every other call would fail the same way, each after its own timeout.
        return Result([credentials], {}, models)
    checks = [credentials, cluster_admins_check(config, caller, clients["eks"])]
    offerings: dict[str, list[str]] = {}
    try:
        infos = lookup_types(clients["ec2"], types)
    except AwsError as error:
        checks.append(Check("offerings", "fail", f"could not read instance types ({describe(error)}); your "
                            "credentials need ec2:DescribeInstanceTypes and ec2:DescribeInstanceTypeOfferings"))
    else:
        offerings = {name: list(info.zones) for name, info in infos.items()}
        checks += offering_checks(infos, region, config.neuron.max_neuron_devices)
        checks.append(catalog_check(infos))
        readings = read_quotas(clients["service-quotas"], config, types)
        reserved_checks, reserved = reservation_checks(clients["ec2"], config, types, region, offerings)
        placed, quotas, placements = capacity_checks(config, types, region, infos, readings, reserved)
        checks += placed + quotas + reserved_checks
        checks.append(eks_version_check(clients["eks"], config.kubernetes_version, region))
        for model, placement in placements.items():
            models[model]["placement"] = placement.where
    revised, revisions = revision_checks(config)
    checks += revised
    for model, revision in revisions.items():
        models[model]["revision"] = revision
    return Result(checks, offerings, models)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = cli.load_stack(args.stack)
        types = instance_types(args.instance_types, config)
        region, clients = aws_clients(args.region, config)
    except cli.UsageError as error:
        return cli.usage_error(error)
    result = run(config, clients, region, types)
    title = f"Preflight for stack '{args.stack}' in {region} ({', '.join(types)}):"
    return cli.report(title, result.checks, args.json,
                      {"region": region, "offerings": result.offerings, "models": result.models})


if __name__ == "__main__":
    sys.exit(main())
