"""The observability stack as deployed: workspace, collector, alerts to SNS, exporters and Grafana, wired together.

The configuration they carry (scrape jobs, rules, alert manager, dashboards) is tested with promtool, amtool
and the metric catalog in test_scrape.py, test_alerts.py, test_alertmanager.py and test_dashboards.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from components.observability import monitoring
from components.observability.alerts import alert_rules
from components.observability.scrape import scrape_configuration
from tests.schemas import core_problems

SCRAPER = "aws:amp/scraper:Scraper"
RELEASE = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def deployment(dev_deployment):
    return dev_deployment


def _manifests(deployment, kind, namespace):
    return {r.manifest()["metadata"]["name"]: r.manifest() for r in deployment.of_type(kind)
            if r.manifest()["metadata"].get("namespace") == namespace}


def test_the_collector_reads_this_cluster_from_subnets_of_its_own(deployment):
    scraper = deployment.one(SCRAPER)
    eks = scraper.inputs["source"]["eks"]
    assert eks["clusterArn"] == "arn:aws:eks:us-west-2:123456789012:cluster/trainium-vllm-dev"
    collector_subnets = sorted(s.outputs["id"] for s in deployment.of_type("aws:ec2/subnet:Subnet")
                               if "-collector-" in s.name)
    assert sorted(eks["subnetIds"]) == collector_subnets and len(collector_subnets) == 3
    # The cluster security group: the nodes', so its interfaces reach the pods.
    assert eks["securityGroupIds"] == [deployment.one("eks:index:Cluster").outputs["clusterSecurityGroupId"]]
    workspace = deployment.one("aws:amp/workspace:Workspace")
    assert scraper.inputs["destination"]["amp"]["workspaceArn"] == workspace.outputs["arn"]
    assert scraper.inputs["scrapeConfiguration"] == scrape_configuration("vllm", "monitoring", "neuron-monitor")
    assert scraper.custom_timeouts == {"create": "30m", "delete": "30m"}  # minutes on both paths


def test_the_collector_may_read_pods_and_metrics_only(deployment):
    (role,) = [r.manifest() for r in deployment.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                             {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = deployment.one("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    manifest = binding.manifest()
    assert manifest["roleRef"]["name"] == role["metadata"]["name"]
    assert manifest["subjects"] == [{"kind": "User", "name": "aps-collector-user", "apiGroup": "rbac.authorization.k8s.io"}]
    assert deployment.depends_on(deployment.one(SCRAPER), binding)


def test_collector_reaches_the_model_pods_and_kube_state_metrics_only_from_its_subnets(deployment):
    collector = sorted(s.inputs["cidrBlock"] for s in deployment.of_type("aws:ec2/subnet:Subnet")
                       if "-collector-" in s.name)
    policies = _manifests(deployment, "kubernetes:networking.k8s.io/v1:NetworkPolicy", "monitoring")
    assert policies["default-deny"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    (ingress,) = policies["kube-state-metrics"]["spec"]["ingress"]
    assert sorted(p["ipBlock"]["cidr"] for p in ingress["from"]) == collector
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert policies["grafana"]["spec"]["ingress"] == []  # port-forward only


def test_rules_carry_the_stack_settings(deploy):
    deployment = deploy(observability={"enabled": True, "ttftTargetSeconds": 0.75, "alertEmails": []},
                        vllm={"namespace": "serving", "models": [{"name": "mistral", "maxNumSeqs": 1},
                                                                 {"name": "llama", "huggingFaceRepo": "a/b"}]})
    rules = deployment.one("aws:amp/ruleGroupNamespace:RuleGroupNamespace").inputs
    models = [m for m in deployment.of_type("kubernetes:apps/v1:Deployment")]
    assert len(models) == 2
    from components.config import ModelConfig
    expected = alert_rules("serving", [ModelConfig(name="mistral"), ModelConfig(name="llama", hugging_face_repo="a/b")],
                           0.75, neuron_device_limit=2)
    assert rules["data"] == expected
    assert "0.75" in rules["data"] and 'namespace="serving"' in rules["data"]
    assert rules["workspaceId"] == deployment.one("aws:amp/workspace:Workspace").outputs["id"]


def test_alerts_go_to_an_encrypted_topic_only_this_workspace_may_publish_to(deployment, deploy):
    workspace = deployment.one("aws:amp/workspace:Workspace").outputs["arn"]
    topic = deployment.one("aws:sns/topic:Topic")
    key = deployment.one("aws:kms/key:Key", "metrics-alerts")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"] and key.inputs["enableKeyRotation"] is True
    key_statements = {s["Sid"]: s for s in json.loads(key.inputs["policy"])["Statement"]}
    assert key_statements["AlertManagerEncrypts"]["Action"] == ["kms:GenerateDataKey*", "kms:Decrypt"]
    assert key_statements["AlertManagerEncrypts"]["Condition"]["ArnEquals"] == {"aws:SourceArn": workspace}
    topic_policy = deployment.one("aws:sns/topicPolicy:TopicPolicy")
    publish, deny = json.loads(topic_policy.inputs["policy"])["Statement"]
    assert publish["Principal"] == {"Service": "aps.amazonaws.com"}
    assert publish["Condition"] == {"ArnEquals": {"aws:SourceArn": workspace},
                                    "StringEquals": {"aws:SourceAccount": "123456789012"}}
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    definition = deployment.one("aws:amp/alertManagerDefinition:AlertManagerDefinition")
    config = yaml.safe_load(yaml.safe_load(definition.inputs["definition"])["alertmanager_config"])
    (receiver,) = config["receivers"]
    assert receiver["sns_configs"][0]["topic_arn"] == topic.outputs["arn"]
    assert receiver["sns_configs"][0]["sigv4"] == {"region": "us-west-2"}
    assert deployment.depends_on(definition, topic_policy)  # AMP may publish before it tries
    assert not deployment.of_type("aws:sns/topicSubscription:TopicSubscription")
    emails = deploy(observability={"alertEmails": ["oncall@example.com", "ml-team@example.com"]})
    subscriptions = emails.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert sorted(s.inputs["endpoint"] for s in subscriptions) == ["ml-team@example.com", "oncall@example.com"]
    assert {s.inputs["protocol"] for s in subscriptions} == {"email"}


def test_kube_state_metrics_exports_the_karpenter_node_labels(deployment):
    release = deployment.one(RELEASE, "monitoring-kube-state-metrics")
    assert (release.inputs["chart"], release.inputs["version"]) == ("kube-state-metrics", "8.4.0")
    assert release.inputs["repositoryOpts"]["repo"] == "https://prometheus-community.github.io/helm-charts"
    assert release.inputs["values"]["metricLabelsAllowlist"] == [
        "nodes=[karpenter.sh/nodepool,karpenter.k8s.aws/instance-family,karpenter.sh/capacity-type,"
        "node.kubernetes.io/instance-type]"]
    _on_system_nodes_with_resources(deployment, release.inputs["values"], release.inputs["values"]["resources"])


def _on_system_nodes_with_resources(deployment, values, resources):
    group = deployment.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert values["nodeSelector"] == group["labels"]
    assert [t["key"] for t in values["tolerations"]] == [t["key"] for t in group["taints"]]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])


def test_one_privileged_neuron_monitor_per_neuron_node_in_a_namespace_of_its_own(deployment):
    namespace = _manifests(deployment, "kubernetes:core/v1:Namespace", None)["neuron-monitor"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    (daemon_set,) = _manifests(deployment, "kubernetes:apps/v1:DaemonSet", "neuron-monitor").values()
    spec = daemon_set["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    types = next(e["values"] for e in term["matchExpressions"] if e["key"] == "node.kubernetes.io/instance-type")
    # Our whole catalog, trn2 included (upstream's list lacks it).
    assert {"trn1.2xlarge", "inf2.xlarge", "trn2.3xlarge", "trn2.48xlarge"} <= set(types)
    assert {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    (container,) = spec["containers"]
    assert container["image"] == "public.ecr.aws/neuron/neuron-monitor:1.3.0"
    assert container["securityContext"] == {"privileged": True}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert daemon_set["metadata"]["annotations"]["checkov.io/skip1"].startswith("CKV_K8S_16=")
    assert core_problems(daemon_set) == []
    # The scrape job finds it by this label and port.
    assert daemon_set["spec"]["template"]["metadata"]["labels"]["app"] == "neuron-monitor"
    assert container["ports"][0]["containerPort"] == 8000


def test_grafana_reads_the_workspace_over_sigv4_with_a_read_only_identity(deployment):
    release = deployment.one(RELEASE, "monitoring-grafana")
    values = release.inputs["values"]
    assert (release.inputs["chart"], release.inputs["version"]) == ("grafana", "12.11.1")
    assert values["image"]["tag"] == "13.2.0"
    assert values["plugins"] == ["grafana-amazonprometheus-datasource@3.3.4"]
    (source,) = values["datasources"]["datasources.yaml"]["datasources"]
    workspace = deployment.one("aws:amp/workspace:Workspace").outputs["id"]
    assert source["url"] == f"https://aps-workspaces.us-west-2.amazonaws.com/workspaces/{workspace}"
    assert (source["type"], source["uid"]) == ("grafana-amazonprometheus-datasource", "amp")
    assert source["jsonData"] == {"sigV4Auth": True, "sigV4AuthType": "default", "sigV4Region": "us-west-2",
                                  "timeInterval": "30s"}
    # Pod Identity credentials are environment variables; Grafana hides them from plugins unless named.
    assert values["grafana.ini"]["plugins"]["forward_host_env_vars"] == "grafana-amazonprometheus-datasource"
    association = deployment.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "monitoring-grafana")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == ("monitoring", "grafana")
    policy = deployment.one("aws:iam/rolePolicy:RolePolicy", "monitoring-grafana")
    (statement,) = json.loads(policy.inputs["policy"])["Statement"]
    assert all(a.startswith(("aps:Query", "aps:Get")) for a in statement["Action"])
    assert statement["Resource"] == deployment.one("aws:amp/workspace:Workspace").outputs["arn"]
    _on_system_nodes_with_resources(deployment, values, values["resources"])


def test_grafana_admin_password_is_generated_kept_in_a_secret_and_exported_as_a_secret(deployment):
    secret = _manifests(deployment, "kubernetes:core/v1:Secret", "monitoring")["grafana-admin"]
    password = deployment.exports["grafanaAdminPassword"]
    assert secret["stringData"] == {"admin-user": "admin", "admin-password": password} and len(password) == 32
    assert "grafanaAdminPassword" in deployment.secret_exports
    values = deployment.one(RELEASE, "monitoring-grafana").inputs["values"]
    assert values["admin"] == {"existingSecret": "grafana-admin", "userKey": "admin-user", "passwordKey": "admin-password"}
    assert password not in json.dumps(values)


def test_dashboards_are_provisioned_from_a_config_map_the_stack_owns(deployment):
    board_files = _manifests(deployment, "kubernetes:core/v1:ConfigMap", "monitoring")[monitoring.DASHBOARDS_CONFIG_MAP]
    assert set(board_files["data"]) == {"trainium-vllm-serving.json", "trainium-vllm-neuron.json",
                                        "trainium-vllm-capacity.json"}
    values = deployment.one(RELEASE, "monitoring-grafana").inputs["values"]
    (provider,) = values["dashboardProviders"]["dashboardproviders.yaml"]["providers"]
    (name, config_map), = values["dashboardsConfigMaps"].items()
    assert config_map == monitoring.DASHBOARDS_CONFIG_MAP
    # The chart mounts dashboardsConfigMaps.<name> at /var/lib/grafana/dashboards/<name>.
    assert provider["options"]["path"] == f"/var/lib/grafana/dashboards/{name}"
    for text in board_files["data"].values():
        board = json.loads(text)
        sources = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])}
        assert sources == {"amp"}


def test_observability_can_be_turned_off_entirely(deploy):
    deployment = deploy(observability={"enabled": False})
    assert not [r for r in deployment.resources if r.type.startswith(("aws:amp/", "aws:sns/"))]
    assert not [r for r in deployment.resources if r.type == RELEASE and "monitoring" in r.name]
    assert not {"metricsWorkspace", "grafanaAdminPassword"} & set(deployment.exports)
    assert not _manifests(deployment, "kubernetes:apps/v1:DaemonSet", "neuron-monitor")


def test_the_charts_wait_for_the_system_nodes_dns_and_pod_identity(deployment, deploy):
    """A component's dependencies do not hold back its children: each release names them itself."""
    autoscaled = deploy(neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 2},
                        vllm={"models": [{"name": "mistral", "maxReplicas": 2}]})
    for stack, release in ((deployment, "monitoring-grafana"), (deployment, "monitoring-kube-state-metrics"),
                           (autoscaled, "autoscaling-keda")):
        chart = stack.one(RELEASE, release)
        for needed in (stack.one("aws:eks/nodeGroup:NodeGroup"),
                       stack.one("aws:eks/addon:Addon", "trainium-vllm-dev-coredns"),
                       stack.one("aws:eks/addon:Addon", "trainium-vllm-dev-pod-identity-agent")):
            assert needed.urn in chart.dependencies, (release, needed.name)


def test_a_sync_job_is_created_after_its_priority_class(deployment):
    priority = deployment.one("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    assert deployment.depends_on(deployment.one("kubernetes:batch/v1:Job"), priority)
