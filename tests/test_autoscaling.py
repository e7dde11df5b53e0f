"""Autoscaling: KEDA scales each autoscaled model between `replicas` and `maxReplicas` on the load of its replicas,
read from the metrics workspace with KEDA's own read-only identity."""

from __future__ import annotations

import json

import pytest
import yaml

from components.autoscaling import load_query
from components.observability.scrape import scrape_configuration
from tests.schemas import custom_resource_problems

SCALED_OBJECT = "kubernetes:keda.sh/v1alpha1:ScaledObject"
TRIGGER_AUTHENTICATION = "kubernetes:keda.sh/v1alpha1:TriggerAuthentication"
KEDA = "kubernetes:helm.sh/v3:Release"


@pytest.fixture(scope="module")
def autoscaled():
    """Two models, one autoscaled between 1 and 3 with its own target, one fixed; another namespace."""
    from tests.conftest import with_settings
    from tools.offline import run_program, stack_values
    return run_program(with_settings(
        stack_values("dev"),
        neuron={"instanceTypes": ["trn1.2xlarge", "inf2.xlarge"], "maxNeuronDevices": 5},
        vllm={"namespace": "serving", "models": [
            {"name": "mistral", "replicas": 1, "maxReplicas": 3, "maxNumSeqs": 1, "targetRequestsPerReplica": 2},
            {"name": "fixed", "huggingFaceRepo": "aws-neuron/other-model"}]}))


def _scaled_objects(deployment):
    return {r.manifest()["metadata"]["name"]: r for r in deployment.of_type(SCALED_OBJECT)}


def test_no_model_autoscales_by_default_so_no_keda(dev_deployment):
    assert not dev_deployment.of_type(SCALED_OBJECT)
    assert not [r for r in dev_deployment.of_type(KEDA) if r.inputs["name"] == "keda"]


def test_only_autoscaled_models_get_a_scaled_object_within_their_bounds(autoscaled):
    (name, scaled), = _scaled_objects(autoscaled).items()
    assert name == "mistral"
    spec = scaled.manifest()["spec"]
    assert spec["scaleTargetRef"] == {"name": "mistral"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    assert scaled.manifest()["metadata"]["namespace"] == "serving"
    assert custom_resource_problems(scaled.manifest()) == []


def test_scales_on_running_plus_waiting_requests_per_replica(autoscaled):
    (trigger,) = _scaled_objects(autoscaled)["mistral"].manifest()["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "prometheus"
    assert metadata["query"] == load_query("serving", "mistral")
    assert "vllm:num_requests_running" in metadata["query"] and "vllm:num_requests_waiting" in metadata["query"]
    assert metadata["threshold"] == "2"  # targetRequestsPerReplica: desired = ceil(load / 2)
    workspace = autoscaled.one("aws:amp/workspace:Workspace").outputs["id"]
    assert metadata["serverAddress"] == f"https://aps-workspaces.us-west-2.amazonaws.com/workspaces/{workspace}"
    assert metadata["awsRegion"] == "us-west-2"


def test_the_query_uses_labels_the_collector_sets():
    # The vllm scrape job labels model series with `namespace` and `model` (the pod's app.kubernetes.io/instance).
    (job,) = [j for j in yaml.safe_load(scrape_configuration("serving"))["scrape_configs"] if j["job_name"] == "vllm"]
    targets = {r.get("target_label"): r["source_labels"] for r in job["relabel_configs"] if r.get("target_label")}
    assert targets["model"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"]
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert 'namespace="serving",model="mistral"' in load_query("serving", "mistral")


def test_the_target_follows_max_num_seqs_by_default(deploy):
    deployment = deploy(neuron={"instanceTypes": ["trn1.2xlarge"], "maxNeuronDevices": 4},
                        vllm={"models": [{"name": "mistral", "maxNumSeqs": 1, "maxReplicas": 2}]})
    (scaled,) = _scaled_objects(deployment).values()
    assert scaled.manifest()["spec"]["triggers"][0]["metadata"]["threshold"] == "1"


def test_scale_down_waits_and_failed_queries_hold_the_count(autoscaled):
    spec = _scaled_objects(autoscaled)["mistral"].manifest()["spec"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # The HPA's window governs scaling down (KEDA's cooldownPeriod only governs scaling to zero).
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    assert spec["minReplicaCount"] >= 1  # never to zero: a cold start takes minutes


def test_keda_authenticates_with_its_own_read_only_pod_identity(autoscaled):
    authentication = autoscaled.one(TRIGGER_AUTHENTICATION).manifest()
    assert authentication["spec"] == {"podIdentity": {"provider": "aws", "identityOwner": "keda"}}
    assert custom_resource_problems(authentication) == []
    (trigger,) = _scaled_objects(autoscaled)["mistral"].manifest()["spec"]["triggers"]
    assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}
    assert authentication["metadata"]["namespace"] == "serving"
    association = autoscaled.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "autoscaling-keda")
    release = next(r for r in autoscaled.of_type(KEDA) if r.inputs["name"] == "keda")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        release.inputs["namespace"], release.inputs["values"]["serviceAccount"]["operator"]["name"])
    (statement,) = json.loads(autoscaled.one("aws:iam/rolePolicy:RolePolicy", "autoscaling-keda").inputs["policy"])[
        "Statement"]
    assert statement["Resource"] == autoscaled.one("aws:amp/workspace:Workspace").outputs["arn"]
    assert "aps:QueryMetrics" in statement["Action"] and not [a for a in statement["Action"] if "Write" in a]


def test_keda_is_pinned_and_runs_on_the_system_nodes(autoscaled):
    release = next(r for r in autoscaled.of_type(KEDA) if r.inputs["name"] == "keda")
    assert (release.inputs["chart"], release.inputs["version"]) == ("keda", "2.20.2")
    assert release.inputs["repositoryOpts"] == {"repo": "https://kedacore.github.io/charts"}
    values = release.inputs["values"]
    group = autoscaled.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert values["nodeSelector"] == group["labels"]
    assert [t["key"] for t in values["tolerations"]] == [t["key"] for t in group["taints"]]
    for component in ("operator", "metricServer", "webhooks"):
        assert set(values["resources"][component]) == {"requests", "limits"}


def test_scaled_objects_come_after_keda_and_the_deployment_and_go_before_them(autoscaled):
    release = next(r for r in autoscaled.of_type(KEDA) if r.inputs["name"] == "keda")
    scaled = _scaled_objects(autoscaled)["mistral"]
    model = next(r for r in autoscaled.of_type("kubernetes:apps/v1:Deployment") if r.name == "mistral")
    # Deleted while KEDA still runs, so destroy does not hang on their finalizers.
    assert release.urn in scaled.dependencies and model.urn in scaled.dependencies
    assert autoscaled.depends_on(scaled, autoscaled.one(TRIGGER_AUTHENTICATION))
    # Pulumi never resets the count KEDA set; the fixed model keeps Pulumi's.
    assert model.ignore_changes == ["spec.replicas"]
    fixed = next(r for r in autoscaled.of_type("kubernetes:apps/v1:Deployment") if r.name == "fixed")
    assert fixed.ignore_changes == []


def test_the_device_ceiling_counts_autoscaled_models_at_their_maximum(deploy):
    from components.config import ConfigError
    with pytest.raises(ConfigError, match=r"request 4 Neuron devices in all \(neuronDevices x maxReplicas\)"):
        deploy(vllm={"models": [{"name": "mistral", "replicas": 1, "maxReplicas": 4}]})
