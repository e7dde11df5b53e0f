"""The AMP alert manager definition: AMP's wrapper, a configuration amtool 0.25 accepts, every alert
routed to the SNS topic, and templates that render.

amtool 0.25 (Debian prometheus-alertmanager) knows `sns_configs` and its `sigv4` block (the SNS receiver
came with Alertmanager 0.23) and rejects unknown fields there, so the inner configuration is checked
as AMP will read it, with no part removed.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from components.observability.alertmanager import MESSAGE, SUBJECT, alertmanager_definition
from tests.test_alerts import DEFAULT, _rules

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
TOPIC = "arn:aws:sns:us-west-2:123456789012:trainium-vllm-alerts"


def _inner(definition: str) -> str:
    document = yaml.safe_load(definition)
    assert list(document) == ["alertmanager_config"]
    return document["alertmanager_config"]


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "alertmanager.yml"
    path.write_text(_inner(alertmanager_definition(TOPIC, "us-west-2")))
    return path


def _amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


def test_definition_is_amps_wrapper_around_a_block():
    definition = alertmanager_definition(TOPIC, "eu-west-1")
    assert definition.startswith("alertmanager_config: |")
    assert "topic_arn: " + TOPIC in _inner(definition)


def test_amtool_accepts_the_configuration(config_file):
    result = _amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout and "1 receivers" in result.stdout


def test_amtool_rejects_a_misspelt_sigv4_field(tmp_path):
    """Negative control: amtool knows sigv4's fields, so it would catch a typo in them."""
    broken = _inner(alertmanager_definition(TOPIC, "us-west-2")).replace("region: us-west-2", "regoin: us-west-2")
    path = tmp_path / "broken.yml"
    path.write_text(broken)
    result = _amtool("check-config", str(path))
    assert result.returncode != 0 and "regoin" in result.stdout + result.stderr


def test_sns_receiver_as_amp_requires():
    config = yaml.safe_load(_inner(alertmanager_definition(TOPIC, "ap-southeast-2")))
    (receiver,) = config["receivers"]
    (sns,) = receiver["sns_configs"]
    assert set(receiver) == {"name", "sns_configs"}  # SNS is the only receiver AMP supports
    assert sns["topic_arn"] == TOPIC and sns["sigv4"] == {"region": "ap-southeast-2"}
    assert "api_url" not in sns and "http_config" not in sns  # set by AMP / not supported
    assert "global" not in config or "http_config" not in config["global"]


def _hours(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)([smhd])", duration).groups()
    return int(value) * {"s": 1 / 3600, "m": 1 / 60, "h": 1, "d": 24}[unit]


def test_grouping_keeps_the_severity_attribute_defined():
    # The `severity` attribute reads CommonLabels: only labels all alerts of a group share are there.
    config = yaml.safe_load(_inner(alertmanager_definition(TOPIC, "us-west-2")))
    (sns,) = config["receivers"][0]["sns_configs"]
    assert "{{ .CommonLabels.severity }}" in sns["attributes"].values()
    assert {"alertname", "severity"} <= set(config["route"]["group_by"])


def test_repeat_intervals_within_amps_five_days():
    route = yaml.safe_load(_inner(alertmanager_definition(TOPIC, "us-west-2")))["route"]
    for r in [route, *route["routes"]]:
        assert _hours(r.get("repeat_interval", route["repeat_interval"])) <= 5 * 24


@pytest.mark.parametrize("labels", [
    ["alertname=VllmModelNoReadyPod", "severity=critical", "model=mistral"],
    ["alertname=NeuronNodePoolNearLimit", "severity=warning", "nodepool=neuron"],
    ["alertname=Anything"],
])
def test_every_alert_reaches_the_topic(config_file, labels):
    result = _amtool("config", "routes", "test", f"--config.file={config_file}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sns"


def test_inhibitions_name_existing_alerts():
    alerts = set(_rules(DEFAULT))
    config = yaml.safe_load(_inner(alertmanager_definition(TOPIC, "us-west-2")))
    named = set()
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            named |= set(re.fullmatch(r'alertname=~?"(.*)"', matcher).group(1).split("|"))
    assert named <= alerts, named - alerts


@pytest.mark.parametrize("template", [SUBJECT, MESSAGE], ids=["subject", "message"])
def test_templates_render(tmp_path, template):
    (tmp_path / "empty.tmpl").write_text('{{ define "unused" }}{{ end }}')
    result = _amtool("template", "render", f"--template.glob={tmp_path / 'empty.tmpl'}", f"--template.text={template}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_subject_fits_sns():
    # SNS subjects: ASCII, no control characters, at most 100 characters (longer ones are truncated).
    longest_alert = max(_rules(DEFAULT), key=len)
    subject = (SUBJECT.replace("{{ .Status | toUpper }}", "RESOLVED").replace("{{ .CommonLabels.severity }}", "critical")
               .replace("{{ .GroupLabels.alertname }}", longest_alert).replace("{{ .GroupLabels.model }}", "mistral"))
    assert "{{" not in subject and subject.isascii() and "\n" not in subject and len(subject) <= 100
