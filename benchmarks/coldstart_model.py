"""A model of the model's cold start and of `pulumi up`, stage by stage, from published figures.

    python -m benchmarks.coldstart_model [--stack dev] [--instance-type TYPE ...] [--burst] [--brief] [--json]

A model, not a measurement: every duration comes from FIGURES below (each with its source; the ones no
source gives are marked as our estimates), and every bandwidth from the instance's EC2 specifications.
It prints:

  (a) a model pod's start on a new node and (b) a restart on a warm node, for trn1.2xlarge and inf2.xlarge,
      for the old design (today: Hugging Face download in the init container, then the image pull) and the
      new one (a pre-pull DaemonSet pulls the image while the init container copies the model from S3).
      Stages that run at once are shown as branches; the stage takes the longest branch, and no less
      than all their bytes through the link they share (the node's network and, without an instance
      store, its EBS bandwidth).
  (c) the critical path of `pulumi up` for the stack as the program renders it (run offline under the
      mocks of tools/offline.py): a duration per resource type, the model Deployment's await taken from (a),
      and the longest path through the recorded dependencies (a parent's dependencies do not make its
      children wait), plus the waits that happen inside the cluster (a Service waits for its pods, a pod
      for its nodes and for the model's sync Job).

Targets, for the new design at the typical figures: a new node serving within 5 minutes, a warm restart
within 3, `pulumi up` within 30. Exit status: 0 every checked target met, 1 a target missed, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import cli  # noqa: E402
from tools.offline import Deployment, Registration, run_program  # noqa: E402

GB = 1e9
MB = 1e6


@dataclass(frozen=True)
class Figure:
    typical: float
    source: str
    low: float | None = None
    high: float | None = None
    # No published figure: our estimate (listed as such in the output).
    estimate: bool = False

    def at(self, scenario: str) -> float:
        value = {"low": self.low, "typical": self.typical, "high": self.high}[scenario]
        return self.typical if value is None else value


def _f(typical: float, source: str, low: float | None = None, high: float | None = None) -> Figure:
    return Figure(typical, source, low, high)


def _estimate(typical: float, why: str, low: float | None = None, high: float | None = None) -> Figure:
    return Figure(typical, f"estimate: {why}", low, high, estimate=True)


KARPENTER_BLUEPRINT = ("aws-samples/karpenter-blueprints blueprints/soci-snapshotter/README.md (vLLM DLC image, "
                       "'Image size: 10778400361 bytes'; default containerd 1m52.33s, SOCI parallel pull on AL2023 "
                       "59.813s, on Bottlerocket 44.974s; instances with >8000 Mbps network and EBS)")

# Every duration in seconds, sizes in bytes. low/high: the ends of the published range where there is one.
FIGURES: dict[str, Figure] = {
    # -- what is moved
    "image_bytes": _f(10.78 * GB, "the ~10 GB vLLM image (FACTS 2); " + KARPENTER_BLUEPRINT),
    "model_bytes": _f(15 * GB, "Mistral-7B pre-compiled for 2 NeuronCores, ~15 GB (FACTS 2b)"),
    # -- capacity
    "karpenter_batch_s": _f(1, "Karpenter 1.14.1 chart values: settings.batchIdleDuration 1s, batchMaxDuration 10s",
                            low=1, high=10),
    "node_ready_s": _f(90, "FACTS 2b: launch to Ready 1-2 min (Neuron); aws/karpenter-provider-aws#6165 (maintainer: "
                       "30-40 s; AWS blog: 1-2 min), #6128 (100-120 s); EKS workshop: Pending -> Init:0/1 at 50 s",
                       low=40, high=120),
    "device_plugin_s": _estimate(10, "the Neuron device plugin pod starts on the new node and registers "
                                 "aws.amazon.com/neuron before the pod can bind (NodeClaim Initialized)", 5, 30),
    "scheduling_s": _estimate(1, "the scheduler binds a pod to a node that already has room", 0, 2),
    # -- the old design's init container (today)
    "init_python_image_s": _estimate(10, "python:3.11-slim (~45 MB) from Docker Hub; FACTS 2: anonymous pulls "
                                     "are limited to 10/h per NAT address (a failure, not a delay)", 5, 30),
    "pip_install_s": _estimate(15, "hash-locked huggingface_hub wheels from PyPI", 10, 30),
    "hf_download_s": _f(300, "FACTS 2: plain HTTPS from the Hub ~50 MB/s per stream -> 15 GB in 300 s; FACTS 2b: "
                        "2.5-5 min (unslothai/unsloth-zoo#972)", low=150, high=300),
    # -- images
    "image_pull_s": _f(60, "FastImagePull (SOCI parallel pull), ~10 GB: " + KARPENTER_BLUEPRINT + "; FACTS 4: 47 s",
                       low=45, high=60),
    "aws_cli_image_s": _estimate(5, "the AWS CLI image (~130 MB) from ECR Public", 2, 10),
    "cached_image_s": _estimate(1, "imagePullPolicy Always on a cached image: a manifest request, no layers "
                                "(kubelet reports ~0.4 s)", 0, 2),
    # -- the new design's copy from S3
    "sync_check_s": _estimate(1, "fetch-model.sh looks up the sync marker in S3 before copying", 0, 3),
    "s3_copy_s": _f(35, "FACTS 2b: ~15 GB from in-region S3 in 10-60 s (EKS best-practices AI/ML guide), AWS CLI "
                    "with the CRT transfer client", low=10, high=60),
    # -- serving
    "load_s": _f(120, "FACTS 2b: a pre-compiled 7B onto 2 NeuronCores in 1-3 min (NxDI logs; Neuron vLLM user "
                 "guide)", low=60, high=180),
    "readiness_s": _f(5, "readinessProbe periodSeconds 10 (components/model_pod.py): half a period on average",
                      low=0, high=10),
    # -- pulumi up
    "eks_control_plane_s": _f(540, "AWS What's New 2021-03-19 'a new EKS cluster control plane in 9 minutes or "
                              "less, on average' (https://aws.amazon.com/about-aws/whats-new/2021/03/"
                              "amazon-eks-reduces-cluster-creation-time-40-percent/); terraform-aws-modules/"
                              "terraform-aws-eks#2203 (9m43s); aws/containers-roadmap#1227 (~14 min reported)",
                              low=500, high=840),
    "pulumi_eks_extras_s": _estimate(60, "pulumi-eks creates the vpc-cni and kube-proxy add-ons and access entries "
                                     "inside eks.Cluster (FACTS 6) after the control plane", 30, 180),
    "node_group_s": _f(170, "umotif-public/terraform-aws-eks-node-group#7: aws_eks_node_group created in 2m50s",
                       low=120, high=300),
    "addon_coredns_s": _estimate(120, "the CoreDNS add-on turns ACTIVE once the system nodes are up; the slow end "
                                 "from aws-ia/terraform-aws-eks-blueprints#642 ('at least 15 minutes', 2022) and "
                                 "terraform-aws-modules/terraform-aws-eks#1765 (13 min+)", 60, 900),
    "addon_s": _estimate(60, "an EKS add-on whose pods are a DaemonSet (pod identity agent)", 30, 120),
    "nat_gateway_s": _f(105, "public terraform-aws-modules/vpc apply logs: aws_nat_gateway created in 1m25s-2m5s",
                        low=85, high=125),
    "helm_release_s": _estimate(45, "Helm waits for the release's pods: a small image on a ready node", 20, 120),
    "helm_crds_s": _estimate(10, "a chart of CRDs only: nothing to wait for", 5, 20),
    "k8s_object_s": _estimate(2, "a Kubernetes object Pulumi does not wait on", 1, 5),
    "service_settle_s": _f(10, "pulumi-kubernetes Service await: 'wait 10 seconds for any stragglers' "
                           "(core/v1/Service.py docstring, pulumi-kubernetes 4.34.2)"),
    "aws_api_s": _estimate(5, "one AWS create call (IAM, KMS, SQS, EventBridge, S3, VPC pieces)", 2, 15),
    "hf_sync_job_s": _f(300, "the sync Job copies ~15 GB from the Hub to S3 once per revision at ~50 MB/s "
                        "(FACTS 2)", low=150, high=300),
    "amp_scraper_s": _estimate(900, "FACTS 8: creating the AMP managed collector 'takes minutes'; no AWS figure "
                               "found; Terraform's aws_prometheus_scraper allows 30 min by default "
                               "(hashicorp/terraform-provider-aws docs)", 300, 1200),
    "amp_workspace_s": _estimate(60, "an AMP workspace becomes ACTIVE", 30, 120),
    "default_s": _estimate(10, "a resource type this model has no figure for (listed in the output)", 5, 30),
}


@dataclass(frozen=True)
class Instance:
    network_gbps: float
    network_peak_gbps: float
    ebs_mbps: float
    ebs_peak_mbps: float
    instance_store: bool


INSTANCE_SOURCE = ("EC2 DescribeInstanceTypes (the copy moto ships, moto/ec2/resources/instance_types.json.gz): "
                   "NetworkCards BaselineBandwidthInGbps/PeakBandwidthInGbps, EbsOptimizedInfo "
                   "BaselineThroughputInMBps/MaximumThroughputInMBps, InstanceStorageInfo; FACTS 2b")
INSTANCES: dict[str, Instance] = {
    "trn1.2xlarge": Instance(network_gbps=3.125, network_peak_gbps=12.5, ebs_mbps=625.0, ebs_peak_mbps=2500.0,
                             instance_store=True),
    "inf2.xlarge": Instance(network_gbps=2.083, network_peak_gbps=15.0, ebs_mbps=156.25, ebs_peak_mbps=1250.0,
                            instance_store=False),
}
# The root volume the EC2NodeClass asks for (components/neuron_capacity.py): gp3, 1000 MiB/s.
GP3_ROOT_MBPS = 1000 * 1.048576
BURST_SOURCE = ("AWS: EBS-optimized instances of these sizes can burst to their maximum for 30 minutes at least once "
                "every 24 hours; 'up to' network bandwidth runs on credits (EC2 user guide)")
DISK_NOTE = ("trn1: NVMe instance store in RAID0 (EC2NodeClass instanceStorePolicy) holds images and emptyDirs; AWS "
             "publishes no write throughput for it, so it is not taken as a bound")

TARGETS = {"new node": 5 * 60.0, "warm restart": 3 * 60.0}
PULUMI_UP_TARGET = 30 * 60.0
SCENARIOS = ("low", "typical", "high")


@dataclass(frozen=True)
class Design:
    name: str
    copy: str  # "hf": the init container downloads from Hugging Face; "s3": copies from the model store
    prepull: bool


DESIGNS = {"old": Design("old (today)", "hf", False), "new": Design("new", "s3", True)}


# --- (a), (b): a pod's start ----------------------------------------------------------------------


@dataclass
class Step:
    name: str
    seconds: float
    how: str


@dataclass
class Parallel:
    """Stages that run at once: they take their longest branch, and no less than `floor` (all their bytes
    through the link the branches share)."""

    name: str
    branches: list[tuple[str, list[Step]]]
    floor: Step | None = None

    def branch_seconds(self) -> list[tuple[str, float]]:
        lengths = [(name, sum(s.seconds for s in steps)) for name, steps in self.branches]
        return lengths + ([(self.floor.name, self.floor.seconds)] if self.floor else [])

    @property
    def seconds(self) -> float:
        return max(seconds for _, seconds in self.branch_seconds())

    @property
    def critical(self) -> str:
        return max(self.branch_seconds(), key=lambda b: b[1])[0]


@dataclass
class ColdStart:
    instance_type: str
    design: Design
    warm: bool
    scenario: str
    burst: bool
    steps: list[Step | Parallel]

    @property
    def start(self) -> str:
        return "warm restart" if self.warm else "new node"

    @property
    def total(self) -> float:
        return sum(step.seconds for step in self.steps)

    def step(self, name: str) -> Step:
        """A stage by name, also inside parallel branches."""
        for item in self.steps:
            for candidate in ([item] if isinstance(item, Step) else
                              [s for _, steps in item.branches for s in steps] + ([item.floor] if item.floor else [])):
                if candidate.name == name:
                    return candidate
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for item in self.steps
                for s in ([item] if isinstance(item, Step) else [x for _, steps in item.branches for x in steps])]


def bandwidths(instance: Instance, burst: bool) -> tuple[float, float | None]:
    """Bytes/s the node can take in (network) and write (EBS root volume; None for an instance store)."""
    network = (instance.network_peak_gbps if burst else instance.network_gbps) * 1e9 / 8
    if instance.instance_store:
        return network, None
    return network, min(GP3_ROOT_MBPS, instance.ebs_peak_mbps if burst else instance.ebs_mbps) * MB


def _transfer(name: str, figure_seconds: float, figure: str, nbytes: float, network: float,
              disk: float | None) -> Step:
    """A transfer takes its published time, or longer when the node's network or disk cannot carry it."""
    link = min(network, disk) if disk is not None else network
    bound = nbytes / link
    limit = "network" if disk is None or network <= disk else "EBS"
    how = (f"max({figure} {figure_seconds:.0f} s, {nbytes / GB:.1f} GB / {limit} {link / MB:.0f} MB/s "
           f"= {bound:.0f} s)")
    return Step(name, max(figure_seconds, bound), how)


