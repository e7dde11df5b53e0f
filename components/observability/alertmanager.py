"""The AMP alert manager definition (`aws.amp.AlertManagerDefinition.definition`): every alert to one SNS topic.

Format and limits, from the AMP user guide:
- The file has `alertmanager_config:` (a standalone Alertmanager configuration, as a string) and
  optionally `template_files:`; `repeat_interval` above five days is treated as five days
  (AMP-alertmanager-config).
- SNS is the only receiver; `api_url` and `http_config` are not allowed; `sigv4` must name the region
  (AMP-alertmanager-receiver-config, "Unsupported properties").
- SNS subjects over 100 characters are truncated and subjects with control or non-ASCII characters are
  replaced (AMP-alertmanager-receiver-validation-truncation): the subject uses only ASCII label values
  (alert names, model names, which are DNS labels) and no newline.
Subject, message and attribute keys and values are Go templates (Alertmanager notify/sns/sns.go,
createMessageAttributes and Notify).
"""

from __future__ import annotations

from components.observability.text import dump_yaml

# Same alert, same model: one message. Severity too, so the `severity` attribute is never empty.
GROUP_BY = ["alertname", "severity", "namespace", "model", "node", "nodepool"]

SUBJECT = "[{{ .Status | toUpper }}] {{ .CommonLabels.severity }}: {{ .GroupLabels.alertname }} {{ .GroupLabels.model }}"
MESSAGE = """\
{{ range .Alerts }}{{ .Status | toUpper }} {{ .Labels.alertname }} ({{ .Labels.severity }})
{{ .Annotations.summary }}
{{ .Annotations.description }}
Labels: {{ range .Labels.SortedPairs }}{{ .Name }}={{ .Value }} {{ end }}
Since: {{ .StartsAt }}

{{ end }}"""


def _config(topic_arn: str, region: str) -> dict:
    receiver = "sns"
    return {
        "route": {
            "receiver": receiver,
            "group_by": GROUP_BY,
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            # A model or a device that is down is repeated more often than a warning.
            "routes": [{"matchers": ['severity="critical"'], "receiver": receiver, "repeat_interval": "1h"}],
        },
        "inhibit_rules": [
            # A model with no ready pod explains its queue, latency and pending pod: one page, not four.
            {"source_matchers": ['alertname="VllmModelNoReadyPod"'],
             "target_matchers": ['alertname=~"VllmModelPodPendingTooLong|VllmTimeToFirstTokenHigh|VllmQueueBacklog"'],
             "equal": ["namespace", "model"]},
            {"source_matchers": ['alertname="NeuronHardwareErrors"'],
             "target_matchers": ['alertname="NeuronExecutionErrors"'],
             "equal": ["node"]},
        ],
        "receivers": [{
            "name": receiver,
            "sns_configs": [{
                "topic_arn": topic_arn,
                "sigv4": {"region": region},
                "subject": SUBJECT,
                "message": MESSAGE,
                "attributes": {"alertname": "{{ .GroupLabels.alertname }}",
                               "severity": "{{ .CommonLabels.severity }}",
                               "status": "{{ .Status }}"},
                "send_resolved": True,
            }],
        }],
    }


def alertmanager_definition(topic_arn: str, region: str) -> str:
    """The definition AMP takes: `alertmanager_config: |` followed by the Alertmanager configuration."""
    return dump_yaml({"alertmanager_config": dump_yaml(_config(topic_arn, region))})
