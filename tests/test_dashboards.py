"""The Grafana dashboards: deterministic JSON, the AMP datasource plugin everywhere, a sane layout, and the
panels on-call needs (the metric names in every query are checked in tests/test_metric_names.py)."""

from __future__ import annotations

import json

import pytest

from components.observability.dashboards import DATASOURCE, dashboards

PARAMS = {"default": {"model_names": ["mistral"], "ttft_target_seconds": 2.0},
          "other": {"model_names": ["llama-3", "mistral-7b"], "ttft_target_seconds": 0.5, "model_namespace": "serving",
                    "trainium_nodepool": "trn", "fallback_nodepool": "inf"}}


@pytest.fixture(params=PARAMS.values(), ids=PARAMS.keys())
def boards(request) -> dict[str, dict]:
    return {name: json.loads(text) for name, text in dashboards(**request.param).items()}


def _walk(node):
    """Every dict in a JSON document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_three_dashboards_with_stable_uids(boards):
    assert {name: b["uid"] for name, b in boards.items()} == {
        "trainium-vllm-serving.json": "trainium-vllm-serving", "trainium-vllm-neuron.json": "trainium-vllm-neuron",
        "trainium-vllm-capacity.json": "trainium-vllm-capacity"}


def test_deterministic_sorted_json():
    first, second = dashboards(**PARAMS["other"]), dashboards(**PARAMS["other"])
    assert first == second
    for text in first.values():
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_every_datasource_is_the_amp_plugin(boards):
    for name, board in boards.items():
        sources = [d["datasource"] for d in _walk(board) if "datasource" in d]
        assert sources and all(s == DATASOURCE for s in sources), name
        assert '"prometheus"' not in json.dumps(board), name  # the upstream dashboards' datasource type
        for panel in board["panels"]:
            assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"])


def test_layout_ids_and_ref_ids(boards):
    for name, board in boards.items():
        panels = board["panels"]
        assert [p["id"] for p in panels] == list(range(1, len(panels) + 1)), name
        cells = set()
        for p in panels:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (name, p["title"])
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & area, f"{name}: {p['title']} overlaps another panel"
            cells |= area
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in p["targets"])
            assert p["title"] and p["description"]


def test_serving_panels_and_ttft_target():
    board = json.loads(dashboards(**PARAMS["other"])["trainium-vllm-serving.json"])
    titles = {p["title"]: p for p in board["panels"]}
    for needed in ("Time to first token", "End-to-end request latency", "Tokens per second",
                   "Requests running and waiting", "Successful requests", "Errors"):
        assert needed in titles
    ttft = titles["Time to first token"]
    steps = ttft["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 0.5} in steps
    assert [t["legendFormat"] for t in ttft["targets"]] == ["{{model}} p50", "{{model}} p95", "{{model}} p99"]
    assert all('namespace="serving"' in t["expr"] and 'model=~"$model"' in t["expr"] for t in ttft["targets"])
    (variable,) = board["templating"]["list"]
    assert variable["name"] == "model" and variable["multi"] and variable["includeAll"]


def test_neuron_panels_per_node():
    board = json.loads(dashboards(**PARAMS["default"])["trainium-vllm-neuron.json"])
    (variable,) = board["templating"]["list"]
    assert variable["name"] == "node"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert all('node=~"$node"' in e for e in exprs)
    assert any("neuroncore_utilization_ratio" in e for e in exprs)
    assert any("execution_errors_total" in e for e in exprs)


def test_capacity_panels_follow_the_pools_and_models():
    board = json.loads(dashboards(**PARAMS["other"])["trainium-vllm-capacity.json"])
    text = json.dumps(board)
    assert 'label_karpenter_sh_nodepool=\\"inf\\"' in text and 'nodepool=~\\"trn|inf\\"' in text
    assert "(llama-3|mistral-7b)-[a-z0-9]+-[a-z0-9]+" in text
    titles = [p["title"] for p in board["panels"]]
    for needed in ("Neuron nodes by instance family and capacity type", "Neuron devices: used and limit",
                   "Instance launch failures", "Model pods per NodePool", "Model pod startup"):
        assert needed in titles


def test_needs_models():
    with pytest.raises(ValueError):
        dashboards(model_names=[], ttft_target_seconds=1.0)
