"""tools.coldstart on recorded API objects (tests/data/coldstart/), and through fake `kubectl` and `pulumi`."""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from components.config import PROJECT_DIR
from tests.schemas import core_problems, pruned_fields
from tools import cli, coldstart

DATA = Path(__file__).parent / "data" / "coldstart"
RECORDINGS = sorted(p.name for p in DATA.iterdir() if p.is_dir())
NODECLAIM_CRD = PROJECT_DIR.parent / "shared" / "charts" / "karpenter-1.14.1" / "crds" / "karpenter.sh_nodeclaims.yaml"
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "trainium-vllm-dev"}]})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = coldstart.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def stages(result: dict[str, Any], pod: int = 0) -> dict[str, dict[str, Any]]:
    return {s["stage"]: s for s in result["pods"][pod]["stages"]}


def copy_recording(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


def edit(directory: Path, file: str, change) -> None:
    """Apply `change` to the items of a recorded List and save it."""
    path = directory / f"{file}.json"
    document = json.loads(path.read_text())
    document["items"] = change(document["items"])
    path.write_text(json.dumps(document))


# --- the recordings are real API shapes ------------------------------------------------------------


def _recorded(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{case}/{item['metadata']['name']}", item) for case in RECORDINGS
            for file in sorted((DATA / case).glob("*.json")) for item in json.loads(file.read_text())["items"]
            if item["kind"] == kind]


@pytest.mark.parametrize(("name", "obj"), [*_recorded("Pod"), *_recorded("Node"), *_recorded("Event")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_recorded_core_objects_match_the_kubernetes_schema(name, obj):
    assert core_problems(obj) == []


@pytest.mark.parametrize(("name", "obj"), _recorded("NodeClaim"), ids=lambda v: v if isinstance(v, str) else "")
def test_recorded_nodeclaims_match_the_karpenter_crd(name, obj):
    crd = yaml.safe_load(NODECLAIM_CRD.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = served["schema"]["openAPIV3Schema"]
    assert [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(obj)] == []
    assert pruned_fields(obj, schema) == []


def test_the_tool_reads_what_the_rendered_deployment_names(dev_deployment):
    """Names the tool looks for are the ones the program renders: labels, containers, the pre-pull DaemonSet."""
    (deployment,) = [d for d in dev_deployment.of_type("kubernetes:apps/v1:Deployment") if d.name == "mistral"]
    template = deployment.inputs["spec"]["template"]
    assert template["metadata"]["labels"][coldstart.INSTANCE_LABEL] == "mistral"
    assert [c["name"] for c in template["spec"]["initContainers"]] == [coldstart.INIT_CONTAINER]
    assert [c["name"] for c in template["spec"]["containers"]] == [coldstart.SERVER_CONTAINER]
    (prepull,) = [d for d in dev_deployment.of_type("kubernetes:apps/v1:DaemonSet")
                  if d.inputs["metadata"]["name"] == coldstart.PREPULL_DAEMONSET]
    assert prepull.inputs["metadata"]["namespace"] == deployment.inputs["metadata"]["namespace"]
    assert prepull.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == \
        template["spec"]["containers"][0]["image"]


# --- timelines of the recordings -------------------------------------------------------------------

# stage: (status, seconds since the pod was created, duration, a piece of the source)
EXPECTED = {
    "cold-trn1": {
        "pod created": ("done", 0, None, "pod mistral-6d8f7c9b54-q7xkz"),
        "capacity launched": ("done", 5, 5, "NodeClaim neuron-7xk2p Launched"),
        "node ready": ("done", 75, 70, "node ip-10-0-130-41.us-west-2.compute.internal Ready"),
        "image pulled": ("done", 125, 48.912, "pre-pull pod vllm-image-prepull-4x8rt: Pulled event"),
        "model copied": ("done", 134, 44, "init container model-download finished"),
        "server ready": ("done", 260, 125, "pod Ready"),
    },
    "warm-restart": {
        "pod created": ("done", 0, None, "pod mistral-6d8f7c9b54-m2v9s"),
        "capacity launched": ("existing", -8995, None, "NodeClaim neuron-7xk2p Launched"),
        "node ready": ("existing", -8925, None, "node ip-10-0-130-41.us-west-2.compute.internal Ready"),
        # The pre-pull pod has run the image since the node came up; its events expired long ago.
        "image pulled": ("existing", -8874, None, "pre-pull pod vllm-image-prepull-4x8rt started (from status; "
                                                  "events expired)"),
        "model copied": ("done", 41, 38, "init container model-download finished"),
        "server ready": ("done", 160, 118, "pod Ready"),
    },
    "events-expired": {
        "pod created": ("done", 0, None, "pod mistral-6d8f7c9b54-zt5wd"),
        "capacity launched": ("done", 4, 4, "NodeClaim neuron-q4jzc Launched"),
        "node ready": ("done", 78, 74, "node ip-10-0-150-9.us-west-2.compute.internal Ready"),
        "image pulled": ("done", 132, None, "pre-pull pod vllm-image-prepull-k7d2n started (from status; events "
                                            "expired)"),
        "model copied": ("done", 139, 47, "init container model-download finished"),
        "server ready": ("done", 268, 128, "pod Ready"),
    },
    "inf2-fallback": {
        "pod created": ("done", 0, None, "pod mistral-6d8f7c9b54-w8c3f"),
        "capacity launched": ("done", 12, 12, "NodeClaim neuron-inf2-h8r4m Launched"),
        "node ready": ("done", 92, 80, "node ip-10-0-33-207.us-west-2.compute.internal Ready"),
        "image pulled": ("done", 178, 84.518, "pre-pull pod vllm-image-prepull-p9v6b: Pulled event"),
        "model copied": ("done", 214, 107, "init container model-download finished"),
        # Timed from the server's last start: it was OOM-killed once while loading.
        "server ready": ("done", 532, 135, "vllm restarted 1 time(s)"),
    },
    "pending": {
        "pod created": ("done", 0, None, "pod mistral-6d8f7c9b54-b4n7k"),
        "capacity launched": ("done", 6, 6, "NodeClaim neuron-p2x9d Launched"),
        "node ready": ("pending", None, None, "NodeClaim neuron-p2x9d has no node yet"),
        "image pulled": ("pending", None, None, "no node yet"),
        "model copied": ("pending", None, None, "has not started"),
        "server ready": ("pending", None, None, "pod not Ready"),
    },
}
HEADERS = {
    "cold-trn1": ("ip-10-0-130-41.us-west-2.compute.internal", "neuron-7xk2p", "trn1.2xlarge", "neuron", False, 260),
    "warm-restart": ("ip-10-0-130-41.us-west-2.compute.internal", "neuron-7xk2p", "trn1.2xlarge", "neuron", True, 160),
    "events-expired": ("ip-10-0-150-9.us-west-2.compute.internal", "neuron-q4jzc", "trn1.2xlarge", "neuron", False,
                       268),
    "inf2-fallback": ("ip-10-0-33-207.us-west-2.compute.internal", "neuron-inf2-h8r4m", "inf2.xlarge", "neuron-inf2",
                      False, 532),
    "pending": (None, "neuron-p2x9d", "trn1.2xlarge", "neuron", False, None),
}


def test_every_recording_has_expectations():
    assert set(RECORDINGS) == set(EXPECTED) == set(HEADERS)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_stages_and_durations_of_each_recording(case, capsys):
    code, result = run(capsys, "--input", str(DATA / case))

    assert code == 0
    (pod,) = result["pods"]
    assert (pod["node"], pod["nodeClaim"], pod["instanceType"], pod["nodePool"], pod["warm"],
            pod["servingAfterSeconds"]) == HEADERS[case]
    got = stages(result)
    assert list(got) == list(EXPECTED[case])
    for name, (status, since, duration, source) in EXPECTED[case].items():
        stage = got[name]
        got_stage = (stage["status"], stage["sinceCreatedSeconds"], stage["durationSeconds"])
        assert got_stage == (status, since, duration), name
        assert source in stage["source"], (name, stage["source"])


def test_json_shape(capsys):
    code, result = run(capsys, "--input", str(DATA / "cold-trn1"))

    assert code == 0
    assert list(result) == ["ok", "stack", "model", "namespace", "pods"]
    assert (result["ok"], result["stack"], result["model"], result["namespace"]) == (True, "dev", "mistral", "vllm")
    (pod,) = result["pods"]
    assert set(pod) == {"pod", "node", "nodeClaim", "instanceType", "nodePool", "warm", "created",
                        "servingAfterSeconds", "stages"}
    assert pod["created"] == "2026-11-20T10:00:00Z"
    for stage in pod["stages"]:
        assert set(stage) == {"stage", "status", "time", "sinceCreatedSeconds", "durationSeconds", "source"}
    assert stages(result)["server ready"]["time"] == "2026-11-20T10:04:20Z"


def test_human_report(capsys):
    code = coldstart.main(["--input", str(DATA / "cold-trn1")])

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == "Start of model 'mistral' in namespace vllm (stack 'dev'), times since the pod was created:"
    assert out[1] == ("pod mistral-6d8f7c9b54-q7xkz on ip-10-0-130-41.us-west-2.compute.internal (trn1.2xlarge, "
                      "NodePool neuron), NodeClaim neuron-7xk2p: new node")
    assert out[3].split() == ["pod", "created", "0:00", "pod", "mistral-6d8f7c9b54-q7xkz"]
    assert out[4].split()[:4] == ["capacity", "launched", "0:05", "0:05"]
    assert out[5].split()[:4] == ["node", "ready", "1:15", "1:10"]
    assert out[6].split()[:4] == ["image", "pulled", "2:05", "0:49"]
    assert out[7].split()[:4] == ["model", "copied", "2:14", "0:44"]
    assert out[8].split()[:4] == ["server", "ready", "4:20", "2:05"]
    assert out[9] == "  serving 4:20 after the pod was created"


def test_warm_restart_is_shown_as_such(capsys):
    coldstart.main(["--input", str(DATA / "warm-restart")])

    out = capsys.readouterr().out
    assert ": restart on an existing node (warm)" in out
    assert "capacity launched  -2:29:55      -  NodeClaim neuron-7xk2p Launched (before the pod was created)" in out


def test_pending_stages_are_shown_as_pending(capsys):
    coldstart.main(["--input", str(DATA / "pending")])

    out = capsys.readouterr().out
    assert "on no node yet (trn1.2xlarge, NodePool neuron), NodeClaim neuron-p2x9d: new node" in out
    assert "  node ready          pending         NodeClaim neuron-p2x9d has no node yet" in out
    assert out.rstrip().endswith("not serving yet")


# --- events, and what is left when they are gone ---------------------------------------------------


def test_prefers_events_to_status_while_they_last(tmp_path, capsys):
    # The pre-pull pod's Pulled event (10:02:05) is the exact time; its container started a second later.
    _, with_events = run(capsys, "--input", str(DATA / "cold-trn1"))
    directory = copy_recording(tmp_path, "cold-trn1")
    edit(directory, "events", lambda items: [])
    _, without = run(capsys, "--input", str(directory))

    assert stages(with_events)["image pulled"]["sinceCreatedSeconds"] == 125
    image = stages(without)["image pulled"]
    assert (image["status"], image["sinceCreatedSeconds"], image["durationSeconds"]) == ("done", 126, None)
    assert image["source"] == "pre-pull pod vllm-image-prepull-4x8rt started (from status; events expired)"
    # Nothing else depended on the events.
    assert [s["sinceCreatedSeconds"] for s in without["pods"][0]["stages"] if s["stage"] != "image pulled"] == \
        [s["sinceCreatedSeconds"] for s in with_events["pods"][0]["stages"] if s["stage"] != "image pulled"]


def test_without_pre_pull_pod_or_events_the_server_start_tells(tmp_path, capsys):
    directory = copy_recording(tmp_path, "events-expired")
    edit(directory, "pods", lambda items: [p for p in items if not p["metadata"]["name"].startswith("vllm-image")])

    _, result = run(capsys, "--input", str(directory))

    image = stages(result)["image pulled"]
    assert (image["sinceCreatedSeconds"], image["source"]) == (140, "container vllm started (from status; events "
                                                                    "expired)")


def test_a_repeated_event_counts_from_its_first_occurrence(tmp_path, capsys):
    """kubelet folds a repeat into the same Event: count goes up, lastTimestamp moves, firstTimestamp stays."""
    directory = copy_recording(tmp_path, "cold-trn1")

    def repeat_pull(items):
        for item in items:
            if item["reason"] == "Pulled" and item["involvedObject"]["name"].startswith("vllm-image-prepull"):
                item.update(count=3, lastTimestamp="2026-11-20T10:40:00Z")
        return items
    edit(directory, "events", repeat_pull)

    _, result = run(capsys, "--input", str(directory))

    assert stages(result)["image pulled"]["time"] == "2026-11-20T10:02:05Z"


def test_an_image_already_on_the_node_took_no_time(tmp_path, capsys):
    """With imagePullPolicy IfNotPresent kubelet says the image is already present instead of pulling."""
    directory = copy_recording(tmp_path, "cold-trn1")
    edit(directory, "pods", lambda items: [p for p in items if not p["metadata"]["name"].startswith("vllm-image")])

    def present(items):
        for item in items:
            if item["reason"] == "Pulled" and item["involvedObject"].get("fieldPath") == "spec.containers{vllm}":
                item["message"] = ('Container image "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1-'
                                   'neuronx-py311-sdk2.26.0-ubuntu22.04" already present on machine')
        return items
    edit(directory, "events", present)

    _, result = run(capsys, "--input", str(directory))

    image = stages(result)["image pulled"]
    assert (image["sinceCreatedSeconds"], image["durationSeconds"]) == (135, 0.0)
    assert image["source"] == "container vllm: image already on the node (Pulled event)"


def test_events_of_an_earlier_pod_with_the_same_name_are_not_its(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")

    def other_uid(items):
        for item in items:
            if item["involvedObject"]["name"].startswith("vllm-image-prepull"):
                item["involvedObject"]["uid"] = "00000000-0000-0000-0000-000000000000"
        return items
    edit(directory, "events", other_uid)

    _, result = run(capsys, "--input", str(directory))

    assert stages(result)["image pulled"]["source"].endswith("started (from status; events expired)")


def test_reads_events_k8s_io_events_too(tmp_path, capsys):
    """The same events in the events.k8s.io/v1 shape: regarding, note, deprecated* timestamps."""
    directory = copy_recording(tmp_path, "cold-trn1")

    def convert(items):
        converted = []
        for item in items:
            new = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": item["metadata"],
                   "regarding": item["involvedObject"], "note": item["message"], "reason": item["reason"],
                   "type": item["type"], "eventTime": item["eventTime"] or item["firstTimestamp"] + ".000000",
                   "reportingController": item["reportingComponent"],
                   "reportingInstance": item["reportingInstance"] or "kubelet"}
            if item.get("firstTimestamp"):
                new.update(deprecatedFirstTimestamp=item["firstTimestamp"],
                           deprecatedLastTimestamp=item["lastTimestamp"], deprecatedCount=item["count"])
            converted.append(new)
        return converted
    edit(directory, "events", convert)

    _, core = run(capsys, "--input", str(DATA / "cold-trn1"))
    _, new_api = run(capsys, "--input", str(directory))

    assert new_api["pods"] == core["pods"]


def test_event_timestamps_of_both_apis():
    core_kubelet = coldstart.Event.of({
        "apiVersion": "v1", "kind": "Event", "metadata": {"creationTimestamp": "2026-11-20T10:00:01Z"},
        "involvedObject": {"kind": "Pod", "namespace": "vllm", "name": "p", "fieldPath": "spec.containers{vllm}"},
        "reason": "Pulled", "message": "m", "firstTimestamp": "2026-11-20T10:00:02Z",
        "lastTimestamp": "2026-11-20T10:09:00Z", "count": 4, "eventTime": None})
    core_scheduler = coldstart.Event.of({
        "apiVersion": "v1", "kind": "Event", "metadata": {"creationTimestamp": "2026-11-20T10:00:03Z"},
        "involvedObject": {"kind": "Pod", "namespace": "vllm", "name": "p"}, "reason": "Scheduled",
        "firstTimestamp": None, "lastTimestamp": None, "eventTime": "2026-11-20T10:00:03.250000Z"})
    series = coldstart.Event.of({
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {},
        "regarding": {"kind": "Pod", "namespace": "vllm", "name": "p", "fieldPath": "spec.initContainers{x}"},
        "reason": "BackOff", "note": "n", "eventTime": "2026-11-20T10:00:04.000000Z",
        "series": {"count": 7, "lastObservedTime": "2026-11-20T10:20:00.000000Z"}})

    assert (core_kubelet.container, str(core_kubelet.first), str(core_kubelet.last), core_kubelet.count) == (
        "vllm", "2026-11-20 10:00:02+00:00", "2026-11-20 10:09:00+00:00", 4)
    assert (core_scheduler.container, str(core_scheduler.first), str(core_scheduler.last)) == (
        None, "2026-11-20 10:00:03.250000+00:00", "2026-11-20 10:00:03.250000+00:00")
    assert (series.container, series.message, str(series.first), str(series.last), series.count) == (
        "x", "n", "2026-11-20 10:00:04+00:00", "2026-11-20 10:20:00+00:00", 7)


@pytest.mark.parametrize(("text", "seconds"), [("59.813s", 59.813), ("1m52.33s", 112.33), ("412ms", 0.412),
                                               ("1h2m3s", 3723.0), ("1m0.412s", 60.412), ("850µs", 0.00085),
                                               ("soon", None), ("12", None), ("1.5s and more", None)])
def test_go_durations_as_kubelet_prints_them(text, seconds):
    assert coldstart.go_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


# --- missing pieces --------------------------------------------------------------------------------


def test_node_and_nodeclaim_gone(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")
    edit(directory, "nodes", lambda items: [])
    edit(directory, "nodeclaims", lambda items: [])

    code, result = run(capsys, "--input", str(directory))

    assert code == 0
    got = stages(result)
    assert (got["capacity launched"]["status"], got["node ready"]["status"]) == ("unknown", "unknown")
    assert got["node ready"]["source"] == ("node ip-10-0-130-41.us-west-2.compute.internal is not in the cluster "
                                           "(deleted?)")
    assert [got[s]["sinceCreatedSeconds"] for s in ("image pulled", "model copied", "server ready")] == [125, 134, 260]


def test_node_gone_but_its_nodeclaim_left(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")
    edit(directory, "nodes", lambda items: [])

    _, result = run(capsys, "--input", str(directory))

    got = stages(result)
    assert (got["capacity launched"]["status"], got["capacity launched"]["sinceCreatedSeconds"]) == ("done", 5)
    assert got["node ready"]["status"] == "unknown"


def test_found_by_provider_id_when_the_nodeclaim_has_no_node_name(tmp_path, capsys):
    directory = copy_recording(tmp_path, "inf2-fallback")

    def forget(items):
        for item in items:
            item["status"].pop("nodeName")
        return items
    edit(directory, "nodeclaims", forget)

    _, result = run(capsys, "--input", str(directory))

    assert result["pods"][0]["nodeClaim"] == "neuron-inf2-h8r4m"


def test_without_nodeclaims_the_node_stands_in(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")
    (directory / "nodeclaims.json").unlink()

    _, result = run(capsys, "--input", str(directory))

    capacity = stages(result)["capacity launched"]
    assert (capacity["status"], capacity["sinceCreatedSeconds"]) == ("done", 66)
    assert capacity["source"] == "node ip-10-0-130-41.us-west-2.compute.internal created (no NodeClaim found)"


def test_a_node_not_ready_yet(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")

    def not_ready(items):
        for condition in items[0]["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition.update(status="False", reason="KubeletNotReady",
                                 message="container runtime network not ready: NetworkReady=false")
        return items
    edit(directory, "nodes", not_ready)

    _, result = run(capsys, "--input", str(directory))

    ready = stages(result)["node ready"]
    assert (ready["status"], ready["source"]) == ("pending", "node ip-10-0-130-41.us-west-2.compute.internal is not "
                                                             "Ready")


def test_a_copy_still_running(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")

    def copying(items):
        pod = items[0]
        pod["status"]["initContainerStatuses"][0].update(ready=False, started=True,
                                                          state={"running": {"startedAt": "2026-11-20T10:01:30Z"}})
        pod["status"]["containerStatuses"][0].update(ready=False, started=False, imageID="",
                                                      state={"waiting": {"reason": "PodInitializing"}})
        pod["status"]["containerStatuses"][0].pop("containerID")
        for condition in pod["status"]["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady", "Initialized"):
                condition.update(status="False", reason="ContainersNotReady")
        return items
    edit(directory, "pods", copying)

    _, result = run(capsys, "--input", str(directory))

    got = stages(result)
    assert (got["model copied"]["status"], got["model copied"]["source"]) == (
        "pending", "init container model-download running since 2026-11-20T10:01:30Z")
    assert got["server ready"]["status"] == "pending"
    # The pre-pull is independent of the copy.
    assert got["image pulled"]["sinceCreatedSeconds"] == 125


def test_pre_pull_pods_of_other_nodes_do_not_count(tmp_path, capsys):
    """The pre-pull pod of another node (up since the night before) says nothing about this pod's node."""
    directory = copy_recording(tmp_path, "cold-trn1")
    elsewhere = [p for p in json.loads((DATA / "events-expired" / "pods.json").read_text())["items"]
                 if p["metadata"]["name"].startswith("vllm-image-prepull")]
    edit(directory, "pods", lambda items: items + elsewhere)

    _, result = run(capsys, "--input", str(directory))

    image = stages(result)["image pulled"]
    assert (image["sinceCreatedSeconds"], image["source"]) == (
        125, "pre-pull pod vllm-image-prepull-4x8rt: Pulled event (pulled in 48.912s)")


def test_pod_not_scheduled_nor_nominated(tmp_path, capsys):
    directory = copy_recording(tmp_path, "pending")
    edit(directory, "events", lambda items: [e for e in items if e["reason"] != "Nominated"])

    _, result = run(capsys, "--input", str(directory))

    got = stages(result)
    assert [got[s]["status"] for s in got] == ["done", "pending", "pending", "pending", "pending", "pending"]
    assert got["capacity launched"]["source"] == "pod not scheduled and no NodeClaim nominated for it yet"


def test_latest_nomination_wins(tmp_path, capsys):
    """Karpenter nominated a trn1 NodeClaim first (gone after InsufficientInstanceCapacity), then an inf2 one."""
    directory = copy_recording(tmp_path, "pending")
    inf2 = json.loads((DATA / "inf2-fallback" / "nodeclaims.json").read_text())["items"]
    edit(directory, "nodeclaims", lambda items: items + inf2)

    def renominate(items):
        for item in items:
            if item["reason"] == "Nominated":
                later = dict(item, message="Pod should schedule on: nodeclaim/neuron-inf2-h8r4m",
                             firstTimestamp="2026-11-22T08:00:40Z", lastTimestamp="2026-11-22T08:00:40Z", count=1,
                             metadata=dict(item["metadata"], name=item["metadata"]["name"] + "x"))
                return items + [later]
        return items
    edit(directory, "events", renominate)

    _, result = run(capsys, "--input", str(directory))

    assert result["pods"][0]["nodeClaim"] == "neuron-inf2-h8r4m"


def test_newest_pod_by_default_every_pod_with_all(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")

    def add_older(items):
        older = json.loads(json.dumps(items[0]))
        older["metadata"].update(name="mistral-6d8f7c9b54-aaaaa", uid="older", creationTimestamp="2026-11-20T09:00:00Z")
        return items + [older]
    edit(directory, "pods", add_older)

    _, newest = run(capsys, "--input", str(directory))
    _, every = run(capsys, "--input", str(directory), "--all")

    assert [p["pod"] for p in newest["pods"]] == ["mistral-6d8f7c9b54-q7xkz"]
    assert [p["pod"] for p in every["pods"]] == ["mistral-6d8f7c9b54-aaaaa", "mistral-6d8f7c9b54-q7xkz"]


def test_no_model_pod_is_a_problem(tmp_path, capsys):
    directory = copy_recording(tmp_path, "cold-trn1")
    edit(directory, "pods", lambda items: [p for p in items if not p["metadata"]["name"].startswith("mistral")])

    code = coldstart.main(["--input", str(directory)])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == ("error: no pod of model 'mistral' (label app.kubernetes.io/instance=mistral) in namespace "
                            "vllm: is the Deployment there? kubectl get deployment -n vllm\n")
    code, result = run(capsys, "--input", str(directory))
    assert (code, result["ok"], result["pods"]) == (1, False, [])


# --- usage errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "llama"], "--model 'llama' is not in vllm.models of stack 'dev'; choose one of: mistral"),
    (["--stack", "nope"], "stack 'nope'"),
    (["--input", "/nonexistent/dir"], "--input /nonexistent/dir: no such directory"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig: no such file"),
])
def test_usage_errors(argv, message, capsys):
    assert coldstart.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--input", "x", "--kubeconfig", "y"], ["--input", "x", "--record", "y"],
                                  ["--bogus"]])
def test_conflicting_or_unknown_flags(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        coldstart.main(argv)
    assert exit_.value.code == cli.EXIT_USAGE


def test_input_without_json_or_with_bad_json(tmp_path, capsys):
    assert coldstart.main(["--input", str(tmp_path)]) == cli.EXIT_USAGE
    assert "no *.json files" in capsys.readouterr().err
    (tmp_path / "pods.json").write_text("{not json")
    assert coldstart.main(["--input", str(tmp_path)]) == cli.EXIT_USAGE
    assert f"--input {tmp_path / 'pods.json'}: not Kubernetes JSON" in capsys.readouterr().err


# --- the live path, with fake kubectl and pulumi ---------------------------------------------------

FAKE_KUBECTL = '''
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    kubeconfig = open(args[1]).read() if args[:1] == ["--kubeconfig"] else None
    log.write(json.dumps({"args": args, "kubeconfig": kubeconfig}) + "\\n")
if os.environ.get("FAKE_KUBECTL_DOWN"):
    print("The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?",
          file=sys.stderr)
    sys.exit(1)
resource = args[args.index("get") + 1]
path = os.path.join(os.environ["FAKE_KUBECTL_DATA"], resource.split(".")[0] + ".json")
if not os.path.exists(path):
    print(f'error: the server doesn\\'t have a resource type "{resource.split(".")[0]}"', file=sys.stderr)
    sys.exit(1)
print(open(path).read())
'''
FAKE_PULUMI = '''
import os, sys
if sys.argv[1:] != ["stack", "output", "kubeconfig", "--show-secrets", "--stack", "dev"]:
    print(f"error: no stack named '{sys.argv[-1]}' found", file=sys.stderr)
    sys.exit(255)
print(os.environ["FAKE_KUBECONFIG"])
'''


@pytest.fixture
def fake_bin(tmp_path, monkeypatch) -> Path:
    """A PATH with only fake `kubectl` (serving a recording) and `pulumi` (printing a kubeconfig)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (("kubectl", FAKE_KUBECTL), ("pulumi", FAKE_PULUMI)):
        script = tmp_path / f"fake_{name}.py"
        script.write_text(source)
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_KUBECONFIG", KUBECONFIG)
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(tmp_path / "kubectl.log"))
    monkeypatch.setenv("FAKE_KUBECTL_DATA", str(copy_recording(tmp_path, "cold-trn1")))
    return bin_dir


def kubectl_calls(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "kubectl.log").read_text().splitlines()]


def test_reads_the_cluster_with_the_stack_kubeconfig_and_records_it(fake_bin, tmp_path, capsys):
    record = tmp_path / "recorded"

    code, live = run(capsys, "--record", str(record))
    _, replayed = run(capsys, "--input", str(record))

    assert code == 0
    calls = kubectl_calls(tmp_path)
    assert [c["args"][2:] for c in calls] == [
        ["--request-timeout", "30s", "get", "pods", "--namespace", "vllm", "--output", "json"],
        ["--request-timeout", "30s", "get", "events", "--namespace", "vllm", "--field-selector",
         "involvedObject.kind=Pod", "--output", "json"],
        ["--request-timeout", "30s", "get", "nodes", "--selector", "karpenter.sh/nodepool", "--output", "json"],
        ["--request-timeout", "30s", "get", "nodeclaims.karpenter.sh", "--output", "json"],
    ]
    assert all(c["kubeconfig"].strip() == KUBECONFIG for c in calls)
    # The secret kubeconfig is gone afterwards.
    assert not Path(calls[0]["args"][1]).exists()
    assert sorted(p.name for p in record.iterdir()) == ["events.json", "nodeclaims.json", "nodes.json", "pods.json"]
    assert live == replayed
    assert live["pods"][0]["servingAfterSeconds"] == 260


def test_kubeconfig_option_skips_pulumi(fake_bin, tmp_path, capsys):
    (fake_bin / "pulumi").unlink()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)

    code, _ = run(capsys, "--kubeconfig", str(kubeconfig))

    assert code == 0
    assert {c["args"][1] for c in kubectl_calls(tmp_path)} == {str(kubeconfig)}


def test_a_cluster_without_the_nodeclaim_crd(fake_bin, tmp_path, monkeypatch, capsys):
    (Path(str(tmp_path / "cold-trn1")) / "nodeclaims.json").unlink()

    code, result = run(capsys)

    assert code == 0
    assert stages(result)["capacity launched"]["source"].endswith("(no NodeClaim found)")


def test_unreachable_cluster_says_so(fake_bin, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_DOWN", "1")

    code, result = run(capsys)

    assert code == 1
    assert result["ok"] is False
    assert result["error"].startswith("`kubectl get pods --namespace vllm --output json` failed: The connection to "
                                      "the server 127.0.0.1:6443 was refused")


def test_pulumi_failure_says_what_to_do(fake_bin, tmp_path, monkeypatch, capsys):
    (tmp_path / "Pulumi.prod.yaml").write_text((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)

    code, result = run(capsys, "--stack", "prod")

    assert code == 1
    assert ("`pulumi stack output kubeconfig --stack prod` failed (error: no stack named 'prod' found)"
            in result["error"])
    assert not (tmp_path / "kubectl.log").exists()


def test_missing_kubectl_says_what_to_install(fake_bin, capsys):
    (fake_bin / "kubectl").unlink()

    code, result = run(capsys)

    assert code == 1
    assert result["error"] == ("kubectl not found on PATH: install kubectl (https://kubernetes.io/docs/tasks/tools/), "
                               "or read a recording with --input DIR")


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        coldstart.main(["--help"])

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: python -m tools.coldstart" in out and "--input DIR" in out and "--record DIR" in out
