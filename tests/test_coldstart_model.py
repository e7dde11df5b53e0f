"""benchmarks/coldstart_model.py: the structure of the model, not its numbers (targets belong to the script).

The figures are the script's; these tests check that the model is built the way it says: overlapping stages
take their longest branch, a warm restart launches nothing, bandwidths come from EC2's own data, and the
`pulumi up` critical path is a real path through what the program registers.
"""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks import coldstart_model as model

COPY = "copy 15 GB from S3 (CRT)"
LAUNCH = ("Karpenter batches the pending pod", "EC2 launch; the node joins, Ready")


@pytest.fixture(scope="module")
def plan(dev_deployment):
    return model.pulumi_up(dev_deployment, "trn1.2xlarge")


# --- (a), (b) --------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_type", sorted(model.INSTANCES))
@pytest.mark.parametrize("design", sorted(model.DESIGNS))
def test_a_warm_restart_launches_no_node_and_pulls_nothing(instance_type, design):
    warm = model.cold_start(instance_type, design, warm=True)
    new = model.cold_start(instance_type, design, warm=False)

    assert not set(LAUNCH) & set(warm.names())
    assert set(LAUNCH) <= set(new.names())
    assert "vLLM image already on the node" in warm.names()
    assert not any(isinstance(step, model.Parallel) for step in warm.steps)


@pytest.mark.parametrize("scenario", model.SCENARIOS)
@pytest.mark.parametrize("burst", [False, True])
def test_inf2_copies_slower_than_trn1(scenario, burst):
    """No instance store and a lower EBS and network baseline: the copy from S3 can only be slower."""
    for warm in (False, True):
        inf2 = model.cold_start("inf2.xlarge", "new", warm=warm, scenario=scenario, burst=burst).step(COPY)
        trn1 = model.cold_start("trn1.2xlarge", "new", warm=warm, scenario=scenario, burst=burst).step(COPY)
        assert inf2.seconds >= trn1.seconds
    baseline = model.cold_start("inf2.xlarge", "new", warm=True)
    assert baseline.step(COPY).seconds > model.cold_start("trn1.2xlarge", "new", warm=True).step(COPY).seconds


@pytest.mark.parametrize("instance_type", sorted(model.INSTANCES))
@pytest.mark.parametrize("scenario", model.SCENARIOS)
def test_overlapping_stages_take_their_longest_branch(instance_type, scenario):
    start = model.cold_start(instance_type, "new", warm=False, scenario=scenario)
    (overlap,) = [s for s in start.steps if isinstance(s, model.Parallel)]
    branches = {name: sum(s.seconds for s in steps) for name, steps in overlap.branches}

    assert set(branches) == {"pre-pull DaemonSet", "model pod"}
    assert overlap.seconds == max([*branches.values(), overlap.floor.seconds])
    # The overlap saves time against doing the same stages one after the other.
    assert overlap.seconds < sum(branches.values())
    assert start.total == pytest.approx(sum(s.seconds for s in start.steps))


def test_without_pre_pull_the_image_comes_after_the_copy():
    old = model.cold_start("trn1.2xlarge", "old", warm=False)
    names = old.names()

    assert not any(isinstance(s, model.Parallel) for s in old.steps)
    assert names.index("download 15 GB from Hugging Face") < names.index("pull the 10 GB vLLM image") \
        < names.index("vLLM loads the model onto 2 NeuronCores")


@pytest.mark.parametrize("instance_type", sorted(model.INSTANCES))
def test_burst_only_widens_the_links(instance_type):
    instance = model.INSTANCES[instance_type]
    base, burst = model.bandwidths(instance, burst=False), model.bandwidths(instance, burst=True)
    assert burst[0] > base[0]
    if instance.instance_store:
        assert burst[1] is None and base[1] is None
    else:
        assert burst[1] > base[1]
    for warm in (False, True):
        assert model.cold_start(instance_type, "new", warm=warm, burst=True).total <= \
            model.cold_start(instance_type, "new", warm=warm).total
    if not instance.instance_store:
        assert model.cold_start(instance_type, "new", warm=True, burst=True).step(COPY).seconds < \
            model.cold_start(instance_type, "new", warm=True).step(COPY).seconds