def cold_start(instance_type: str, design: Design | str, *, warm: bool, scenario: str = "typical",
               burst: bool = False) -> ColdStart:
    design = DESIGNS[design] if isinstance(design, str) else design
    instance = INSTANCES[instance_type]
    network, disk = bandwidths(instance, burst)

    def figure(key: str) -> float:
        return FIGURES[key].at(scenario)

    def step(name: str, key: str) -> Step:
        return Step(name, figure(key), key)

    image, model = FIGURES["image_bytes"].typical, FIGURES["model_bytes"].typical
    steps: list[Step | Parallel] = []
    if not warm:
        steps += [step("Karpenter batches the pending pod", "karpenter_batch_s"),
                  step("EC2 launch; the node joins, Ready", "node_ready_s")]
    # The model pod up to the end of its init container.
    pod = [step("device plugin advertises Neuron; pod binds", "device_plugin_s") if not warm
           else step("scheduler binds the pod", "scheduling_s")]
    if design.copy == "hf":
        pod += [step("init image python (Docker Hub)", "cached_image_s" if warm else "init_python_image_s"),
                step("pip installs the download tools", "pip_install_s"),
                _transfer("download 15 GB from Hugging Face", figure("hf_download_s"), "hf_download_s", model,
                          network, disk)]
    else:
        pod += [step("init image aws-cli", "cached_image_s" if warm else "aws_cli_image_s"),
                step("check the model store's sync marker", "sync_check_s"),
                _transfer("copy 15 GB from S3 (CRT)", figure("s3_copy_s"), "s3_copy_s", model, network, disk)]
    # The vLLM image: cached on a warm node, else pulled.
    pull = (step("vLLM image already on the node", "cached_image_s") if warm
            else _transfer("pull the 10 GB vLLM image", figure("image_pull_s"), "image_pull_s", image, network, disk))
    if design.prepull and not warm:
        link = min(network, disk) if disk is not None else network
        floor = Step("shared link: image + model bytes", (image + model) / link,
                     f"{(image + model) / GB:.1f} GB / {link / MB:.0f} MB/s")
        steps.append(Parallel("pre-pull overlaps the model copy",
                              [("pre-pull DaemonSet", [pull]), ("model pod", pod)], floor))
    else:
        # No pre-pull (or nothing to pull): the image is fetched when the server container starts.
        steps += pod + [pull]
    steps += [step("vLLM loads the model onto 2 NeuronCores", "load_s"),
              step("readiness probe sees /health", "readiness_s")]
    return ColdStart(instance_type, design, warm, scenario, burst, steps)


