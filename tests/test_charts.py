"""What the charts really install: every release rendered by `helm template` with the program's values
(tools.render), for the dev stack and a non-default one (tests/stacks.py).

Every rendered object validates at the stack's Kubernetes version; the Karpenter controller lands on the
system nodes and only there, with our region and resources; the Neuron device plugin lands on every
instance type the NodePools may launch and tolerates their taint.

The neuron chart source is a reconstruction (../shared/charts/PROVENANCE-neuron.md): the templates that
render with our values are the exact 1.5.0 files, but whether 1.5.0 also shipped duplicate flat templates is
unresolved; the single-DaemonSet test below is where such a difference would show.
"""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components.config import PROJECT
from components.karpenter import RELEASE_NAME as KARPENTER_RELEASE
from components.neuron_capacity import DEVICE_PLUGIN_RELEASE
from tests import stacks
from tests.scheduling import Node, admits, affinity_admits, untolerated
from tests.chart_values import template_text, unknown_keys
from tests.schemas import CRD_FILES, KARPENTER_SCHEMAS
from tools import render

pytestmark = pytest.mark.parametrize("stack", stacks.STACKS)


def chart_objects(stack: str) -> list[tuple[str, dict]]:
    return [(release.spec.name, obj.manifest) for release in stacks.releases(stack) for obj in release.objects]


def one(stack: str, release: str, kind: str) -> dict:
    (found,) = [o.manifest for o in stacks.release(stack, release).objects if o.manifest["kind"] == kind]
    return found


