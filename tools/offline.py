"""Run the Pulumi program offline, under Pulumi's mocks, and record everything it registers.

The tests and `python -m tools.render` both use `run_program()`. The mocks answer like AWS and pulumi-eks
do (ARNs, names, IDs, a kubeconfig, where instance types are offered), so inputs built from outputs
are realistic, and the recording monitor keeps each resource's parent, dependencies and options, so
ordering can be checked as well as values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks

from components.config import PROJECT, PROJECT_DIR

ACCOUNT_ID = "123456789012"

# Where each Neuron instance type is offered, by region (EC2 DescribeInstanceTypeOfferings, as moto
# records it), and the regions' zones with their zone IDs. us-east-1e (use1-az3) hosts no EKS control plane.
OFFERINGS: dict[str, dict[str, list[str]]] = {
    "us-west-2": {
        "trn1.2xlarge": ["us-west-2b", "us-west-2d"], "trn1.32xlarge": ["us-west-2b", "us-west-2d"],
        "trn1n.32xlarge": ["us-west-2d"],
        **{f"inf2.{size}": ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]
           for size in ("xlarge", "8xlarge", "24xlarge", "48xlarge")},
    },
    "us-east-1": {
        "trn1.2xlarge": ["us-east-1c", "us-east-1f"], "trn1.32xlarge": ["us-east-1b", "us-east-1c", "us-east-1f"],
        "trn1n.32xlarge": ["us-east-1c"],
        **{f"inf2.{size}": ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1f"]
           for size in ("xlarge", "8xlarge", "24xlarge", "48xlarge")},
    },
    "us-east-2": {
        "trn1.2xlarge": ["us-east-2c"], "trn1.32xlarge": ["us-east-2c"], "trn1n.32xlarge": ["us-east-2c"],
        "trn2.48xlarge": ["us-east-2a", "us-east-2b", "us-east-2c"],
        **{f"inf2.{size}": ["us-east-2a", "us-east-2b", "us-east-2c"]
           for size in ("xlarge", "8xlarge", "24xlarge", "48xlarge")},
    },
    "eu-west-1": {f"inf2.{size}": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
                  for size in ("xlarge", "8xlarge", "24xlarge", "48xlarge")},
}
ZONES: dict[str, dict[str, str]] = {
    "us-west-2": {"us-west-2a": "usw2-az2", "us-west-2b": "usw2-az1", "us-west-2c": "usw2-az3",
                  "us-west-2d": "usw2-az4"},
    "us-east-1": {"us-east-1a": "use1-az6", "us-east-1b": "use1-az1", "us-east-1c": "use1-az2",
                  "us-east-1d": "use1-az4", "us-east-1e": "use1-az3", "us-east-1f": "use1-az5"},
    "us-east-2": {"us-east-2a": "use2-az1", "us-east-2b": "use2-az2", "us-east-2c": "use2-az3"},
    "eu-west-1": {"eu-west-1a": "euw1-az3", "eu-west-1b": "euw1-az1", "eu-west-1c": "euw1-az2"},
}
ADDON_VERSIONS = {"coredns": "v1.12.4-eksbuild.1", "eks-pod-identity-agent": "v1.3.8-eksbuild.2"}
# The S3 prefix list's entries (com.amazonaws.<region>.s3), a stand-in of the shape EC2 returns.
S3_PREFIX_LIST = {"us-west-2": ["3.5.76.0/22", "3.5.80.0/21", "18.34.48.0/20", "18.34.244.0/22", "52.92.128.0/17",
                                "52.218.128.0/17", "54.231.160.0/19"]}
DEFAULT_S3_RANGES = ["52.216.0.0/15", "54.231.0.0/16"]


@dataclass
class Registration:
    """One resource as the program registered it."""

    urn: str
    type: str
    name: str
    custom: bool
    parent: str
    dependencies: list[str]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str
    custom_timeouts: dict[str, str]
    # Options that matter for updates of existing stacks: aliases (name and parent URN of each),
    # ignored properties, delete-before-replace, and how many transforms the resource carries.
    aliases: list[dict[str, str]] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    delete_before_replace: bool = False
    transforms: int = 0

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:") and self.custom

    def manifest(self) -> dict[str, Any]:
        """The Kubernetes object as it would be sent to the API server."""
        group_version, kind = self.type.split(":", 1)[1].rsplit(":", 1)
        group, version = group_version.split("/")
        api_version = self.inputs.get("apiVersion") or (version if group == "core" else f"{group}/{version}")
        body = {k: v for k, v in self.inputs.items() if k not in ("apiVersion", "kind")}
        return {"apiVersion": api_version, "kind": self.inputs.get("kind", kind), **body}


@dataclass
class Deployment:
    """Everything one run of the program registered and exported."""

    resources: list[Registration] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: set[str] = field(default_factory=set)
    # Every data-source call: (token, arguments).
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registration:
        matches = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(matches) != 1:
            raise AssertionError(f"expected one {type_} named {name}, found {[r.name for r in matches]}")
        return matches[0]

    def by_urn(self, urn: str) -> Registration:
        return next(r for r in self.resources if r.urn == urn)

    def kubernetes_objects(self) -> list[Registration]:
        return [r for r in self.resources if r.is_kubernetes and r.type != "kubernetes:helm.sh/v3:Release"]

    def helm_releases(self) -> list[Registration]:
        return self.of_type("kubernetes:helm.sh/v3:Release")

    def depends_on(self, resource: Registration, other: Registration) -> bool:
        """Whether `resource` waits for `other`, directly or through its dependencies' dependencies.

        A parent's dependencies do not count: the engine does not make children wait for them.
        """
        seen: set[str] = set()
        pending = [resource.urn]
        while pending:
            urn = pending.pop()
            if urn in seen:
                continue
            seen.add(urn)
            for dependency in self.by_urn(urn).dependencies:
                if dependency == other.urn:
                    return True
                pending.append(dependency)
        return False


class FakeCloud(pulumi.runtime.Mocks):
    """Answers for resources and data sources, shaped like what AWS, pulumi-eks and Kubernetes return.

    In a preview, as in a real `pulumi preview` of a new stack, a resource's outputs are only its inputs:
    every computed output (IDs, ARNs, endpoints, a kubeconfig) is unknown."""

    def __init__(self, region: str, invokes: list[tuple[str, dict[str, Any]]], preview: bool = False):
        self.region = region
        self.invokes = invokes
        self.preview = preview
        # The monitor runs registrations on worker threads; it reads back the inputs of its own call.
        self.current = threading.local()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = dict(args.inputs)
        self.current.inputs = inputs
        if self.preview:
            return "", inputs
        return self._created(args, inputs)

    def _created(self, args: pulumi.runtime.MockResourceArgs, inputs: dict[str, Any]) -> tuple[str, dict]:
        suffix = hashlib.sha1(args.name.encode()).hexdigest()
        physical = inputs.get("name") or f"{args.name}-{suffix[:7]}"
        arn_prefix = f"arn:aws:{{}}:{self.region}:{ACCOUNT_ID}"
        typ = args.typ
        if typ == "aws:iam/role:Role":
            return physical, {**inputs, "name": physical, "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{physical}",
                              "uniqueId": f"AROA{suffix[:17].upper()}"}
        if typ == "aws:iam/policy:Policy":
            return f"arn:aws:iam::{ACCOUNT_ID}:policy/{physical}", {
                **inputs, "name": physical, "arn": f"arn:aws:iam::{ACCOUNT_ID}:policy/{physical}"}
        if typ == "aws:sqs/queue:Queue":
            url = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{physical}"
            return url, {**inputs, "name": physical, "arn": f"{arn_prefix.format('sqs')}:{physical}", "url": url}
        if typ == "aws:kms/key:Key":
            key_id = f"{suffix[:8]}-{suffix[8:12]}-{suffix[12:16]}-{suffix[16:20]}-{suffix[20:32]}"
            return key_id, {**inputs, "keyId": key_id, "arn": f"{arn_prefix.format('kms')}:key/{key_id}"}
        if typ.startswith("aws:ec2/"):
            prefix = {"vpc:Vpc": "vpc", "subnet:Subnet": "subnet", "internetGateway:InternetGateway": "igw",
                      "natGateway:NatGateway": "nat", "eip:Eip": "eipalloc", "routeTable:RouteTable": "rtb",
                      "launchTemplate:LaunchTemplate": "lt", "vpcEndpoint:VpcEndpoint": "vpce"}.get(typ.split("/", 1)[1], "ec2")
            resource_id = f"{prefix}-0{suffix[:16]}"
            return resource_id, {**inputs, "id": resource_id, "arn": f"{arn_prefix.format('ec2')}:{prefix}/{resource_id}",
                                 "latestVersion": 1}
        if typ == "aws:eks/nodeGroup:NodeGroup":
            group = f"{args.name}-{suffix[:7]}"
            return group, {**inputs, "nodeGroupName": group, "status": "ACTIVE",
                           "arn": f"{arn_prefix.format('eks')}:nodegroup/{inputs.get('clusterName')}/{group}/{suffix[:8]}"}
        if typ == "aws:cloudwatch/eventRule:EventRule":
            return physical, {**inputs, "name": physical, "arn": f"{arn_prefix.format('events')}:rule/{physical}"}
        if typ == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"{inputs.get('bucketPrefix', args.name)}{suffix[:26]}"
            return bucket, {**inputs, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}",
                            "bucketRegionalDomainName": f"{bucket}.s3.{self.region}.amazonaws.com"}
        if typ == "aws:amp/workspace:Workspace":
            workspace = f"ws-{suffix[:8]}-{suffix[8:12]}-{suffix[12:16]}-{suffix[16:20]}-{suffix[20:32]}"
            return workspace, {**inputs, "id": workspace, "arn": f"{arn_prefix.format('aps')}:workspace/{workspace}",
                               "prometheusEndpoint": f"https://aps-workspaces.{self.region}.amazonaws.com/workspaces/"
                                                     f"{workspace}/"}
        if typ == "aws:amp/scraper:Scraper":
            scraper = f"s-{suffix[:8]}-{suffix[8:12]}-{suffix[12:16]}-{suffix[16:20]}-{suffix[20:32]}"
            return scraper, {**inputs, "arn": f"{arn_prefix.format('aps')}:scraper/{scraper}",
                             "roleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/aws-service-role/scraper.aps.amazonaws.com/"
                                        f"AWSServiceRoleForAmazonPrometheusScraper_{suffix[:7]}"}
        if typ == "aws:sns/topic:Topic":
            topic = inputs.get("name") or f"{args.name}-{suffix[:7]}"
            return f"{arn_prefix.format('sns')}:{topic}", {**inputs, "name": topic,
                                                            "arn": f"{arn_prefix.format('sns')}:{topic}"}
        if typ == "random:index/randomPassword:RandomPassword":
            # Deterministic per name, so two runs of the same stack render the same bytes.
            result = hashlib.sha512(f"password:{args.name}".encode()).hexdigest()[:int(inputs["length"])]
            return args.name, {**inputs, "result": result}
        if typ == "eks:index:Cluster":
            return args.name, {**inputs, **self._eks_cluster_outputs(inputs)}
        if typ == "kubernetes:helm.sh/v3:Release":
            return f"{inputs.get('namespace')}/{inputs.get('name')}", {
                **inputs, "status": {"name": inputs.get("name"), "namespace": inputs.get("namespace"),
                                     "chart": inputs.get("chart"), "version": inputs.get("version"),
                                     "status": "deployed", "revision": 1}}
        if typ.startswith("kubernetes:"):
            metadata = inputs.get("metadata") or {}
            return f"{metadata.get('namespace', '')}/{metadata.get('name', args.name)}".lstrip("/"), inputs
        return f"{args.name}-{suffix[:8]}", {**inputs, "arn": f"{arn_prefix.format('mock')}:{physical}"}

    def _eks_cluster_outputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        name = inputs["name"]
        endpoint = f"https://{hashlib.md5(name.encode()).hexdigest().upper()}.gr7.{self.region}.eks.amazonaws.com"
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "aws",
            "clusters": [{"name": "kubernetes", "cluster": {"server": endpoint, "certificate-authority-data": "LS0tLS1CRUdJTg=="}}],
            "contexts": [{"name": "aws", "context": {"cluster": "kubernetes", "user": "aws"}}],
            "users": [{"name": "aws", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws",
                "args": ["--region", self.region, "eks", "get-token", "--cluster-name", name, "--output", "json"]}}}],
        }
        return {
            "kubeconfig": kubeconfig,
            "kubeconfigJson": json.dumps(kubeconfig),
            "clusterSecurityGroupId": "sg-0c1a55e7d2b8f4e61",
            "nodeSecurityGroupId": "sg-0c1a55e7d2b8f4e61",
            "core": {"endpoint": endpoint, "vpcId": inputs.get("vpcId"), "subnetIds": inputs.get("privateSubnetIds")},
        }

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        token, params = args.token, args.args
        self.invokes.append((token, dict(params)))
        if token == "aws:index/getPartition:getPartition":
            return {"id": "aws", "partition": "aws", "dnsSuffix": "amazonaws.com", "reverseDnsPrefix": "com.amazonaws"}
        if token == "aws:index/getRegion:getRegion":
            return {"id": self.region, "name": self.region, "region": self.region,
                    "endpoint": f"ec2.{self.region}.amazonaws.com", "description": self.region}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"id": ACCOUNT_ID, "accountId": ACCOUNT_ID, "userId": "AIDAEXAMPLE",
                    "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/deployer"}
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = ZONES.get(self.region, {})
            return {"id": self.region, "names": list(zones), "zoneIds": list(zones.values()), "groupNames": [self.region]}
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            wanted = {v for f in params.get("filters", []) if f["name"] == "instance-type" for v in f["values"]}
            pairs = [(t, zone) for t, zones in OFFERINGS.get(self.region, {}).items() if t in wanted for zone in zones]
            return {"id": self.region, "instanceTypes": [t for t, _ in pairs], "locations": [z for _, z in pairs],
                    "locationTypes": ["availability-zone"] * len(pairs)}
        if token == "aws:ec2/getManagedPrefixList:getManagedPrefixList":
            return {"id": "pl-68a54001", "name": params["name"], "addressFamily": "IPv4", "maxEntries": 0,
                    "entries": [{"cidr": cidr, "description": ""}
                                for cidr in S3_PREFIX_LIST.get(self.region, DEFAULT_S3_RANGES)]}
        if token == "aws:eks/getAddonVersion:getAddonVersion":
            return {"id": params["addonName"], "addonName": params["addonName"],
                    "kubernetesVersion": params["kubernetesVersion"], "version": ADDON_VERSIONS[params["addonName"]]}
        raise NotImplementedError(f"the offline mocks do not answer {token}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, also keeping what a real engine would use to order and configure resources."""

    def __init__(self, cloud: FakeCloud):
        super().__init__(cloud)
        self.cloud = cloud
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            timeouts = request.customTimeouts
            dependencies = set(request.dependencies)
            for property_dependencies in request.propertyDependencies.values():
                dependencies.update(property_dependencies.urns)
            self.registrations.append(Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=request.custom,
                parent=request.parent,
                dependencies=sorted(dependencies),
                inputs=_plain(self.cloud.current.inputs),
                outputs=_plain(self.resources[response.urn].state),
                provider=request.provider,
                custom_timeouts={k: v for k, v in (("create", timeouts.create), ("update", timeouts.update),
                                                   ("delete", timeouts.delete)) if v},
                aliases=[{"name": a.spec.name, "parent": a.spec.parentUrn} if a.HasField("spec") else {"urn": a.urn}
                         for a in request.aliases],
                ignore_changes=list(request.ignoreChanges),
                delete_before_replace=request.deleteBeforeReplace,
                transforms=len(request.transforms),
            ))
        return response


