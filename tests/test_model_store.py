"""The model store and its sync Jobs: a private bucket reached in-region, and a copy of each model made once."""

from __future__ import annotations

import json

import pytest

from components.model_store import sync_job_name
from components.config import ModelConfig
from tests.schemas import core_problems

BUCKET = "aws:s3/bucket:Bucket"
JOB = "kubernetes:batch/v1:Job"


def _of_bucket(deployment, type_):
    bucket = deployment.one(BUCKET)
    (resource,) = [r for r in deployment.of_type(type_) if r.inputs.get("bucket") == bucket.outputs["bucket"]]
    return resource.inputs


@pytest.fixture(scope="module")
def job(dev_deployment):
    return dev_deployment.one(JOB).manifest()


def test_bucket_is_private_encrypted_tls_only_and_emptied_by_destroy(dev_deployment):
    bucket = dev_deployment.one(BUCKET)
    assert bucket.inputs["forceDestroy"] is True  # `pulumi destroy` deletes the objects, then the bucket
    assert bucket.inputs["bucketPrefix"] == "trainium-vllm-dev-models-"
    block = _of_bucket(dev_deployment, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    ownership = _of_bucket(dev_deployment, "aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership["rule"] == {"objectOwnership": "BucketOwnerEnforced"}  # no ACLs at all
    (rule,) = _of_bucket(dev_deployment, "aws:s3/bucketServerSideEncryptionConfiguration:"
                                         "BucketServerSideEncryptionConfiguration")["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    (deny,) = json.loads(_of_bucket(dev_deployment, "aws:s3/bucketPolicy:BucketPolicy")["policy"])["Statement"]
    assert (deny["Effect"], deny["Action"], deny["Condition"]) == ("Deny", "s3:*", {"Bool": {"aws:SecureTransport": "false"}})
    assert deny["Resource"] == [bucket.outputs["arn"], bucket.outputs["arn"] + "/*"]
    (lifecycle,) = _of_bucket(dev_deployment, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    assert lifecycle["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 1}


def test_the_bucket_name_follows_the_cluster_name_in_lower_case(deploy):
    deployment = deploy(clusterName="Trainium-Prod-West-With-A-Long-Name")
    prefix = deployment.one(BUCKET).inputs["bucketPrefix"]
    assert prefix == "trainium-prod-west-with-a-lo-models-" and len(prefix) <= 37


def test_s3_traffic_of_the_nodes_stays_in_the_vpc(dev_deployment):
    endpoint = dev_deployment.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert (endpoint["vpcEndpointType"], endpoint["serviceName"]) == ("Gateway", "com.amazonaws.us-west-2.s3")
    private_routes = dev_deployment.one("aws:ec2/routeTable:RouteTable", "trainium-vllm-dev-private")
    assert endpoint["routeTableIds"] == [private_routes.outputs["id"]]
    assert endpoint["vpcId"] == dev_deployment.one("aws:ec2/vpc:Vpc").outputs["id"]
    statements = {s["Sid"]: s for s in json.loads(endpoint["policy"])["Statement"]}
    bucket = dev_deployment.one(BUCKET).outputs["arn"]
    assert statements["ModelStore"]["Resource"] == [bucket, f"{bucket}/*"]
    # Nodes still reach what they pull from S3: ECR's image layers and the OS packages.
    assert statements["ContainerImageLayers"]["Resource"] == "arn:aws:s3:::prod-us-west-2-starport-layer-bucket/*"
    assert statements["OperatingSystemPackages"]["Resource"] == "arn:aws:s3:::al2023-repos-us-west-2-de612dc2/*"
    assert {s["Action"] for s in statements.values() if s["Sid"] != "ModelStore"} == {"s3:GetObject"}


def test_sync_job_runs_once_per_revision_on_the_system_nodes(dev_deployment, job):
    spec = job["spec"]
    pod = spec["template"]["spec"]
    group = dev_deployment.one("aws:eks/nodeGroup:NodeGroup").inputs
    assert pod["nodeSelector"] == group["labels"]
    assert [t["key"] for t in pod["tolerations"]] == [t["key"] for t in group["taints"]]
    assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] > 0  # retries resume where they stopped
    # A TTL would delete a finished Job and the next `pulumi up` would run it again.
    assert "ttlSecondsAfterFinished" not in spec
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HF_HUB_DISABLE_XET"] == "1"
    assert (env["MODEL_REPO"], env["MODEL_REVISION"], env["MODEL_PREFIX"]) == (
        "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2", "", "models/mistral")
    assert env["MODEL_BUCKET"] == dev_deployment.one(BUCKET).outputs["bucket"]
    assert env["AWS_REGION"] == "us-west-2"
    limits = container["resources"]["limits"]
    assert {"memory", "ephemeral-storage"} <= set(limits)  # streams: never needs the node's disk
    assert "--require-hashes" in container["command"][-1]
    assert core_problems(job) == []


def test_sync_job_yields_to_the_system_add_ons(dev_deployment, job):
    (priority,) = [r.manifest() for r in dev_deployment.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")]
    assert job["spec"]["template"]["spec"]["priorityClassName"] == priority["metadata"]["name"]
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never" and priority["globalDefault"] is False


def test_the_model_never_waits_on_the_sync_in_pulumi(dev_deployment, deploy, dev_config):
    sync = dev_deployment.one(JOB)
    model = dev_deployment.one("kubernetes:apps/v1:Deployment")
    assert not dev_deployment.depends_on(model, sync)
    assert sync.custom_timeouts == {"create": "45m", "update": "45m"}
    no_wait = deploy(vllm={**dev_config["trainium-vllm:vllm"], "rolloutTimeoutMinutes": 0})
    skipped = no_wait.one(JOB)
    assert skipped.custom_timeouts == {} and skipped.manifest()["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_a_new_revision_or_repository_is_a_new_job():
    base = ModelConfig()
    names = {sync_job_name(base), sync_job_name(ModelConfig(revision="a" * 40)),
             sync_job_name(ModelConfig(revision="b" * 40)), sync_job_name(ModelConfig(hugging_face_repo="x/y"))}
    assert len(names) == 4
    assert sync_job_name(base) == sync_job_name(ModelConfig())  # stable across runs
    assert all(len(n) <= 63 for n in names | {sync_job_name(ModelConfig(name="m" * 63))})


def test_sync_job_writes_only_its_models_prefix(dev_deployment, job):
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    association = next(a for a in dev_deployment.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
                       if a.inputs["serviceAccount"] == account)
    assert association.inputs["namespace"] == job["metadata"]["namespace"]
    role = next(r for r in dev_deployment.of_type("aws:iam/role:Role") if r.outputs["arn"] == association.inputs["roleArn"])
    (policy,) = [p for p in dev_deployment.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.outputs["name"]]
    bucket = dev_deployment.one(BUCKET).outputs["arn"]
    writes, listing, uploads = json.loads(policy.inputs["policy"])["Statement"]
    assert writes["Resource"] == f"{bucket}/models/mistral/*" and "s3:PutObject" in writes["Action"]
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", bucket)
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/mistral/*"]}}
    assert (uploads["Action"], uploads["Resource"]) == ("s3:ListBucketMultipartUploads", bucket)
    assert dev_deployment.depends_on(dev_deployment.one(JOB), association)


def test_sync_job_reaches_only_dns_credentials_and_https(dev_deployment, job):
    policy = next(r.manifest() for r in dev_deployment.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
                  if r.manifest()["metadata"]["name"] == "mistral-sync")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["ingress"] == []
    dns, credentials, hub = policy["spec"]["egress"]
    assert credentials["to"] == [{"ipBlock": {"cidr": "169.254.170.23/32"}}]
    # The Hub is a CDN: any address on 443, but never the instance metadata.
    assert hub["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}]