def test_transfers_never_beat_the_node_link():
    for instance_type, instance in model.INSTANCES.items():
        network, disk = model.bandwidths(instance, burst=False)
        link = min(network, disk) if disk else network
        start = model.cold_start(instance_type, "new", warm=False, scenario="low")
        assert start.step(COPY).seconds >= model.FIGURES["model_bytes"].typical / link
        assert start.step("pull the 10 GB vLLM image").seconds >= model.FIGURES["image_bytes"].typical / link


def test_instance_bandwidths_are_ec2s():
    """The table's instance figures against DescribeInstanceTypes as moto records it from EC2."""
    # Found without importing moto, which is slow to import.
    (moto,) = importlib.util.find_spec("moto").submodule_search_locations
    data = json.loads(gzip.decompress((Path(moto) / "ec2" / "resources" / "instance_types.json.gz").read_bytes()))
    for name, ours in model.INSTANCES.items():
        theirs = data[name]
        (card,) = theirs["NetworkInfo"]["NetworkCards"]
        ebs = theirs["EbsInfo"]["EbsOptimizedInfo"]
        assert (ours.network_gbps, ours.network_peak_gbps) == (card["BaselineBandwidthInGbps"],
                                                               card["PeakBandwidthInGbps"])
        assert (ours.ebs_mbps, ours.ebs_peak_mbps) == (ebs["BaselineThroughputInMBps"], ebs["MaximumThroughputInMBps"])
        assert ours.instance_store == ("InstanceStorageInfo" in theirs)


def test_every_figure_has_a_source_and_ordered_range():
    for key, figure in model.FIGURES.items():
        assert figure.source, key
        assert figure.estimate == figure.source.startswith("estimate"), key
        low = figure.low if figure.low is not None else figure.typical
        high = figure.high if figure.high is not None else figure.typical
        assert low <= figure.typical <= high, key


# --- (c) -------------------------------------------------------------------------------------------


def test_the_critical_path_is_a_path_of_the_graph(plan, dev_deployment):
    waits = model._in_cluster_waits(dev_deployment)
    by_urn = {r.urn: r for r in dev_deployment.resources}

    assert plan.path, "empty path"
    first = plan.timings[plan.path[0]]
    assert (first.after, first.start) == (None, 0.0)
    for before, after in zip(plan.path, plan.path[1:]):
        links = {urn for urn, _ in plan.edges[after]} | {urn for urn, _ in waits.get(after, [])}
        assert before in links, (by_urn[before].name, by_urn[after].name)
        assert plan.timings[after].start >= plan.timings[before].finish or \
            plan.timings[after].finish >= plan.timings[before].finish
    # It ends with what finishes last: the whole `pulumi up`.
    assert plan.timings[plan.path[-1]].finish == plan.total


def test_edges_are_dependencies_providers_and_custom_parents_only(plan, dev_deployment):
    by_urn = {r.urn: r for r in dev_deployment.resources}
    for urn, edges in plan.edges.items():
        r = by_urn[urn]
        for other, via in edges:
            if via == "dependency":
                assert other in r.dependencies
            elif via == "provider":
                assert r.provider.startswith(other + "::")
            else:
                assert (via, other, by_urn[other].custom) == ("parent", r.parent, True)
        # A component parent's dependencies never make its children wait.
        parent = by_urn.get(r.parent)
        if parent is not None and not parent.custom:
            assert {other for other, _ in edges} & set(parent.dependencies) <= set(r.dependencies)


def test_kubernetes_objects_wait_for_their_provider(plan, dev_deployment):
    """The provider needs the cluster's kubeconfig: nothing in the cluster is created before the cluster."""
    (cluster,) = dev_deployment.of_type("eks:index:Cluster")
    for r in dev_deployment.resources:
        if r.type.startswith("kubernetes:"):
            assert (r.provider.rsplit("::", 1)[0], "provider") in plan.edges[r.urn], r.name
            assert plan.timings[r.urn].start >= plan.timings[cluster.urn].finish, r.name