def _plain(value: Any) -> Any:
    """Inputs as plain data: secrets unwrapped, resource references by type, whole numbers as integers.

    Pulumi carries every number as a float; the providers send whole ones as integers (8080, not 8080.0).
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, pulumi.Resource):
        return f"<{type(value).__module__}.{type(value).__name__}>"
    if isinstance(value, dict):
        if value.get(pulumi.runtime.rpc._special_sig_key) == pulumi.runtime.rpc._special_secret_sig:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def stack_values(stack: str = "dev", project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml, with full keys (`trainium-vllm:neuron`, `aws:region`)."""
    document = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text()) or {}
    return dict(document.get("config") or {})


def run_program(config: Mapping[str, Any] | None = None, *, stack: str = "dev", preview: bool = False,
                program: Path = PROJECT_DIR / "__main__.py", deployment: Deployment | None = None) -> Deployment:
    """Run `__main__.py` under the mocks with the given config (full keys, typed values) and record it.

    Each run gets a fresh event loop and fresh mocks, so runs never see each other's resources. Pass
    `deployment` to keep what was registered even when the program fails.
    """
    config = dict(stack_values(stack) if config is None else config)
    region = config.get("aws:region", "us-west-2")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_all_config({key: value if isinstance(value, str) else json.dumps(value)
                                       for key, value in config.items()})
        deployment = deployment if deployment is not None else Deployment()
        cloud = FakeCloud(region, deployment.invokes, preview=preview)
        monitor = RecordingMonitor(cloud)
        monitor.registrations = deployment.resources
        # A fresh root stack resource too: set_mocks keeps an existing one, and with it the last run's exports.
        pulumi.runtime.settings.reset_options()
        pulumi.runtime.set_mocks(cloud, project=PROJECT, stack=stack, preview=preview, monitor=monitor)

        async def collect_exports(outputs: dict[str, Any]) -> None:
            for name, value in outputs.items():
                output = pulumi.Output.from_input(value)
                deployment.exports[name] = _plain(await output.future())
                if await output.is_secret():
                    deployment.secret_exports.add(name)

        @pulumi.runtime.test
        def run():
            runpy.run_path(str(program), run_name="__pulumi_program__")
            return collect_exports(pulumi.runtime.settings.get_root_resource().outputs)

        run()
        return deployment
    finally:
        pulumi.runtime.set_all_config({})
        loop.close()
        asyncio.set_event_loop(None)
