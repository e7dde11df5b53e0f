"""The alert rules: valid for promtool 2.42, and each rule fires when it should and stays quiet otherwise.

Every case is a `promtool test rules` unit test built here from the same parameters as the rules, with
synthetic series shaped like the exporters' (labels from components.observability.catalog plus the
scrape config's target labels). Expected annotations are the rule's own templates filled in, so a
broken template or a missing label fails too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from components.config import ModelConfig
from components.observability.alerts import alert_rules

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass(frozen=True)
class Params:
    namespace: str
    models: tuple[ModelConfig, ...]
    ttft: float
    limit: int
    trainium: str = "neuron"
    fallback: str = "neuron-inf2"

    def render(self) -> str:
        return alert_rules(self.namespace, self.models, self.ttft, neuron_device_limit=self.limit,
                           trainium_nodepool=self.trainium, fallback_nodepool=self.fallback)


DEFAULT = Params("vllm", (ModelConfig(name="mistral", max_num_seqs=4),), 2.0, 2)
# Another namespace and pools, another TTFT target, two models with different batch sizes, one name a
# prefix of the other's (pods of `mistral-7b` must not count as pods of `mistral`).
OTHER = Params("serving", (ModelConfig(name="mistral", max_num_seqs=2), ModelConfig(name="mistral-7b", max_num_seqs=8)),
               0.5, 4, trainium="trn", fallback="inf")
PARAMS = {"default": DEFAULT, "other": OTHER}

# How long each condition must hold before the alert fires: the specification the cases are timed by,
# not read back from the rules (a rule that lost its `for` must fail the "not yet" cases).
FOR = {"VllmModelNoReadyPod": "10m", "VllmQueueBacklog": "5m", "VllmTimeToFirstTokenHigh": "5m",
       "VllmModelPodPendingTooLong": "15m", "NeuronExecutionErrors": "5m", "NeuronHardwareErrors": None,
       "VllmModelOnInferentiaFallback": "5m", "NeuronNodePoolNearLimit": "15m", "MonitoringTargetDown": "10m",
       "MonitoringTargetsMissing": "15m"}


@dataclass
class Case:
    """One promtool test: input series, and the alerts expected at eval_time (labels, $value text)."""

    name: str
    series: list[dict]
    eval_time: str
    expected: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)


def series(metric: str, values: str, **labels: str) -> dict:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{body}}}", "values": values}


def pod_name(model: str, suffix: str = "x7k2p") -> str:
    return f"{model}-5d9f8c7b6-{suffix}"


def minutes(duration: str) -> int:
    return int(duration.removesuffix("m"))


def _cases(p: Params, alert: str, for_: str | None) -> list[Case]:
    ns, a, b = p.namespace, p.models[0], p.models[-1]
    ksm = {"job": "kube-state-metrics", "instance": "10.0.1.5:8080"}
    fire = minutes(for_) + 1 if for_ else 5
    before = f"{minutes(for_) - 1}m" if for_ else None
    at = f"{fire}m"
    cases: list[Case] = []

    def quiet_before_for(case: Case) -> None:
        """The same series, evaluated a minute before `for` has passed: nothing yet."""
        if before:
            cases.append(Case(f"{case.name} (not before {for_})", case.series, before))

    if alert == "VllmModelNoReadyPod":
        def deployment(model: ModelConfig, available: int) -> list[dict]:
            return [series("kube_deployment_spec_replicas", "1x30", **ksm, namespace=ns, deployment=model.name),
                    series("kube_deployment_status_replicas_available", f"{available}x30", **ksm, namespace=ns,
                           deployment=model.name)]

        # With two models, the second is ready and must not fire.
        firing = Case("wanted but none available", deployment(a, 0) + (deployment(b, 1) if b != a else []), at,
                      [({"namespace": ns, "deployment": a.name, "model": a.name}, {})])
        cases += [firing,
                  Case("no available series at all", [
                      series("kube_deployment_spec_replicas", "1x30", **ksm, namespace=ns, deployment=a.name)],
                      at, [({"namespace": ns, "deployment": a.name, "model": a.name}, {})]),
                  Case("ready", [
                      series("kube_deployment_spec_replicas", "1x30", **ksm, namespace=ns, deployment=a.name),
                      series("kube_deployment_status_replicas_available", "1x30", **ksm, namespace=ns,
                             deployment=a.name)], "20m"),
                  Case("scaled to zero", [
                      series("kube_deployment_spec_replicas", "0x30", **ksm, namespace=ns, deployment=a.name),
                      series("kube_deployment_status_replicas_available", "0x30", **ksm, namespace=ns,
                             deployment=a.name)], "20m"),
                  Case("same name in another namespace", [
                      series("kube_deployment_spec_replicas", "1x30", **ksm, namespace="other", deployment=a.name),
                      series("kube_deployment_status_replicas_available", "0x30", **ksm, namespace="other",
                             deployment=a.name)], "20m")]
        quiet_before_for(firing)
    elif alert == "VllmQueueBacklog":
        def waiting(model: ModelConfig, value: int, pod: str) -> dict:
            return series("vllm:num_requests_waiting", f"{value}x30", job="vllm", instance="10.0.2.7:8080",
                          namespace=ns, pod=pod, node="ip-10-0-2-7", model=model.name, model_name=model.name)

        over = a.max_num_seqs + 1
        firing = Case("more waiting than max_num_seqs", [waiting(a, over, pod_name(a.name))], at,
                      [({"namespace": ns, "model": a.name, "pod": pod_name(a.name),
                         "max_num_seqs": str(a.max_num_seqs)}, {"value": str(over)})])
        cases += [firing,
                  Case("exactly max_num_seqs waiting", [waiting(a, a.max_num_seqs, pod_name(a.name))], "20m"),
                  Case("other namespace", [series("vllm:num_requests_waiting", f"{over}x30", job="vllm",
                                                  namespace="other", pod="p", model=a.name)], "20m")]
        if b.max_num_seqs > over:
            # `over` backs up the first model, not the second, whose batch is larger.
            cases.append(Case("each model its own threshold",
                              [waiting(a, over, pod_name(a.name)), waiting(b, over, pod_name(b.name))], at,
                              [({"namespace": ns, "model": a.name, "pod": pod_name(a.name),
                                 "max_num_seqs": str(a.max_num_seqs)}, {"value": str(over)})]))
        quiet_before_for(firing)
    elif alert == "VllmTimeToFirstTokenHigh":
        # Buckets around the target; every request lands in (2T, 4T], so p95 = 2T + 0.95 * 2T = 3.9T.
        edges = [p.ttft / 4, p.ttft * 2, p.ttft * 4]

        def ttft(model: ModelConfig, per_minute: int, slow: bool) -> list[dict]:
            where = {"job": "vllm", "instance": "10.0.2.7:8080", "namespace": ns, "pod": pod_name(model.name),
                     "node": "ip-10-0-2-7", "model": model.name, "model_name": model.name}
            out = []
            for le in [*edges, "+Inf"]:
                counted = le == "+Inf" or le >= (edges[2] if slow else edges[0])
                step = per_minute if counted else 0
                out.append(series("vllm:time_to_first_token_seconds_bucket", f"0+{step}x30", **where, le=f"{le:g}"
                                  if le != "+Inf" else "+Inf"))
            out.append(series("vllm:time_to_first_token_seconds_count", f"0+{per_minute}x30", **where))
            return out

        p95 = 3.9 * p.ttft
        firing = Case("slow under load", ttft(a, 60, slow=True) + (ttft(b, 60, slow=False) if b != a else []), "15m",
                      [({"namespace": ns, "model": a.name}, {"humanizeDuration": f"{p95:.4g}s"})])
        cases += [firing,
                  # 1 request a minute is under 0.05/s: a few slow requests do not page.
                  Case("slow but few requests", ttft(a, 1, slow=True), "15m"),
                  Case("fast", ttft(a, 60, slow=False), "15m")]
        # Rates need two samples, so the condition holds from 1m: still pending at 1m + for - 1m.
        cases.append(Case(f"{firing.name} (not before {for_})", firing.series, f"{minutes(for_)}m"))
    elif alert == "VllmModelPodPendingTooLong":
        def phase(pod: str, pending: int) -> list[dict]:
            return [series("kube_pod_status_phase", f"{pending}x30", **ksm, namespace=ns, pod=pod, uid="u-" + pod,
                           phase="Pending"),
                    series("kube_pod_status_phase", f"{1 - pending}x30", **ksm, namespace=ns, pod=pod,
                           uid="u-" + pod, phase="Running")]

        firing = Case("pending past a cold start",
                      phase(pod_name(b.name), 1) + (phase(pod_name(a.name), 0) if b != a else []), at,
                      [({"namespace": ns, "model": b.name, "pod": pod_name(b.name)}, {})])
        cases += [firing,
                  Case("running", phase(pod_name(a.name), 0), "20m"),
                  Case("not a model's pod", phase("prometheus-5d9f8c7b6-x7k2p", 1)
                       + phase(pod_name(f"{b.name}-instruct"), 1), "20m")]
        quiet_before_for(firing)
    elif alert == "NeuronExecutionErrors":
        def errors(error_type: str, values: str) -> dict:
            return series("execution_errors_total", values, job="neuron-monitor", instance="10.0.3.9:8000",
                          namespace="neuron-monitor", pod="neuron-monitor-abcde", node="ip-10-0-3-9",
                          instance_type="trn1.2xlarge", runtime_tag="367", error_type=error_type)

        firing = Case("runtime errors", [errors("runtime", "0 0 0 0+1x27")], "10m",
                      [({"node": "ip-10-0-3-9"}, {})])
        cases += [firing,
                  Case("no new errors", [errors("runtime", "7x30")], "10m"),
                  Case("hardware errors are the other alert", [errors("hardware", "0+1x30")], "10m")]
        # The first error is counted at 4m: pending, not firing, at 4m + for - 1m.
        cases.append(Case(f"{firing.name} (not before {for_})", firing.series, f"{3 + minutes(for_)}m"))
    elif alert == "NeuronHardwareErrors":
        node = {"job": "neuron-monitor", "instance": "10.0.3.9:8000", "namespace": "neuron-monitor",
                "pod": "neuron-monitor-abcde", "node": "ip-10-0-3-9"}
        expected = [({"node": "ip-10-0-3-9"}, {})]
        cases += [
            Case("hardware execution errors", [series("execution_errors_total", "0 0 1 2 3 3 3 3", **node,
                                                      runtime_tag="367", error_type="hardware")], "4m", expected),
            Case("uncorrected ECC (event_type label)", [series("hardware_ecc_events_total", "0 0 0 1 1 1 1", **node,
                                                               event_type="sram_ecc_uncorrected",
                                                               neuron_device_index="0")], "4m", expected),
            Case("uncorrected ECC (per-event series)", [series("neurondevice_hw_ecc_events_total_mem_ecc_uncorrected",
                                                               "0 0 0 1 1 1 1", **node, neuron_device_index="0")],
                 "4m", expected),
            Case("corrected ECC only", [series("hardware_ecc_events_total", "0+1x10", **node,
                                               event_type="mem_ecc_corrected", neuron_device_index="0"),
                                        series("neurondevice_hw_ecc_events_total_sram_ecc_corrected", "0+1x10",
                                               **node, neuron_device_index="0")], "5m"),
            Case("old uncorrected events, none new", [series("hardware_ecc_events_total", "3x30", **node,
                                                             event_type="mem_ecc_uncorrected",
                                                             neuron_device_index="0")], "20m"),
        ]
    elif alert == "VllmModelOnInferentiaFallback":
        def pod_on(model: ModelConfig, node: str, instance: str = ksm["instance"]) -> dict:
            return series("kube_pod_info", "1x30", job="kube-state-metrics", instance=instance, namespace=ns,
                          pod=pod_name(model.name), uid="u1", node=node, created_by_kind="ReplicaSet",
                          created_by_name=f"{model.name}-5d9f8c7b6", host_ip="10.0.4.4", pod_ip="10.0.4.5")

        def node_in(node: str, pool: str, instance: str = ksm["instance"]) -> dict:
            return series("kube_node_labels", "1x30", job="kube-state-metrics", instance=instance, node=node,
                          label_karpenter_sh_nodepool=pool, label_karpenter_k8s_aws_instance_family="inf2",
                          label_karpenter_sh_capacity_type="on-demand")

        firing = Case("model pod on the fallback pool",
                      [pod_on(a, "ip-inf"), node_in("ip-inf", p.fallback), pod_on(b, "ip-trn"),
                       node_in("ip-trn", p.trainium),
                       # A kube-state-metrics restart: the node reported by two targets at once.
                       node_in("ip-inf", p.fallback, instance="10.0.1.6:8080")], at,
                      [({"namespace": ns, "model": a.name, "pod": pod_name(a.name), "node": "ip-inf",
                         "label_karpenter_sh_nodepool": p.fallback}, {})])
        cases += [firing,
                  Case("on Trainium", [pod_on(a, "ip-trn"), node_in("ip-trn", p.trainium)], "20m"),
                  Case("another namespace's pod on the fallback pool", [
                      series("kube_pod_info", "1x30", **ksm, namespace="other", pod=pod_name(a.name), uid="u2",
                             node="ip-inf"), node_in("ip-inf", p.fallback)], "20m")]
        quiet_before_for(firing)
    elif alert == "NeuronNodePoolNearLimit":
        def pool(name: str, used: float, limit: float, resource: str = "aws.amazon.com/neuron",
                 instance: str = "10.0.0.4:8080") -> list[dict]:
            where = {"job": "karpenter", "instance": instance, "nodepool": name, "resource_type": resource}
            return [series("karpenter_nodepools_usage", f"{used:g}x30", **where),
                    series("karpenter_nodepools_limit", f"{limit:g}x30", **where)]

        firing = Case("at 80% and at 100%",
                      pool(p.trainium, 8, 10) + pool(p.fallback, p.limit, p.limit)
                      + pool(p.fallback, p.limit, p.limit, instance="10.0.0.5:8080"), at,
                      [({"nodepool": p.trainium}, {"humanizePercentage": "80%"}),
                       ({"nodepool": p.fallback}, {"humanizePercentage": "100%"})])
        cases += [firing,
                  Case("below 80%", pool(p.trainium, 7, 10) + pool(p.fallback, 0, p.limit), "20m"),
                  Case("CPU full, other pools full", pool(p.trainium, 16, 16, resource="cpu")
                       + pool("default", 4, 4), "20m")]
        quiet_before_for(firing)
    elif alert == "MonitoringTargetDown":
        def up(job: str, value: int) -> dict:
            return series("up", f"{value}x30", job=job, instance="10.0.5.5:8080")

        firing = Case("kube-state-metrics down", [up("kube-state-metrics", 0), up("karpenter", 1), up("vllm", 0)],
                      at, [({"job": "kube-state-metrics", "instance": "10.0.5.5:8080"}, {})])
        cases += [firing, Case("all up", [up("kube-state-metrics", 1), up("neuron-monitor", 1)], "20m")]
        quiet_before_for(firing)
    elif alert == "MonitoringTargetsMissing":
        firing = Case("no kube-state-metrics or vLLM target", [series("up", "1x30", job="karpenter", instance="i")],
                      at, [({"job": "kube-state-metrics"}, {}), ({"job": "vllm"}, {})])
        cases += [firing, Case("both scraped", [series("up", "0x30", job="kube-state-metrics", instance="i"),
                                                series("up", "1x30", job="vllm", instance="j")], "20m")]
        quiet_before_for(firing)
    return cases


def _rules(p: Params) -> dict[str, dict]:
    return {r["alert"]: r for g in yaml.safe_load(p.render())["groups"] for r in g["rules"]}


TEMPLATE = re.compile(r"\{\{ \$(labels\.(\w+)|value)( \| (\w+))? \}\}")


def expand(template: str, labels: dict[str, str], values: dict[str, str]) -> str:
    """The few template forms the rules use, filled in as Prometheus's templating would."""
    def one(match: re.Match) -> str:
        if match.group(2):
            return labels[match.group(2)]
        return values[match.group(4) or "value"]

    text = TEMPLATE.sub(one, template)
    assert "{{" not in text, f"template form the test does not know: {text}"
    return text