def custom_resource_schemas(stack: str) -> dict[tuple[str, str], dict]:
    """The schemas of the CRDs the releases install, by (apiVersion, kind)."""
    schemas = {}
    for _, obj in chart_objects(stack):
        if obj["kind"] == "CustomResourceDefinition":
            for version in obj["spec"]["versions"]:
                key = (f"{obj['spec']['group']}/{version['name']}", obj["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_every_release_renders(stack):
    releases = stacks.releases(stack)
    assert [r.spec.name for r in releases] == [r.inputs["name"] for r in stacks.deployment(stack).helm_releases()]
    for release in releases:
        assert release.objects, f"release {release.spec.name} renders nothing"
        assert f"--kube-version {stacks.kubernetes_version(stack)}" in " ".join(release.command)


def test_every_chart_object_validates_at_the_stacks_kubernetes_version(stack):
    version = f"{stacks.kubernetes_version(stack)}.0"
    crds = custom_resource_schemas(stack)
    problems = []
    for release, obj in chart_objects(stack):
        where = f"{release}: {obj['kind']} {obj['metadata']['name']}"
        crd_schema = crds.get((obj["apiVersion"], obj["kind"]))
        if crd_schema is not None:  # a custom resource of a CRD the releases install
            problems += [f"{where}: {e.message}" for e in jsonschema.Draft202012Validator(crd_schema).iter_errors(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {error}")
    assert problems == []


def test_strict_validation_catches_an_unknown_field(stack):
    deployment = copy.deepcopy(one(stack, KARPENTER_RELEASE, "Deployment"))
    deployment["spec"]["template"]["spec"]["nodeSelectors"] = {"a": "b"}  # a typo the API server would drop
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, f"{stacks.kubernetes_version(stack)}.0", strict=True)


def test_the_karpenter_crds_installed_are_the_ones_the_schema_tests_use(stack):
    installed = {(o["spec"]["group"], o["spec"]["names"]["kind"]): o
                 for _, o in chart_objects(stack) if o["kind"] == "CustomResourceDefinition"}
    for (api_version, kind), file in CRD_FILES.items():  # a file name, or a path (KARPENTER_SCHEMAS / path == path)
        group = api_version.split("/")[0]
        if group.startswith("karpenter") or (group, kind) in installed:
            reference = yaml.safe_load((KARPENTER_SCHEMAS / file).read_text())
            assert installed[(group, kind)]["spec"] == reference["spec"], kind


def test_karpenter_runs_on_the_system_nodes_only(stack):
    deployment = stacks.deployment(stack)
    pod = one(stack, KARPENTER_RELEASE, "Deployment")["spec"]["template"]["spec"]
    (group,) = deployment.of_type("aws:eks/nodeGroup:NodeGroup")
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", **group.inputs["labels"]}
    values = stacks.release(stack, KARPENTER_RELEASE).spec.values
    assert pod["tolerations"] == values["tolerations"] == [
        {"key": t["key"], "operator": "Exists", "effect": "NoSchedule"} for t in group.inputs["taints"]]
    for node in stacks.system_nodes(deployment):
        assert admits(pod, node), node
        assert not admits({**pod, "tolerations": []}, node), "the system taint keeps other pods off"
    for node in stacks.karpenter_nodes(deployment):
        assert not admits(pod, node), f"Karpenter could run on {node.name}, a node it manages"
        assert untolerated(pod, node) == list(node.taints), f"Karpenter tolerates the taint of {node.name}"


def test_karpenter_gets_the_stacks_region_settings_and_resources(stack):
    values = stacks.release(stack, KARPENTER_RELEASE).spec.values
    (container,) = one(stack, KARPENTER_RELEASE, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_REGION"] == stacks.region(stack)
    assert container["resources"] == values["controller"]["resources"]
    settings = values["settings"]
    queue = stacks.deployment(stack).one("aws:sqs/queue:Queue")
    assert (env["CLUSTER_NAME"], env["INTERRUPTION_QUEUE"]) == (settings["clusterName"], queue.outputs["name"])
    assert env["CLUSTER_ENDPOINT"] == settings["clusterEndpoint"]
    assert settings["clusterEndpoint"].startswith("https://") and settings["clusterEndpoint"].endswith(
        f".{stacks.region(stack)}.eks.amazonaws.com")


def test_the_device_plugin_runs_on_every_instance_type_the_node_pools_launch(stack):
    (daemonset,) = [o for _, o in chart_objects(stack) if o["kind"] == "DaemonSet"
                    and o["metadata"]["name"] == "neuron-device-plugin"]
    pod = daemonset["spec"]["template"]["spec"]
    nodes = stacks.karpenter_nodes(stacks.deployment(stack))
    configured = {n.labels[stacks.INSTANCE_TYPE] for n in nodes}
    assert configured >= set(stacks.config(stack)[f"{PROJECT}:neuron"]["instanceTypes"])
    for node in nodes:
        assert node.taints, f"{node.name}: Neuron nodes carry the Neuron taint"
        assert untolerated(pod, node) == [], node.name
        assert affinity_admits(pod, node), node.name


def test_the_device_plugin_affinity_is_a_real_filter(stack):
    """Negative controls: the evaluator rejects what the chart's affinity and tolerations reject."""
    (daemonset,) = [o for _, o in chart_objects(stack) if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    neuron_node = stacks.karpenter_nodes(stacks.deployment(stack))[0]
    system_node = stacks.system_nodes(stacks.deployment(stack))[0]
    assert not affinity_admits(pod, system_node)  # m6i.large: not a Neuron type
    other_type = Node("other", {**neuron_node.labels, stacks.INSTANCE_TYPE: "p5.48xlarge"}, neuron_node.taints)
    assert not affinity_admits(pod, other_type)
    fargate = Node("fargate", {**neuron_node.labels, "eks.amazonaws.com/compute-type": "fargate"})
    assert not affinity_admits(pod, fargate)
    assert untolerated({**pod, "tolerations": []}, neuron_node) == list(neuron_node.taints)
    no_term = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{}]}}}}
    assert not affinity_admits(no_term, neuron_node)  # an empty term matches no node


def test_the_neuron_chart_renders_each_device_plugin_object_once(stack):
    """With the program's values only the device plugin renders, once (PROVENANCE-neuron.md, UNRESOLVED)."""
    kinds = sorted(o.manifest["kind"] for o in stacks.release(stack, DEVICE_PLUGIN_RELEASE).objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]


def test_every_value_the_program_sets_is_a_key_of_its_chart(stack):
    """Helm ignores a misspelt value without a word: every key must be one the chart's values.yaml has."""
    checked = set()
    for release in stacks.releases(stack):
        chart = render.local_chart(release.spec)
        assert chart is not None, f"{release.spec.name}: no chart source in ../shared/charts"
        defaults = yaml.safe_load((chart / "values.yaml").read_text())
        assert unknown_keys(release.spec.values, defaults, templates=template_text(chart)) == [], release.spec.name
        checked.add(release.spec.name)
    assert {"karpenter", "neuron-device-plugin", "kube-state-metrics", "grafana"} <= checked
    if stack == "perf":
        assert "keda" in checked


def test_the_values_check_catches_a_misspelt_key(stack):
    grafana = stacks.release(stack, "grafana")
    chart = render.local_chart(grafana.spec)
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    misspelt = {**grafana.spec.values, "podAnnotation": {}, "admin": {"existingSecrett": "x"}}
    assert sorted(unknown_keys(misspelt, defaults, templates=template_text(chart))) == ["admin.existingSecrett",
                                                                                     "podAnnotation"]