# --- (c): pulumi up --------------------------------------------------------------------------------

# Resource types and the figure of how long creating one takes (Pulumi waits for it).
TYPE_FIGURES: dict[str, str] = {
    "eks:index:Cluster": "eks",  # the control plane plus what pulumi-eks adds
    "aws:eks/nodeGroup:NodeGroup": "node_group_s",
    "aws:ec2/natGateway:NatGateway": "nat_gateway_s",
    "aws:amp/scraper:Scraper": "amp_scraper_s",
    "aws:amp/workspace:Workspace": "amp_workspace_s",
    "pulumi:providers:kubernetes": "",
}
AWS_API_PREFIXES = ("aws:iam/", "aws:kms/", "aws:cloudwatch/", "aws:sqs/", "aws:s3/", "aws:sns/", "aws:ec2/",
                    "aws:eks/accessEntry:", "aws:eks/podIdentityAssociation:", "aws:amp/ruleGroupNamespace:",
                    "aws:amp/alertManagerDefinition:")
# pulumi-kubernetes' default await budgets (the pinned SDK's docstrings): 10 minutes.
DEFAULT_TIMEOUTS = {"kubernetes:apps/v1:Deployment": 600.0, "kubernetes:core/v1:Service": 600.0,
                    "kubernetes:batch/v1:Job": 600.0}