def _promtool_test(tmp_path: Path, rules_text: str, rule: dict, cases: list[Case]) -> subprocess.CompletedProcess:
    (tmp_path / "rules.yaml").write_text(rules_text)
    tests = []
    for case in cases:
        expected = []
        for labels, values in case.expected:
            all_labels = {**labels, **rule["labels"]}
            expected.append({"exp_labels": all_labels,
                             "exp_annotations": {k: expand(v, all_labels, values)
                                                 for k, v in rule["annotations"].items()}})
        tests.append({"name": case.name, "interval": "1m", "input_series": case.series,
                      "alert_rule_test": [{"eval_time": case.eval_time, "alertname": rule["alert"],
                                           "exp_alerts": expected}]})
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                                                         "tests": tests}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


ALERTS = sorted(FOR)


def test_the_rules_are_the_specified_ones():
    for params in PARAMS.values():
        rules = _rules(params)
        assert {name: rule.get("for") for name, rule in rules.items()} == FOR


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
def test_promtool_accepts_the_rules(tmp_path, params):
    path = tmp_path / "rules.yaml"
    path.write_text(params.render())
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("alert", ALERTS)
def test_rule_fires_when_it_should_and_only_then(tmp_path, params, alert):
    rule = _rules(params)[alert]
    cases = _cases(params, alert, FOR[alert])
    assert any(c.expected for c in cases) and any(not c.expected for c in cases), f"{alert} needs both kinds of case"
    result = _promtool_test(tmp_path, params.render(), rule, cases)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """Negative control: an expectation the rules do not meet is reported, so passing tests mean something."""
    rule = _rules(DEFAULT)["VllmModelNoReadyPod"]
    ready = Case("ready, but expected to fire", [
        series("kube_deployment_spec_replicas", "1x30", job="kube-state-metrics", namespace="vllm", deployment="mistral"),
        series("kube_deployment_status_replicas_available", "1x30", job="kube-state-metrics", namespace="vllm",
               deployment="mistral")], "20m", [({"namespace": "vllm", "deployment": "mistral", "model": "mistral"}, {})])
    result = _promtool_test(tmp_path, DEFAULT.render(), rule, [ready])
    assert result.returncode != 0
    assert "VllmModelNoReadyPod" in result.stdout + result.stderr


def test_every_rule_tells_on_call_what_to_run():
    for params in PARAMS.values():
        for name, rule in _rules(params).items():
            assert rule["labels"]["severity"] in ("critical", "warning"), name
            assert rule["annotations"]["summary"] and "`kubectl " in rule["annotations"]["description"], name


def test_rules_follow_the_parameters():
    rules = OTHER.render()
    assert 'namespace="serving"' in rules and 'namespace="vllm"' not in rules
    assert "> 0.5\n" in rules and 'nodepool=~"trn|inf"' in rules and 'label_karpenter_sh_nodepool="inf"' in rules
    assert "configured: 4 devices" in rules
    with pytest.raises(ValueError):
        alert_rules("vllm", [], 1.0, neuron_device_limit=2)
