"""What the collector reads and where people look, inside the cluster: kube-state-metrics (Kubernetes objects as
metrics, with the Karpenter node labels), one neuron-monitor per Neuron node, and Grafana with the dashboards.

neuron-monitor reads the Neuron devices through the host and runs privileged (upstream's manifest, aws-neuron-sdk
src/k8): it gets a namespace of its own at Pod Security `privileged`, so nothing else gains that level. Never
install the CloudWatch Observability add-on beside it: that add-on runs its own neuron-monitor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import iam, neuron, versions
from components.observability.catalog import KSM_METRIC_LABELS_ALLOWLIST
from components.observability.scrape import (NEURON_MONITOR_POD_LABEL, NEURON_MONITOR_POD_NAME, NEURON_MONITOR_PORT,
                                            SCRAPE_INTERVAL)
from components.observability.dashboards import dashboards
from components.observability.workspace import query_policy
from components.pods import DIGEST_SKIP, DNS_EGRESS, INTERNET_HTTPS_EGRESS, POD_IDENTITY_EGRESS, checkov_skips

NAMESPACE = "monitoring"
NEURON_MONITOR_NAMESPACE = "neuron-monitor"
KSM_PORT = 8080
GRAFANA_RELEASE = "grafana"  # also the chart's fullname: its Deployment, Service and service account
GRAFANA_ADMIN_SECRET = "grafana-admin"
DASHBOARDS_CONFIG_MAP = "trainium-vllm-dashboards"
GRAFANA_DATASOURCE_UID = "amp"
_PRIVILEGED = ("neuron-monitor reads the Neuron devices and driver counters through the host and runs privileged "
               "(upstream aws-neuron-sdk src/k8 manifest), which implies root and every capability; it runs alone "
               "in its own namespace at Pod Security 'privileged'.")
_UNVERIFIED = ("Upstream's manifest sets no pod security context; a read-only root or a seccomp profile for a "
               "privileged exporter is not verified on a Neuron node, so none is set.")
NEURON_MONITOR_SKIPS = {
    **DIGEST_SKIP,
    # Privileged mode, and what it implies: privilege escalation, root, every capability, a low UID.
    **dict.fromkeys(("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_40"),
                    _PRIVILEGED),
    **dict.fromkeys(("CKV_K8S_22", "CKV_K8S_29", "CKV_K8S_31"), _UNVERIFIED),
}
# Requests and limits of every system workload added here (the system nodes' budget, tests/test_system_nodes.py).
KSM_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}
GRAFANA_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
# As upstream's manifest, which measured what neuron-monitor takes on a trn1.32xlarge.
NEURON_MONITOR_RESOURCES = {"requests": {"cpu": "256m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}


@dataclass
class MonitoringArgs:
    cluster_name: pulumi.Input[str]
    k8s_provider: k8s.Provider
    region: pulumi.Input[str]
    workspace_arn: pulumi.Input[str]
    query_url: pulumi.Input[str]
    model_namespace: str
    model_names: Sequence[str]
    ttft_target_seconds: float
    # The collector's address ranges: the only clients of kube-state-metrics.
    collector_cidr_blocks: Sequence[str]
    # Where kube-state-metrics and Grafana run: the system nodes.
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    # System nodes with DNS and Pod Identity (EksCluster.ready): the charts' pods need them to start.
    cluster_ready: Sequence[pulumi.Resource] = ()
    tags: dict[str, str] = field(default_factory=dict)


class Monitoring(pulumi.ComponentResource):
    """kube-state-metrics, neuron-monitor and Grafana, each pinned, with requests and limits."""

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        restricted = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE, "labels": restricted},
                                          opts=child)
        self._network_policies(name, args, namespace, child)
        system = {"nodeSelector": dict(args.node_selector), "tolerations": [dict(t) for t in args.tolerations]}

        self.kube_state_metrics = k8s.helm.v3.Release(f"{name}-kube-state-metrics", k8s.helm.v3.ReleaseArgs(
            name="kube-state-metrics",
            chart=versions.KUBE_STATE_METRICS_CHART,
            version=versions.KUBE_STATE_METRICS_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.KUBE_STATE_METRICS_CHART_REPOSITORY),
            namespace=NAMESPACE,
            values={
                **system,
                "image": {"pullPolicy": "Always"},
                "resources": KSM_RESOURCES,
                # kube_node_labels carries only allow-listed labels: these place each model on a pool.
                "metricLabelsAllowlist": [KSM_METRIC_LABELS_ALLOWLIST],
                # The managed collector ignores these annotations; it finds the pod by its labels.
                "prometheusScrape": False,
            },
        ), pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[namespace, *args.cluster_ready]))

        self._neuron_monitor(name, child)
        self._grafana(name, args, namespace, system)
        self.register_outputs({"namespace": NAMESPACE})

    def _network_policies(self, name: str, args: MonitoringArgs, namespace: k8s.core.v1.Namespace,
                          opts: pulumi.ResourceOptions) -> None:
        """Nothing in or out unless allowed: the collector reaches kube-state-metrics; kube-state-metrics reaches
        the API server, Grafana the workspace and its plugin's download (both over HTTPS)."""
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace]))
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", metadata={"name": "default-deny", "namespace": NAMESPACE},
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-kube-state-metrics", metadata={
            "name": "kube-state-metrics", "namespace": NAMESPACE,
        }, spec={
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kube-state-metrics"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}} for cidr in args.collector_cidr_blocks],
                         "ports": [{"port": KSM_PORT, "protocol": "TCP"}]}],
            "egress": [DNS_EGRESS, INTERNET_HTTPS_EGRESS],
        }, opts=opts)
        k8s.networking.v1.NetworkPolicy(f"{name}-grafana", metadata={"name": GRAFANA_RELEASE, "namespace": NAMESPACE},
            spec={
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "grafana"}},
                "policyTypes": ["Ingress", "Egress"],
                # People reach Grafana with `kubectl port-forward`, which the kubelet delivers inside the pod.
                "ingress": [],
                "egress": [DNS_EGRESS, POD_IDENTITY_EGRESS, INTERNET_HTTPS_EGRESS],
            }, opts=opts)

    def _neuron_monitor(self, name: str, opts: pulumi.ResourceOptions) -> None:
        namespace = k8s.core.v1.Namespace(f"{name}-neuron-monitor-namespace", metadata={
            "name": NEURON_MONITOR_NAMESPACE,
            "labels": {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")},
        }, opts=opts)
        # The label and port the collector's scrape job finds it by (components/observability/scrape.py).
        selector = {NEURON_MONITOR_POD_LABEL: NEURON_MONITOR_POD_NAME}
        labels = {**selector, "app.kubernetes.io/name": NEURON_MONITOR_POD_NAME,
                  "app.kubernetes.io/part-of": "trainium-vllm"}
        k8s.apps.v1.DaemonSet(f"{name}-neuron-monitor", metadata={
            "name": "neuron-monitor", "namespace": NEURON_MONITOR_NAMESPACE, "labels": labels,
            "annotations": checkov_skips(NEURON_MONITOR_SKIPS),
        }, spec={
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # Every Neuron instance type of the catalog (upstream's list lacks trn2), and the Neuron taint.
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                            {"key": "node.kubernetes.io/instance-type", "operator": "In",
                             "values": sorted(neuron.NEURON_INSTANCE_TYPES)},
                        ]}]}}},
                    "tolerations": [neuron.NEURON_TOLERATION],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "containers": [{
                        "name": "neuron-monitor",
                        "image": versions.NEURON_MONITOR_IMAGE,
                        "imagePullPolicy": "Always",
                        "command": ["/opt/bin/entrypoint.sh"],
                        "args": ["--port", str(NEURON_MONITOR_PORT),
                                 "--neuron-monitor-config", "/opt/aws/neuron/bin/neuron-monitor.conf"],
                        "ports": [{"name": "metrics", "containerPort": NEURON_MONITOR_PORT, "protocol": "TCP"}],
                        "env": [{"name": "GOMEMLIMIT", "value": "160MiB"}],
                        "resources": NEURON_MONITOR_RESOURCES,
                        # It answers on its metrics port once it has read the devices.
                        "readinessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 30},
                        "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 60, "failureThreshold": 5},
                        "securityContext": {"privileged": True},
                    }],
                },
            },
        }, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[namespace])))

    def _grafana(self, name: str, args: MonitoringArgs, namespace: k8s.core.v1.Namespace, system: dict) -> None:
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider, depends_on=[namespace])
        identity = iam.pod_identity(
            f"{name}-grafana", self, cluster_name=args.cluster_name, namespace=NAMESPACE,
            service_account=GRAFANA_RELEASE, description="Grafana: reads the metrics workspace",
            policy=pulumi.Output.from_input(args.workspace_arn).apply(lambda arn: json.dumps(query_policy(arn))),
            tags=args.tags)
        password = random.RandomPassword(f"{name}-grafana-admin", random.RandomPasswordArgs(length=32, special=False),
                                         pulumi.ResourceOptions(parent=self))
        admin = k8s.core.v1.Secret(f"{name}-grafana-admin", metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": NAMESPACE},
                                   string_data={"admin-user": "admin", "admin-password": password.result}, opts=child)
        self.admin_password: pulumi.Output[str] = pulumi.Output.secret(password.result)
        boards = dashboards(model_names=args.model_names, ttft_target_seconds=args.ttft_target_seconds,
                            model_namespace=args.model_namespace, trainium_nodepool=neuron.FIRST_CHOICE_POOL,
                            fallback_nodepool=neuron.INFERENTIA2_POOL)
        board_files = k8s.core.v1.ConfigMap(f"{name}-dashboards", metadata={
            "name": DASHBOARDS_CONFIG_MAP, "namespace": NAMESPACE,
        }, data=boards, opts=child)
        self.grafana_values = {
            **system,
            "image": {"tag": versions.GRAFANA_IMAGE_TAG, "pullPolicy": "Always"},
            # Pod Identity needs no Kubernetes token; the chart mounts one only for its sidecars, unused here.
            "automountServiceAccountToken": False,
            "resources": GRAFANA_RESOURCES,
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "plugins": [f"{versions.GRAFANA_AMP_PLUGIN}@{versions.GRAFANA_AMP_PLUGIN_VERSION}"],
            "grafana.ini": {
                # Since Grafana 12.4 a plugin sees no host environment unless named here; the Pod Identity
                # credentials are in the environment.
                "plugins": {"forward_host_env_vars": versions.GRAFANA_AMP_PLUGIN},
                "analytics": {"check_for_updates": False, "reporting_enabled": False},
            },
            "datasources": {"datasources.yaml": {"apiVersion": 1, "datasources": [{
                "name": "Amazon Managed Service for Prometheus",
                "type": versions.GRAFANA_AMP_PLUGIN,
                "uid": GRAFANA_DATASOURCE_UID,
                "url": args.query_url,
                "access": "proxy",
                "isDefault": True,
                "editable": False,
                # timeInterval: the scrape interval, so $__rate_interval spans enough samples.
                "jsonData": {"sigV4Auth": True, "sigV4AuthType": "default", "sigV4Region": args.region,
                             "timeInterval": SCRAPE_INTERVAL},
            }]}},
            # Dashboards straight from a ConfigMap this stack owns: no sidecar, no extra image.
            "dashboardProviders": {"dashboardproviders.yaml": {"apiVersion": 1, "providers": [{
                "name": "trainium-vllm", "orgId": 1, "folder": "trainium-vllm", "type": "file",
                "disableDeletion": True, "editable": False,
                "options": {"path": "/var/lib/grafana/dashboards/trainium-vllm"},
            }]}},
            "dashboardsConfigMaps": {"trainium-vllm": DASHBOARDS_CONFIG_MAP},
            # Roll the pod when a dashboard changes.
            "podAnnotations": {"trainium-vllm/dashboards-sha256":
                               hashlib.sha256(json.dumps(boards, sort_keys=True).encode()).hexdigest()},
        }
        self.grafana = k8s.helm.v3.Release(f"{name}-grafana", k8s.helm.v3.ReleaseArgs(
            name=GRAFANA_RELEASE,
            chart=versions.GRAFANA_CHART,
            version=versions.GRAFANA_CHART_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=versions.GRAFANA_CHART_REPOSITORY),
            namespace=NAMESPACE,
            values=self.grafana_values,
        ), pulumi.ResourceOptions(parent=self, provider=args.k8s_provider,
                                  depends_on=[namespace, admin, board_files, identity.association, identity.policy,
                                              *args.cluster_ready]))

