"""Every PromQL expression in the alert rules and the dashboards, parsed with promql-parser: each metric
name is one the pinned exporters emit (components/observability/catalog.py), each label it filters or
groups on exists on that metric or is a target label the scrape configuration produces for its job, and
each `job` it names is a job the scrape configuration has. A misspelt name is caught (negative control).
"""

from __future__ import annotations

import json
import re

import promql_parser as promql
import pytest
import yaml

from components.observability import catalog
from components.observability.dashboards import dashboards
from components.observability.scrape import scrape_configuration
from tests.test_alerts import PARAMS as RULE_PARAMS
from tests.test_dashboards import PARAMS as DASHBOARD_PARAMS

# Grafana's variables, as Grafana would substitute them.
GRAFANA = {"$__rate_interval": "2m", "$model": "mistral", "$node": "ip-10-0-3-9"}


def target_labels() -> dict[str, set[str]]:
    """Per scrape job: the labels its targets carry, read from the configuration itself."""
    config = yaml.safe_load(scrape_configuration())
    jobs = {}
    for job in config["scrape_configs"]:
        added = {r["target_label"] for r in job["relabel_configs"]
                 if r.get("action", "replace") == "replace" and not r["target_label"].startswith("__")}
        jobs[job["job_name"]] = {"job", "instance"} | added
    return jobs


TARGET_LABELS = target_labels()


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard query and variable."""
    found = []
    for params_name, params in RULE_PARAMS.items():
        for group in yaml.safe_load(params.render())["groups"]:
            for rule in group["rules"]:
                found.append((f"rules[{params_name}] {rule['alert']}", rule["expr"]))
    for params_name, params in DASHBOARD_PARAMS.items():
        for file_name, text in dashboards(**params).items():
            board = json.loads(text)
            for panel in board["panels"]:
                for target in panel["targets"]:
                    found.append((f"{file_name}[{params_name}] {panel['title']} {target['refId']}", target["expr"]))
            for variable in board["templating"]["list"]:
                inner = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
                found.append((f"{file_name}[{params_name}] ${variable['name']}", inner.group(1)))
    return found


def _jobs_of(metric: catalog.Metric, selector: promql.VectorSelector) -> set[str]:
    """The scrape jobs a selector can read, checking its `job` matcher against the configuration."""
    job_matchers = [m for m in selector.matchers.matchers if m.name == "job"]
    if metric.job != catalog.ANY_JOB:
        assert [(m.op, m.value) for m in job_matchers] == [(promql.MatchOp.Equal, metric.job)], \
            f"{metric.name} is scraped by job {metric.job}; the selector must say job=\"{metric.job}\""
        return {metric.job}
    (matcher,) = job_matchers
    names = set(matcher.value.split("|")) if matcher.op == promql.MatchOp.Re else {matcher.value}
    assert names <= set(TARGET_LABELS), f"no scrape job named {names - set(TARGET_LABELS)}"
    return names


def _labels_of(selector: promql.VectorSelector) -> set[str]:
    """The labels a series matched by this selector can carry."""
    metric = catalog.CATALOG.get(selector.name)
    assert metric is not None, f"{selector.name!r} is not a metric the pinned exporters emit"
    available = set(metric.labels)
    for job in _jobs_of(metric, selector):
        available |= TARGET_LABELS[job]
    unknown = {m.name for m in selector.matchers.matchers} - available
    assert not unknown, f"{selector.name} has no label {unknown} (it has {sorted(available)})"
    return available


def check(expr: str) -> None:
    """Raise AssertionError if a name, label or job in the expression is not one the stack produces."""
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    tree = promql.parse(expr)

    def labels_under(node) -> set[str]:
        """Labels any series under this node can carry, plus those label_replace adds."""
        found: set[str] = set()

        def visit(n):
            if isinstance(n, promql.VectorSelector):
                found.update(_labels_of(n))
            elif isinstance(n, promql.Call) and n.func.name == "label_replace":
                found.add(n.args[1].val)

        promql.walk(node, visit)
        return found

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            assert node.name is not None, "select metrics by name, not by __name__ matchers"
            _labels_of(node)
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - labels_under(node.expr)
            assert not missing, f"aggregation by {missing}, which no series under it carries"
        elif isinstance(node, promql.BinaryExpr) and node.modifier is not None and node.modifier.matching is not None:
            for side in (node.lhs, node.rhs):
                missing = set(node.modifier.matching.labels) - labels_under(side)
                assert not missing, f"vector matching on {missing}, which one side does not carry"
            if node.modifier.group_labels:
                one_side = node.rhs if node.modifier.card == promql.VectorMatchCardinality.ManyToOne else node.lhs
                missing = set(node.modifier.group_labels) - labels_under(one_side)
                assert not missing, f"group_left/right copies {missing}, which the other side does not carry"

    promql.walk(tree, visit)


EXPRESSIONS = expressions()


@pytest.mark.parametrize("where, expr", EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_names_labels_and_jobs_are_real(where, expr):
    check(expr)


def test_the_checks_cover_rules_dashboards_and_variables():
    wheres = [w for w, _ in EXPRESSIONS]
    assert sum(w.startswith("rules[") for w in wheres) >= 2 * 10
    assert sum(".json[" in w for w in wheres) >= 2 * 25
    assert any(w.endswith("$model") for w in wheres) and any(w.endswith("$node") for w in wheres)


@pytest.mark.parametrize("broken, complaint", [
    ('sum by (model) (vllm:num_request_waiting{job="vllm"})', "is not a metric"),  # misspelt name
    ('vllm:num_requests_waiting{job="vllm", model_id="m"}', "has no label"),  # a label nobody produces
    ('vllm:num_requests_waiting{job="vllm-metrics"}', "the selector must say job"),  # a job that does not exist
    ('kube_pod_info{job="kube-state-metrics", model="m"}', "has no label"),  # `model` is a vLLM target label only
    ('up{job=~"vllm|prometheus"}', "no scrape job named"),
    ('sum by (model) (kube_pod_status_phase{job="kube-state-metrics"})', "aggregation by"),
    ('kube_pod_info{job="kube-state-metrics"} * on (nodepool) group_left kube_node_labels{job="kube-state-metrics"}',
     "vector matching on"),
])
def test_negative_controls(broken, complaint):
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        check(broken)


def test_catalog_is_one_entry_per_name_each_with_a_source():
    assert len(catalog.CATALOG) == len(catalog._ENTRIES)
    for metric in catalog.CATALOG.values():
        assert metric.source and metric.kind in ("counter", "gauge", "histogram", "summary", "info")
        assert metric.job in (*TARGET_LABELS, catalog.ANY_JOB), metric.name
        assert not set(metric.labels) & {"job", "instance"}, metric.name  # the scraper's own labels
        if metric.kind == "counter":
            assert metric.name.endswith("_total"), metric.name


def test_kube_state_metrics_label_names_follow_its_sanitizing():
    # label_ + the key with every character outside [a-zA-Z0-9_] turned into `_` (kube-state-metrics 2.20).
    names = {"label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key) for key in catalog.KSM_NODE_LABELS}
    assert names == set(catalog.CATALOG["kube_node_labels"].labels) - {"node"}
    assert catalog.KSM_METRIC_LABELS_ALLOWLIST.startswith("nodes=[karpenter.sh/nodepool,")