def test_every_resource_waits_for_what_it_depends_on(plan):
    for urn, edges in plan.edges.items():
        for other, _ in edges:
            assert plan.timings[urn].start >= plan.timings[other].finish


def test_the_model_deployment_waits_for_a_new_node_cold_start(plan, dev_deployment):
    (deployment,) = [r for r in dev_deployment.of_type("kubernetes:apps/v1:Deployment") if r.name == "mistral"]
    timing = plan.timings[deployment.urn]
    cold = plan.cold[deployment.urn]

    assert not cold.warm and cold.instance_type == "trn1.2xlarge"
    assert timing.finish - timing.start >= cold.total
    # The rendered stack is the new design: copy from S3, the image pre-pulled.
    assert (cold.design.copy, cold.design.prepull) == ("s3", True)


def test_in_cluster_waits_are_kept(plan, dev_deployment):
    """A Service with a selector is ready only with its pods; the sync Job's pods need the system nodes."""
    by_name = {(r.type, r.name): r for r in dev_deployment.resources}
    service = by_name[("kubernetes:core/v1:Service", "mistral-service")]
    deployment = by_name[("kubernetes:apps/v1:Deployment", "mistral")]
    job = by_name[("kubernetes:batch/v1:Job", "mistral-sync-job")]
    (group,) = dev_deployment.of_type("aws:eks/nodeGroup:NodeGroup")

    assert plan.timings[service.urn].finish >= plan.timings[deployment.urn].finish
    assert plan.timings[job.urn].finish >= plan.timings[group.urn].finish
    assert plan.timings[deployment.urn].finish >= plan.timings[job.urn].finish


def test_timeouts_are_flagged_where_the_wait_exceeds_the_budget(plan, dev_deployment):
    for r in dev_deployment.resources:
        budget = model._timeout(r)
        waits = plan.timings[r.urn].finish - plan.timings[r.urn].start
        flagged = any(t.startswith(f"{r.type} {r.name}:") for t in plan.timeouts)
        assert flagged == (budget is not None and waits > budget), r.name


def test_a_deployment_pulumi_does_not_wait_for(dev_deployment):
    """rolloutTimeoutMinutes 0 renders pulumi.com/skipAwait: Pulumi moves on, the Service still waits."""
    skipped = copy.deepcopy(dev_deployment)
    (deployment,) = [r for r in skipped.of_type("kubernetes:apps/v1:Deployment") if r.name == "mistral"]
    deployment.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] = "true"
    (service,) = skipped.of_type("kubernetes:core/v1:Service")

    plan = model.pulumi_up(skipped, "trn1.2xlarge")

    timing = plan.timings[deployment.urn]
    assert timing.finish - timing.start == model.FIGURES["k8s_object_s"].typical
    assert plan.timings[service.urn].finish >= timing.start + plan.cold[deployment.urn].total


def test_unknown_types_get_the_default_and_are_listed(plan, dev_deployment):
    listed = set(plan.defaulted)
    for r in dev_deployment.resources:
        seconds, figure = model._type_seconds(r, "typical")
        assert (figure == "default_s") == (r.type in listed)
    assert all(not t.startswith(("kubernetes:", "aws:iam/", "aws:ec2/")) for t in listed)


def test_the_script_prints_json(dev_deployment, monkeypatch, capsys):
    monkeypatch.setattr(model, "run_program", lambda stack: dev_deployment)

    code = model.main(["--json", "--instance-type", "trn1.2xlarge"])

    result = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and result["ok"] == (code == 0)
    assert {(r["design"], r["start"], r["burst"]) for r in result["coldStart"]} == {
        ("old (today)", "new node", False), ("old (today)", "warm restart", False),
        ("new", "new node", False), ("new", "new node", True), ("new", "warm restart", False),
        ("new", "warm restart", True)}
    assert all(r["instanceType"] == "trn1.2xlarge" for r in result["coldStart"])
    up = result["pulumiUp"]
    assert set(up) == {"stack", "instanceType", "seconds", "highSeconds", "targetSeconds", "path", "defaultedTypes",
                       "timeouts"}
    assert up["path"][-1]["finish"] == up["seconds"] <= up["highSeconds"]