NEURON_RESOURCE = "aws.amazon.com/neuron"


@dataclass
class Timing:
    start: float
    finish: float
    # What this resource waited for last (its start or its finish), and how: the critical path's link.
    after: str | None
    via: str
    figure: str


@dataclass
class UpPlan:
    deployment: Deployment
    timings: dict[str, Timing]
    path: list[str]
    cold: dict[str, ColdStart]
    defaulted: dict[str, int]
    timeouts: list[str]
    edges: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return max(t.finish for t in self.timings.values())


def _annotations(r: Registration) -> dict[str, str]:
    return (r.inputs.get("metadata") or {}).get("annotations") or {}


def _awaited(r: Registration) -> bool:
    return _annotations(r).get("pulumi.com/skipAwait") != "true"


def _pod_spec(r: Registration) -> dict[str, Any]:
    return ((r.inputs.get("spec") or {}).get("template") or {}).get("spec") or {}


def _namespace(r: Registration) -> str | None:
    return (r.inputs.get("metadata") or {}).get("namespace")


def _is_neuron_workload(r: Registration) -> bool:
    return any(NEURON_RESOURCE in ((c.get("resources") or {}).get("requests") or {})
               for c in _pod_spec(r).get("containers") or [])


def design_of(deployment: Deployment, r: Registration) -> Design:
    """The design the rendered model Deployment has: where its init container gets the model, and whether a
    DaemonSet in its namespace pre-pulls its server image."""
    spec = _pod_spec(r)
    init_images = " ".join(c.get("image", "") for c in spec.get("initContainers") or [])
    server_images = {c.get("image") for c in spec.get("containers") or []}
    prepull = any(_namespace(d) == _namespace(r)
                  and server_images & {c.get("image") for c in _pod_spec(d).get("containers") or []}
                  for d in deployment.of_type("kubernetes:apps/v1:DaemonSet"))
    return Design("rendered", "s3" if "aws-cli" in init_images else "hf", prepull)


