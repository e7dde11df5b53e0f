"""How long did a model pod take to start, stage by stage? Read from the cluster (or from a recording).

    python -m tools.coldstart [--stack dev] [--model NAME] [--all] [--json]
                              [--kubeconfig PATH | --input DIR] [--record DIR]

It reads the model's pods (label app.kubernetes.io/instance=<model> in vllm.namespace), the pods of the
image pre-pull DaemonSet, their events, the Karpenter nodes and the NodeClaims, with `kubectl get -o json`
(the kubeconfig from `pulumi stack output kubeconfig`, or --kubeconfig), picks the newest model pod (every
one with --all) and prints when each stage of its start finished, counted from the pod's creation:

    pod created         metadata.creationTimestamp
    capacity launched   the NodeClaim's Launched condition (its creation if it has no conditions)
    node ready          the Node's Ready condition
    image pulled        the vLLM image on the node: the first `Pulled` event of container vllm or of the
                        pre-pull pod on that node; once events have expired (an hour by default), the
                        time those containers started, marked "(from status; events expired)"
    model copied        init container model-download finished
    server ready        the pod's Ready condition

A pod on a node that existed before it (a restart on a warm node) shows the node's stages as existing.
Stages that have not happened yet show as pending. --input DIR reads `kubectl get ... -o json` output saved
in DIR (one List or object per *.json file) instead of asking the cluster; --record DIR saves what was read,
for a bug report.

Exit status: 0 printed, 1 no model pod or the cluster could not be read, 2 bad flags or stack settings.
--json prints {"ok", "stack", "model", "namespace", "pods": [{..., "stages": [...]}]}.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tools import cli, endpoint

INSTANCE_LABEL = "app.kubernetes.io/instance"
INIT_CONTAINER = "model-download"
SERVER_CONTAINER = "vllm"
PREPULL_DAEMONSET = "vllm-image-prepull"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
NODECLAIM_LABEL = "karpenter.sh/nodeclaim"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
NOMINATED = re.compile(r"nodeclaim/([a-z0-9.-]+)")
CONTAINER_FIELD = re.compile(r"spec\.(?:initContainers|containers|ephemeralContainers)\{([^}]+)\}")
# kubelet: `Successfully pulled image "x" in 59.813s (59.813s including waiting). Image size: 123 bytes.`
PULLED_IN = re.compile(r"Successfully pulled image \S+ in ([0-9][0-9a-zµ.]*)")
GO_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|h|m|s)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
KUBECTL_TIMEOUT_SECONDS = 60.0
STATUS_NOTE = "(from status; events expired)"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Unreadable(Exception):
    """The cluster (or pulumi, for its kubeconfig) could not be read."""


# --- the objects -----------------------------------------------------------------------------------


@dataclass
class Objects:
    """What the tool reads: core/v1 Pods, Nodes and Events, and karpenter.sh/v1 NodeClaims."""

    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    nodeclaims: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def add(self, obj: dict[str, Any]) -> None:
        kind = obj.get("kind")
        if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
            for item in obj.get("items") or []:
                # `kubectl get pods -o json` leaves kind out of the items of a typed list.
                self.add(item if "kind" in item else {**item, "kind": kind[:-4] or None})
        elif kind == "Pod":
            self.pods.append(obj)
        elif kind == "Node":
            self.nodes.append(obj)
        elif kind == "NodeClaim":
            self.nodeclaims.append(obj)
        elif kind == "Event":
            self.events.append(Event.of(obj))


@dataclass(frozen=True)
class Event:
    """A core/v1 or events.k8s.io/v1 Event, reduced to what the timeline needs."""

    kind: str
    namespace: str
    name: str
    uid: str
    container: str | None
    reason: str
    message: str
    first: datetime | None
    last: datetime | None
    count: int

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Event:
        """Both shapes. core/v1 (what `kubectl get events` returns): involvedObject, message,
        firstTimestamp/lastTimestamp from legacy recorders (kubelet, Karpenter) or only eventTime from the
        events.k8s.io API (the scheduler). events.k8s.io/v1: regarding, note, eventTime, deprecated*Timestamp.
        A repeated event keeps its first time in firstTimestamp/eventTime; lastTimestamp or
        series.lastObservedTime move on."""
        new_api = str(obj.get("apiVersion", "")).startswith("events.k8s.io/")
        about = obj.get("regarding" if new_api else "involvedObject") or {}
        series = obj.get("series") or {}
        first = (_time(obj.get("deprecatedFirstTimestamp" if new_api else "firstTimestamp"))
                 or _time(obj.get("eventTime")) or _time((obj.get("metadata") or {}).get("creationTimestamp")))
        last = (_time(obj.get("deprecatedLastTimestamp" if new_api else "lastTimestamp"))
                or _time(series.get("lastObservedTime")) or first)
        count = series.get("count") or obj.get("deprecatedCount" if new_api else "count") or 1
        match = CONTAINER_FIELD.search(about.get("fieldPath") or "")
        return cls(kind=about.get("kind", ""), namespace=about.get("namespace", ""), name=about.get("name", ""),
                   uid=about.get("uid", ""), container=match.group(1) if match else None,
                   reason=obj.get("reason") or "", message=obj.get(("note" if new_api else "message")) or "",
                   first=first, last=last, count=int(count))

    def about(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        return (self.kind == "Pod" and self.name == meta.get("name") and self.namespace == meta.get("namespace")
                and (not self.uid or not meta.get("uid") or self.uid == meta.get("uid")))


def _time(value: Any) -> datetime | None:
    """RFC 3339 (Time) or RFC 3339 with microseconds (MicroTime); None for null or empty."""
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def go_duration(text: str) -> float | None:
    """Seconds of a Go duration string as kubelet prints it: 59.813s, 1m52.33s, 412ms."""
    parts = GO_DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(number) * GO_UNITS[unit] for number, unit in parts)


# --- the timeline ----------------------------------------------------------------------------------


@dataclass
class Stage:
    stage: str
    # done: happened; existing: happened before the pod was created; pending: not yet; unknown: cannot tell.
    status: str
    source: str
    time: datetime | None = None
    # When this stage's own work began, for its duration (stages overlap: the image pull runs alongside
    # the model copy).
    began: datetime | None = None
    seconds: float | None = None


@dataclass
class Timeline:
    pod: str
    node: str | None
    node_claim: str | None
    instance_type: str | None
    node_pool: str | None
    warm: bool
    created: datetime
    stages: list[Stage]

    @property
    def serving_after(self) -> float | None:
        ready = self.stages[-1]
        return (ready.time - self.created).total_seconds() if ready.status == "done" and ready.time else None

    def as_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod, "node": self.node, "nodeClaim": self.node_claim, "instanceType": self.instance_type,
            "nodePool": self.node_pool, "warm": self.warm, "created": _iso(self.created),
            "servingAfterSeconds": self.serving_after,
            "stages": [{"stage": s.stage, "status": s.status, "time": _iso(s.time),
                        "sinceCreatedSeconds": _round((s.time - self.created).total_seconds() if s.time else None),
                        "durationSeconds": _round(_duration(s)), "source": s.source} for s in self.stages],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _duration(stage: Stage) -> float | None:
    if stage.status != "done":
        return None
    if stage.seconds is not None:
        return stage.seconds
    if stage.time and stage.began:
        return (stage.time - stage.began).total_seconds()
    return None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def _true_since(obj: dict[str, Any] | None, kind: str) -> datetime | None:
    condition = _condition(obj, kind) if obj else None
    return _time(condition.get("lastTransitionTime")) if condition and condition.get("status") == "True" else None


def _container_status(pod: dict[str, Any], name: str, init: bool = False) -> dict[str, Any] | None:
    key = "initContainerStatuses" if init else "containerStatuses"
    return next((c for c in (pod.get("status") or {}).get(key) or [] if c.get("name") == name), None)


def _started(status: dict[str, Any] | None) -> datetime | None:
    """When the container (last) started: it cannot start before its image is on the node."""
    state = (status or {}).get("state") or {}
    for phase in ("running", "terminated"):
        if state.get(phase):
            return _time(state[phase].get("startedAt"))
    return _time((((status or {}).get("lastState") or {}).get("terminated") or {}).get("startedAt"))


def model_pods(objects: Objects, model: str, namespace: str) -> list[dict[str, Any]]:
    pods = [p for p in objects.pods if p["metadata"].get("namespace") == namespace
            and (p["metadata"].get("labels") or {}).get(INSTANCE_LABEL) == model]
    return sorted(pods, key=lambda p: (_time(p["metadata"].get("creationTimestamp")), p["metadata"]["name"]))


def _prepull_pods(objects: Objects, namespace: str, node: str) -> list[dict[str, Any]]:
    def ours(pod: dict[str, Any]) -> bool:
        owners = pod["metadata"].get("ownerReferences") or []
        return any(o.get("kind") == "DaemonSet" and o.get("name") == PREPULL_DAEMONSET for o in owners)
    return [p for p in objects.pods if p["metadata"].get("namespace") == namespace and ours(p)
            and (p.get("spec") or {}).get("nodeName") == node]


def _find_node_claim(objects: Objects, pod: dict[str, Any], node: dict[str, Any] | None,
                     events: list[Event]) -> dict[str, Any] | None:
    """The pod's NodeClaim: the one whose status names its node (by name or provider ID), else, for a pod
    not scheduled yet, the one Karpenter last nominated it for ("Pod should schedule on: nodeclaim/<name>")."""
    claims = {c["metadata"]["name"]: c for c in objects.nodeclaims}
    scheduled_on = (pod.get("spec") or {}).get("nodeName")
    name = node["metadata"]["name"] if node is not None else scheduled_on
    provider = (node.get("spec") or {}).get("providerID") if node is not None else None
    if name:
        for claim in objects.nodeclaims:
            status = claim.get("status") or {}
            if status.get("nodeName") == name or (provider and status.get("providerID") == provider):
                return claim
        label = ((node or {}).get("metadata", {}).get("labels") or {}).get(NODECLAIM_LABEL)
        if label in claims:
            return claims[label]
    if scheduled_on:
        return None
    nominated = sorted((e for e in events if e.reason == "Nominated" and NOMINATED.search(e.message)),
                       key=lambda e: e.last or e.first or EPOCH)
    for event in reversed(nominated):
        match = NOMINATED.search(event.message)
        if match and match.group(1) in claims:
            return claims[match.group(1)]
    return None


def timeline(objects: Objects, pod: dict[str, Any]) -> Timeline:
    meta = pod["metadata"]
    created = _time(meta["creationTimestamp"])
    assert created is not None
    namespace = meta.get("namespace", "")
    events = sorted((e for e in objects.events if e.about(pod)), key=lambda e: e.first or created)
    node_name = (pod.get("spec") or {}).get("nodeName")
    node = next((n for n in objects.nodes if n["metadata"]["name"] == node_name), None) if node_name else None
    claim = _find_node_claim(objects, pod, node, events)
    # A pod not scheduled yet may already have a node coming up: its NodeClaim's (the pre-pull runs there).
    where = node_name or ((claim or {}).get("status") or {}).get("nodeName")
    if node is None and where:
        node = next((n for n in objects.nodes if n["metadata"]["name"] == where), None)
    existed = _time((claim or node or {}).get("metadata", {}).get("creationTimestamp"))
    warm = existed is not None and existed < created
    labels = {**((claim or {}).get("metadata", {}).get("labels") or {}),
              **((node or {}).get("metadata", {}).get("labels") or {})}

    stages = [Stage("pod created", "done", f"pod {meta['name']}", time=created)]
    capacity = _capacity(claim, node, node_name, created, warm)
    stages.append(capacity)
    stages.append(_node_ready(claim, node, node_name, capacity, created, warm))
    stages.append(_image_pulled(objects, pod, namespace, where, events, created))
    stages.append(_model_copied(pod))
    stages.append(_server_ready(pod))
    return Timeline(pod=meta["name"], node=where,
                    node_claim=(claim or {}).get("metadata", {}).get("name"),
                    instance_type=labels.get(INSTANCE_TYPE_LABEL), node_pool=labels.get(NODEPOOL_LABEL),
                    warm=warm, created=created, stages=stages)


def _capacity(claim: dict[str, Any] | None, node: dict[str, Any] | None, node_name: str | None,
              created: datetime, warm: bool) -> Stage:
    if claim is None:
        if node is not None:
            when = _time(node["metadata"].get("creationTimestamp"))
            return Stage("capacity launched", "existing" if warm else "done",
                         f"node {node['metadata']['name']} created (no NodeClaim found)", time=when, began=created)
        if node_name:
            return Stage("capacity launched", "unknown",
                         f"neither node {node_name} nor its NodeClaim is in the cluster")
        return Stage("capacity launched", "pending", "pod not scheduled and no NodeClaim nominated for it yet")
    name = claim["metadata"]["name"]
    claimed = _time(claim["metadata"].get("creationTimestamp"))
    launched = _condition(claim, "Launched")
    if launched is None:
        return Stage("capacity launched", "existing" if warm else "done",
                     f"NodeClaim {name} created (it has no Launched condition)", time=claimed, began=created)
    if launched.get("status") != "True":
        why = launched.get("message") or launched.get("reason") or "not launched yet"
        return Stage("capacity launched", "pending", f"NodeClaim {name}: {why}")
    return Stage("capacity launched", "existing" if warm else "done", f"NodeClaim {name} Launched",
                 time=_time(launched.get("lastTransitionTime")), began=created)


def _node_ready(claim: dict[str, Any] | None, node: dict[str, Any] | None, node_name: str | None,
                capacity: Stage, created: datetime, warm: bool) -> Stage:
    if node is None:
        if node_name:
            return Stage("node ready", "unknown", f"node {node_name} is not in the cluster (deleted?)")
        if claim is not None:
            return Stage("node ready", "pending", f"NodeClaim {claim['metadata']['name']} has no node yet")
        return Stage("node ready", "pending", "no node yet")
    name = node["metadata"]["name"]
    ready = _true_since(node, "Ready")
    if ready is None:
        return Stage("node ready", "pending", f"node {name} is not Ready")
    return Stage("node ready", "existing" if warm else "done", f"node {name} Ready", time=ready,
                 began=capacity.time if capacity.time else created)


def _image_pulled(objects: Objects, pod: dict[str, Any], namespace: str, node_name: str | None,
                  events: list[Event], created: datetime) -> Stage:
    """The vLLM image on the node: pulled for container vllm, or by the pre-pull pod on the same node."""
    image = next((c.get("image") for c in (pod.get("spec") or {}).get("containers") or []
                  if c.get("name") == SERVER_CONTAINER), None)
    if image is None:
        return Stage("image pulled", "unknown", f"the pod has no container {SERVER_CONTAINER}")
    from_events: list[Stage] = []
    from_status: list[Stage] = []
    sources = [(pod, events, [SERVER_CONTAINER], f"container {SERVER_CONTAINER}")]
    for other in _prepull_pods(objects, namespace, node_name) if node_name else []:
        spec = other.get("spec") or {}
        names = [c["name"] for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
                 if c.get("image") == image]
        theirs = [e for e in objects.events if e.about(other)]
        sources.append((other, theirs, names, f"pre-pull pod {other['metadata']['name']}"))
    for owner, owner_events, names, label in sources:
        for name in names:
            pulled = _first_pull(owner_events, name, label)
            if pulled:
                from_events.append(pulled)
            status = _container_status(owner, name) or _container_status(owner, name, init=True)
            started = _started(status)
            if started:
                from_status.append(Stage("image pulled", "done", f"{label} started {STATUS_NOTE}", time=started))
    # The earliest evidence that the image was on the node. A Pulled event is exact; a container's start
    # (from status, all that is left once events have expired) is an upper bound, and still proof.
    candidates = [(s.time, 0, s) for s in from_events] + [(s.time, 1, s) for s in from_status]
    if not candidates:
        return Stage("image pulled", "pending", f"not on node {node_name} yet" if node_name else "no node yet")
    best = min(candidates, key=lambda c: c[:2])[2]
    if best.time and best.time < created:
        best.status = "existing"
    return best


def _first_pull(events: list[Event], container: str, label: str) -> Stage | None:
    """The first `Pulled` of the container (a restart repeats it, with a later lastTimestamp)."""
    pulled = [e for e in events if e.reason == "Pulled" and e.container == container and e.first]
    if not pulled:
        return None
    first = min(pulled, key=lambda e: e.first)  # type: ignore[arg-type, return-value]
    if "already present" in first.message:
        return Stage("image pulled", "done", f"{label}: image already on the node (Pulled event)",
                     time=first.first, seconds=0.0)
    match = PULLED_IN.search(first.message)
    seconds = go_duration(match.group(1)) if match else None
    pulling = [e for e in events if e.reason == "Pulling" and e.container == container and e.first
               and e.first <= first.first]
    began = max((e.first for e in pulling), default=None)  # type: ignore[type-var]
    took = f" in {seconds:g}s" if seconds is not None else ""
    return Stage("image pulled", "done", f"{label}: Pulled event (pulled{took})", time=first.first, began=began,
                 seconds=seconds)


def _model_copied(pod: dict[str, Any]) -> Stage:
    status = _container_status(pod, INIT_CONTAINER, init=True)
    if status is None:
        if not any(c.get("name") == INIT_CONTAINER for c in (pod.get("spec") or {}).get("initContainers") or []):
            return Stage("model copied", "unknown", f"the pod has no init container {INIT_CONTAINER}")
        return Stage("model copied", "pending", f"init container {INIT_CONTAINER} has not started")
    state = status.get("state") or {}
    done = state.get("terminated")
    if done and done.get("exitCode") == 0:
        return Stage("model copied", "done", f"init container {INIT_CONTAINER} finished",
                     time=_time(done.get("finishedAt")), began=_time(done.get("startedAt")))
    if state.get("running"):
        since = state["running"].get("startedAt")
        return Stage("model copied", "pending", f"init container {INIT_CONTAINER} running since {since}")
    why = (state.get("waiting") or {}).get("reason") or (done or {}).get("reason") or "waiting"
    return Stage("model copied", "pending", f"init container {INIT_CONTAINER}: {why}")


def _server_ready(pod: dict[str, Any]) -> Stage:
    ready = _true_since(pod, "Ready")
    started = _started(_container_status(pod, SERVER_CONTAINER))
    if ready is None:
        where = f"; {SERVER_CONTAINER} started {_iso(started)}" if started else ""
        return Stage("server ready", "pending", f"pod not Ready{where}")
    restarts = (_container_status(pod, SERVER_CONTAINER) or {}).get("restartCount") or 0
    again = f"; {SERVER_CONTAINER} restarted {restarts} time(s), timed from its last start" if restarts else ""
    return Stage("server ready", "done", f"pod Ready ({SERVER_CONTAINER} started, then /health answered{again})",
                 time=ready, began=started)


# --- reading the cluster ---------------------------------------------------------------------------


def load_dir(directory: Path) -> Objects:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise cli.UsageError(f"--input {directory}: no *.json files (save `kubectl get ... -o json` output there)")
    objects = Objects()
    for path in files:
        try:
            objects.add(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise cli.UsageError(f"--input {path}: not Kubernetes JSON ({error})") from None
    return objects


def queries(namespace: str) -> dict[str, list[str]]:
    """What is read, scoped: pods and pod events of the model's namespace, Karpenter's nodes, NodeClaims."""
    return {
        "pods": ["get", "pods", "--namespace", namespace, "--output", "json"],
        "events": ["get", "events", "--namespace", namespace, "--field-selector", "involvedObject.kind=Pod",
                   "--output", "json"],
        "nodes": ["get", "nodes", "--selector", NODEPOOL_LABEL, "--output", "json"],
        "nodeclaims": ["get", "nodeclaims.karpenter.sh", "--output", "json"],
    }


def fetch(kubectl: str, kubeconfig: Path, namespace: str) -> dict[str, str]:
    """The raw JSON of each query. Without the NodeClaim CRD the NodeClaims are simply missing."""
    raw: dict[str, str] = {}
    for name, args in queries(namespace).items():
        command = [kubectl, "--kubeconfig", str(kubeconfig), "--request-timeout", "30s", *args]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_SECONDS,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Unreadable(f"`kubectl {' '.join(args)}` took over {KUBECTL_TIMEOUT_SECONDS:.0f}s: "
                             "is the cluster reachable?") from None
        if result.returncode != 0:
            error = " ".join(result.stderr.split()) or f"kubectl exited with {result.returncode}"
            if name == "nodeclaims" and "the server doesn't have a resource type" in error:
                raw[name] = json.dumps({"apiVersion": "v1", "kind": "List", "items": []})
                continue
            raise Unreadable(f"`kubectl {' '.join(args)}` failed: {error}")
        raw[name] = result.stdout
    return raw


def parse(raw: dict[str, str]) -> Objects:
    objects = Objects()
    for name, text in raw.items():
        try:
            objects.add(json.loads(text))
        except ValueError as error:
            raise Unreadable(f"kubectl returned something other than JSON for {name}: {error}") from None
    return objects


def record(directory: Path, raw: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in raw.items():
        (directory / f"{name}.json").write_text(text)


# --- printing --------------------------------------------------------------------------------------


def clock(seconds: float | None) -> str:
    """m:ss, or h:mm:ss from an hour on; negative for times before the pod was created."""
    if seconds is None:
        return ""
    sign, whole = ("-" if seconds < 0 else ""), round(abs(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"{sign}{minutes}:{secs:02d}"


def render(line: Timeline) -> list[str]:
    where = line.node or "no node yet"
    about = ", ".join(x for x in (line.instance_type, f"NodePool {line.node_pool}" if line.node_pool else None) if x)
    kind = "restart on an existing node (warm)" if line.warm else "new node"
    lines = [f"pod {line.pod} on {where}" + (f" ({about})" if about else "")
             + (f", NodeClaim {line.node_claim}" if line.node_claim else "") + f": {kind}",
             f"  {'stage':<18} {'at':>8} {'took':>6}  source"]
    for stage in line.stages:
        since = (stage.time - line.created).total_seconds() if stage.time else None
        if stage.status in ("done", "existing"):
            at, took = clock(since), clock(_duration(stage)) if stage.status == "done" else "-"
        else:
            at, took = stage.status, ""
        source = stage.source + (" (before the pod was created)" if stage.status == "existing" else "")
        lines.append(f"  {stage.stage:<18} {at:>8} {took:>6}  {source}")
    serving = line.serving_after
    lines.append(f"  serving {clock(serving)} after the pod was created" if serving is not None
                 else "  not serving yet")
    return lines


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("coldstart", "Show each stage of a model pod's start: capacity launched, node ready, "
                        "image pulled, model copied, server ready.",
                        "0 printed, 1 no model pod or the cluster could not be read, 2 usage error")
    parser.add_argument("--model", help="model name from vllm.models (default: the first)")
    parser.add_argument("--all", action="store_true", help="every pod of the model, oldest first (default: the newest)")
    parser.add_argument("--kubeconfig", type=Path, metavar="PATH",
                        help="kubeconfig to use instead of `pulumi stack output kubeconfig`")
    parser.add_argument("--input", type=Path, metavar="DIR",
                        help="read saved `kubectl get ... -o json` output (*.json) instead of the cluster")
    parser.add_argument("--record", type=Path, metavar="DIR", help="also save what was read from the cluster in DIR")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a report")
    args = parser.parse_args(argv)
    if args.input and args.kubeconfig:
        parser.error("--input and --kubeconfig exclude each other: --input reads no cluster")
    if args.input and args.record:
        parser.error("--input and --record exclude each other: there is nothing new to record")
    return args


def _read(args: argparse.Namespace, namespace: str) -> Objects:
    if args.input is not None:
        return load_dir(args.input)
    # Look for kubectl first: without it, asking pulumi for the kubeconfig is wasted.
    kubectl = endpoint.executable("kubectl", endpoint.KUBECTL, "kubectl", "read a recording with --input DIR")
    with endpoint.kubeconfig_file(args.kubeconfig, args.stack) as kubeconfig:
        raw = fetch(kubectl, kubeconfig, namespace)
    if args.record is not None:
        record(args.record, raw)
    return parse(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = cli.load_stack(args.stack)
        model = endpoint.pick_model(args.model, config)
        namespace = config.vllm.namespace
        if args.kubeconfig is not None and not args.kubeconfig.is_file():
            raise cli.UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
        if args.input is not None and not args.input.is_dir():
            raise cli.UsageError(f"--input {args.input}: no such directory")
        extra = {"stack": args.stack, "model": model, "namespace": namespace}
        try:
            objects = _read(args, namespace)
        except Unreadable as error:
            return _problem(args.json, extra, str(error))
        except endpoint.CheckFailed as error:
            return _problem(args.json, extra, error.check.detail)
    except cli.UsageError as error:
        return cli.usage_error(error)

    pods = model_pods(objects, model, namespace)
    if not pods:
        return _problem(args.json, extra, f"no pod of model '{model}' (label {INSTANCE_LABEL}={model}) in "
                        f"namespace {namespace}: is the Deployment there? kubectl get deployment -n {namespace}")
    lines = [timeline(objects, pod) for pod in (pods if args.all else pods[-1:])]
    if args.json:
        print(json.dumps({"ok": True, **extra, "pods": [line.as_json() for line in lines]}, indent=2))
    else:
        print(f"Start of model '{model}' in namespace {namespace} (stack '{args.stack}'), "
              "times since the pod was created:")
        for line in lines:
            print("\n".join(render(line)))
    return cli.EXIT_OK


def _problem(as_json: bool, extra: dict[str, Any], message: str) -> int:
    if as_json:
        print(json.dumps({"ok": False, **extra, "error": message, "pods": []}, indent=2))
    print(f"error: {message}", file=sys.stderr)
    return cli.EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