def edges_of(deployment: Deployment) -> dict[str, list[tuple[str, str]]]:
    """What each resource waits for before Pulumi creates it: its dependencies, its provider, and a custom
    parent (a child needs the parent's URN, which a custom resource has once it is created). A component
    parent's own dependencies do not count (tools/offline.py, Deployment.depends_on)."""
    by_urn = {r.urn: r for r in deployment.resources}
    edges: dict[str, list[tuple[str, str]]] = {}
    for r in deployment.resources:
        waits = [(d, "dependency") for d in dict.fromkeys(r.dependencies) if d in by_urn]
        provider = r.provider.rsplit("::", 1)[0] if r.provider else ""
        if provider in by_urn:
            waits.append((provider, "provider"))
        if r.parent in by_urn and by_urn[r.parent].custom:
            waits.append((r.parent, "parent"))
        edges[r.urn] = waits
    return edges


def _in_cluster_waits(deployment: Deployment) -> dict[str, list[tuple[str, str]]]:
    """Waits that happen inside the cluster, not in Pulumi's graph:
    - a Job's or Deployment's pods run only once the node group their nodeSelector picks is up;
    - a model pod's init container waits for the model's sync Job (env SYNC_JOB names it);
    - a Service with a selector is ready for Pulumi only once the pods it selects are ready."""
    waits: dict[str, list[tuple[str, str]]] = {}
    groups = deployment.of_type("aws:eks/nodeGroup:NodeGroup")
    jobs = deployment.of_type("kubernetes:batch/v1:Job")
    workloads = [*deployment.of_type("kubernetes:apps/v1:Deployment"), *jobs]
    for r in workloads:
        selector = _pod_spec(r).get("nodeSelector") or {}
        for group in groups:
            if selector and selector.items() <= (group.inputs.get("labels") or {}).items():
                waits.setdefault(r.urn, []).append((group.urn, "its pods wait for the nodes of"))
    for r in deployment.of_type("kubernetes:apps/v1:Deployment"):
        for init in _pod_spec(r).get("initContainers") or []:
            for variable in init.get("env") or []:
                if variable.get("name") != "SYNC_JOB":
                    continue
                for job in jobs:
                    if (job.inputs.get("metadata") or {}).get("name") == variable.get("value") \
                            and _namespace(job) == _namespace(r):
                        waits.setdefault(r.urn, []).append((job.urn, "its init container waits for the sync Job"))
    for service in deployment.of_type("kubernetes:core/v1:Service"):
        selector = (service.inputs.get("spec") or {}).get("selector") or {}
        for r in deployment.of_type("kubernetes:apps/v1:Deployment"):
            labels = (((r.inputs.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            if selector and _namespace(r) == _namespace(service) and selector.items() <= labels.items():
                waits.setdefault(service.urn, []).append((r.urn, "waits for the ready pods of"))
    return waits


def _type_seconds(r: Registration, scenario: str) -> tuple[float, str]:
    """How long Pulumi takes to create a resource of this type (the special cases are handled by the caller)."""
    key = TYPE_FIGURES.get(r.type)
    if r.type == "eks:index:Cluster":
        return (FIGURES["eks_control_plane_s"].at(scenario) + FIGURES["pulumi_eks_extras_s"].at(scenario),
                "eks_control_plane_s + pulumi_eks_extras_s")
    if key == "":
        return 0.0, "provider"
    if key:
        return FIGURES[key].at(scenario), key
    if not r.custom:
        return 0.0, "component"
    if r.type == "aws:eks/addon:Addon":
        key = "addon_coredns_s" if r.inputs.get("addonName") == "coredns" else "addon_s"
        return FIGURES[key].at(scenario), key
    if r.type == "kubernetes:helm.sh/v3:Release":
        if r.inputs.get("skipAwait"):
            return FIGURES["k8s_object_s"].at(scenario), "k8s_object_s"
        key = "helm_crds_s" if str(r.inputs.get("chart", "")).endswith("-crd") else "helm_release_s"
        return FIGURES[key].at(scenario), key
    if r.type.startswith("kubernetes:"):
        return FIGURES["k8s_object_s"].at(scenario), "k8s_object_s"
    if r.type.startswith(AWS_API_PREFIXES):
        return FIGURES["aws_api_s"].at(scenario), "aws_api_s"
    return FIGURES["default_s"].at(scenario), "default_s"


def _order(urns: Iterable[str], edges: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Dependencies first (Kahn); raises on a cycle."""
    urns = list(urns)
    waiting = {u: {d for d, _ in edges.get(u, [])} for u in urns}
    done: list[str] = []
    ready = [u for u in urns if not waiting[u]]
    while ready:
        urn = ready.pop(0)
        done.append(urn)
        for other in urns:
            if urn in waiting[other]:
                waiting[other].discard(urn)
                if not waiting[other]:
                    ready.append(other)
    if len(done) != len(urns):
        raise ValueError(f"dependency cycle among {sorted(set(urns) - set(done))}")
    return done


def pulumi_up(deployment: Deployment, instance_type: str, scenario: str = "typical") -> UpPlan:
    edges = edges_of(deployment)
    waits = _in_cluster_waits(deployment)
    by_urn = {r.urn: r for r in deployment.resources}
    order = _order(by_urn, {u: edges[u] + waits.get(u, []) for u in by_urn})
    timings: dict[str, Timing] = {}
    # Inside the cluster: when a Job is done, when a Deployment's pods are ready.
    job_done: dict[str, float] = {}
    pods_ready: dict[str, float] = {}
    cold: dict[str, ColdStart] = {}
    defaulted: dict[str, int] = {}
    timeouts: list[str] = []
    for urn in order:
        r = by_urn[urn]
        start, after, via = 0.0, None, "start"
        if edges[urn]:
            dependency, via = max(edges[urn], key=lambda edge: timings[edge[0]].finish)
            start, after = timings[dependency].finish, dependency
        seconds, figure = _type_seconds(r, scenario)
        if figure == "default_s":
            defaulted[r.type] = defaulted.get(r.type, 0) + 1
        finish, finish_after, finish_via = start + seconds, after, via
        begin = start
        for target, how in waits.get(urn, []):
            if by_urn[target].type == "aws:eks/nodeGroup:NodeGroup" and timings[target].finish > begin:
                begin = timings[target].finish
                finish_after, finish_via = target, how
        if r.type == "kubernetes:batch/v1:Job":
            figure = "hf_sync_job_s"
            job_done[urn] = begin + FIGURES["hf_sync_job_s"].at(scenario)
            if _awaited(r):
                finish = job_done[urn]
            else:
                finish_after, finish_via = after, via
        elif r.type == "kubernetes:apps/v1:Deployment" and _is_neuron_workload(r):
            plan = cold_start(instance_type, design_of(deployment, r), warm=False, scenario=scenario)
            cold[urn] = plan
            figure = "the cold start, (a)"
            ready = begin + plan.total
            for target, how in waits.get(urn, []):
                if target in job_done:
                    copy_and_load = (plan.step("copy 15 GB from S3 (CRT)").seconds
                                     if plan.design.copy == "s3" else 0.0) + FIGURES["load_s"].at(scenario) \
                        + FIGURES["readiness_s"].at(scenario)
                    if job_done[target] + copy_and_load > ready:
                        ready = job_done[target] + copy_and_load
                        finish_after, finish_via = target, how
            pods_ready[urn] = ready
            if _awaited(r):
                finish = ready
            else:
                finish, finish_after, finish_via = start + seconds, after, via
        elif r.type == "kubernetes:core/v1:Service" and waits.get(urn):
            figure = "service_settle_s"
            finish = start + FIGURES["service_settle_s"].at(scenario)
            for target, how in waits[urn]:
                if pods_ready.get(target, 0.0) > finish:
                    finish, finish_after, finish_via = pods_ready[target], target, how
        timings[urn] = Timing(start, finish, finish_after, finish_via, figure)
        budget = _timeout(r)
        if budget is not None and finish - start > budget:
            timeouts.append(f"{r.type} {r.name}: waits {_clock(finish - start)} from its creation, over its "
                            f"{_clock(budget)} timeout")
    path = _critical_path(timings)
    return UpPlan(deployment, timings, path, cold, defaulted, timeouts, edges)


def _timeout(r: Registration) -> float | None:
    """The create timeout: customTimeouts, else pulumi-kubernetes' default for the awaited kinds."""
    if not _awaited(r):
        return None
    if "create" in r.custom_timeouts:
        text = r.custom_timeouts["create"]
        units = {"s": 1, "m": 60, "h": 3600}
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else None
    return DEFAULT_TIMEOUTS.get(r.type)


def _critical_path(timings: dict[str, Timing]) -> list[str]:
    """From the last resource to finish, back through what each waited for last."""
    urn: str | None = max(timings, key=lambda u: timings[u].finish)
    path: list[str] = []
    while urn is not None and urn not in path:
        path.append(urn)
        urn = timings[urn].after
    return path[::-1]


# --- printing --------------------------------------------------------------------------------------


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def describe(plan: ColdStart) -> list[str]:
    burst = "burst" if plan.burst else "baseline"
    lines = [f"{plan.instance_type}, {plan.start}, {plan.design.name} design ({plan.scenario} figures, network and "
             f"EBS at {burst})"]
    clock = 0.0
    for item in plan.steps:
        clock += item.seconds
        if isinstance(item, Step):
            lines.append(f"  {item.name:<52} {item.seconds:6.0f} s  {_clock(clock):>6}   {item.how}")
            continue
        lines.append(f"  {'in parallel: ' + item.name:<52} {item.seconds:6.0f} s  "
                     f"{_clock(clock):>6}   the longest counts: {item.critical}")
        for name, steps in item.branches:
            total = sum(s.seconds for s in steps)
            lines.append(f"    | {name:<48} {total:6.0f} s")
            for s in steps:
                lines.append(f"    |   {s.name:<46} {s.seconds:6.0f} s           {s.how}")
        if item.floor:
            lines.append(f"    | {item.floor.name:<48} {item.floor.seconds:6.0f} s           {item.floor.how}")
    lines.append(f"  {'total':<52} {plan.total:6.0f} s  {_clock(plan.total):>6}")
    return lines


@dataclass
class Row:
    design: str
    instance_type: str
    start: str
    burst: bool
    seconds: dict[str, float]
    target: float | None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.seconds["typical"] <= self.target


def rows(instance_types: list[str]) -> list[Row]:
    table = []
    for design in DESIGNS:
        for instance_type in instance_types:
            for warm in (False, True):
                for burst in ((False, True) if design == "new" else (False,)):
                    seconds = {s: cold_start(instance_type, design, warm=warm, scenario=s, burst=burst).total
                               for s in SCENARIOS}
                    start = "warm restart" if warm else "new node"
                    checked = design == "new" and not burst
                    table.append(Row(DESIGNS[design].name, instance_type, start, burst, seconds,
                                     TARGETS[start] if checked else None))
    return table


def summary(table: list[Row]) -> list[str]:
    lines = [f"  {'design':<12} {'instance':<13} {'start':<13} {'links':<9} {'typical':>7}  {'low-high':>11}  "
             f"{'target':>6}  verdict"]
    for row in table:
        verdict = "" if row.met is None else ("met" if row.met else "MISSED")
        target = _clock(row.target) if row.target else ""
        lines.append(f"  {row.design:<12} {row.instance_type:<13} {row.start:<13} "
                     f"{'burst' if row.burst else 'baseline':<9} {_clock(row.seconds['typical']):>7}  "
                     f"{_clock(row.seconds['low']) + '-' + _clock(row.seconds['high']):>11}  {target:>6}  {verdict}")
    return lines


def describe_up(plan: UpPlan, high: UpPlan) -> list[str]:
    by_urn = {r.urn: r for r in plan.deployment.resources}
    lines = [f"  {'resource':<58} {'starts':>7} {'takes':>7} {'done':>7}  figure / why it waited"]
    for urn in plan.path:
        r, t = by_urn[urn], plan.timings[urn]
        reason = f"{t.figure}" + (f"; {t.via} {by_urn[t.after].name}" if t.after and t.via not in
                                  ("dependency", "provider", "parent", "start") else "")
        lines.append(f"  {r.type.split(':')[-1] + ' ' + r.name:<58} {_clock(t.start):>7} "
                     f"{_clock(t.finish - t.start):>7} {_clock(t.finish):>7}  {reason}")
    verdict = "met" if plan.total <= PULUMI_UP_TARGET else "MISSED"
    lines.append(f"  total {_clock(plan.total)} (target under {_clock(PULUMI_UP_TARGET)}: {verdict}); at the high end "
                 f"of every range {_clock(high.total)}")
    for urn, cold in plan.cold.items():
        lines.append(f"  the Deployment {by_urn[urn].name} waits for a cold start on {cold.instance_type} "
                     f"({cold.design.copy} copy, pre-pull {'on' if cold.design.prepull else 'off'}): "
                     f"{_clock(cold.total)}")
    if plan.defaulted:
        listed = ", ".join(f"{t} x{n}" for t, n in sorted(plan.defaulted.items()))
        lines.append(f"  types with no figure ({FIGURES['default_s'].typical:.0f} s each): {listed}")
    for warning in plan.timeouts:
        lines.append(f"  WOULD TIME OUT: {warning}")
    return lines


def figure_table() -> list[str]:
    lines = []
    for key, fig in FIGURES.items():
        value = (f"{fig.typical / GB:.2f} GB" if key.endswith("_bytes") else
                 f"{fig.typical:.0f} s" + (f" ({fig.low:.0f}-{fig.high:.0f})" if fig.low is not None else ""))
        lines.append(f"  {key:<22} {value:<16} {fig.source}")
    for name, inst in INSTANCES.items():
        lines.append(f"  {name:<22} network {inst.network_gbps} Gbps (up to {inst.network_peak_gbps}), EBS "
                     f"{inst.ebs_mbps} MB/s (up to {inst.ebs_peak_mbps}), instance store "
                     f"{'yes' if inst.instance_store else 'none'}")
    lines += [f"  instances: {INSTANCE_SOURCE}", f"  burst: {BURST_SOURCE}", f"  disk: {DISK_NOTE}",
              f"  gp3 root volume: {GP3_ROOT_MBPS:.0f} MB/s provisioned (components/neuron_capacity.py)"]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart_model", description=__doc__.split("\n")[0],
                                     epilog="Exit status: 0 every checked target met, 1 a target missed, 2 usage.")
    parser.add_argument("--stack", default="dev", help="stack whose program to run offline for (c) (default: dev)")
    parser.add_argument("--instance-type", action="append", choices=sorted(INSTANCES), dest="instance_types",
                        help="model and check only this type (repeatable; default: both)")
    parser.add_argument("--brief", action="store_true", help="only the summary tables, no stage-by-stage detail")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = cli.load_stack(args.stack)
    except cli.UsageError as error:
        return cli.usage_error(error)
    instance_types = args.instance_types or list(INSTANCES)
    table = rows(instance_types)
    deployment = run_program(stack=args.stack)
    up_instance = next(t for t in config.neuron.instance_types if t in INSTANCES) \
        if any(t in INSTANCES for t in config.neuron.instance_types) else instance_types[0]
    up, up_high = pulumi_up(deployment, up_instance), pulumi_up(deployment, up_instance, "high")
    # A predicted timeout fails `pulumi up` outright: it counts as a missed target.
    missed = [r for r in table if r.met is False] + ([None] if up.total > PULUMI_UP_TARGET else []) + up.timeouts
    if args.json:
        by_urn = {r.urn: r for r in deployment.resources}
        print(json.dumps({
            "ok": not missed,
            "coldStart": [{"design": r.design, "instanceType": r.instance_type, "start": r.start,
                           "burst": r.burst, "seconds": r.seconds, "targetSeconds": r.target, "met": r.met}
                          for r in table],
            "pulumiUp": {"stack": args.stack, "instanceType": up_instance, "seconds": up.total,
                         "highSeconds": up_high.total, "targetSeconds": PULUMI_UP_TARGET,
                         "path": [{"type": by_urn[u].type, "name": by_urn[u].name, "start": up.timings[u].start,
                                   "finish": up.timings[u].finish, "figure": up.timings[u].figure,
                                   "via": up.timings[u].via} for u in up.path],
                         "defaultedTypes": up.defaulted, "timeouts": up.timeouts},
        }, indent=2))
        return cli.EXIT_PROBLEM if missed else cli.EXIT_OK
    if not args.brief:
        print("Figures (seconds unless stated; low-high where the source gives a range):")
        print("\n".join(figure_table()))
        for design in DESIGNS:
            for instance_type in instance_types:
                for warm in (False, True):
                    print()
                    print("\n".join(describe(cold_start(instance_type, design, warm=warm))))
    print("\n(a) new node and (b) warm restart, modeled (m:ss; targets checked for the new design at baseline links):")
    print("\n".join(summary(table)))
    print(f"\n(c) `pulumi up` of stack '{args.stack}' from nothing, critical path ({len(deployment.resources)} "
          f"resources; the model's node: {up_instance}):")
    print("\n".join(describe_up(up, up_high)))
    print(f"\n{'Every target met' if not missed else f'{len(missed)} target(s) missed'}.")
    return cli.EXIT_PROBLEM if missed else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
