"""The model store: a private S3 bucket in the stack's region, reached through a gateway endpoint, that each
model is copied into once per revision by a Job (`ModelSync`), and that model pods copy from at start.

Model bytes never cross the NAT gateway: the Hub's bytes go to the bucket once; every pod start after
that reads them in-region through the endpoint. Layout, per model (components/model_sync/sync.py writes it):

    models/<model>/<revision>/...          the repository's files at that commit
    models/<model>/<revision>/.sync-complete
    models/<model>/pinned-revision          what `main` was when first synced, if no revision is set
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import iam, versions
from components.config import ModelConfig
from components.pods import (DIGEST_SKIP, DNS_EGRESS, checkov_skips, INTERNET_HTTPS_EGRESS, POD_IDENTITY_EGRESS,
                             POD_SECURITY_CONTEXT, env, restricted_container)

SYNC_FILES = Path(__file__).parent / "model_sync"
SYNC_TOOLS_DIR = "/tmp/tools"
# What a sync Job does: multipart uploads of large files, listing what is there to skip it, and aborting
# the uploads a killed attempt left behind.
STORE_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")
STORE_BUCKET_ACTIONS = ("s3:ListBucket", "s3:ListBucketMultipartUploads")


def model_prefix(model: str) -> str:
    return f"models/{model}"


@dataclass
class ModelStoreArgs:
    # The bucket's name starts with this (AWS appends a unique suffix); lower case, at most 37 characters.
    bucket_prefix: str
    vpc_id: pulumi.Input[str]
    # The route tables of the subnets nodes run in: S3 traffic from them takes the gateway endpoint.
    route_table_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    tags: dict[str, str] = field(default_factory=dict)


class ModelStore(pulumi.ComponentResource):
    """A private, encrypted, TLS-only bucket, and the S3 gateway endpoint that keeps its traffic in the VPC."""

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:ModelStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region

        # force_destroy: `pulumi destroy` empties the bucket before deleting it; the models are copies of
        # what the Hub has, nothing to keep.
        self.bucket = aws.s3.Bucket(f"{name}-bucket", aws.s3.BucketArgs(
            bucket_prefix=args.bucket_prefix, force_destroy=True, tags=args.tags,
        ), child)
        owned = pulumi.ResourceOptions(parent=self.bucket)
        public_access = aws.s3.BucketPublicAccessBlock(f"{name}-bucket", aws.s3.BucketPublicAccessBlockArgs(
            bucket=self.bucket.id, block_public_acls=True, block_public_policy=True, ignore_public_acls=True,
            restrict_public_buckets=True,
        ), owned)
        aws.s3.BucketOwnershipControls(f"{name}-bucket", aws.s3.BucketOwnershipControlsArgs(
            bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
        ), owned)
        aws.s3.BucketServerSideEncryptionConfiguration(f"{name}-bucket", aws.s3.BucketServerSideEncryptionConfigurationInitArgs(
            bucket=self.bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"),
            )],
        ), owned)
        # A sync killed mid-file leaves its multipart upload behind; S3 bills its parts until aborted.
        aws.s3.BucketLifecycleConfiguration(f"{name}-bucket", aws.s3.BucketLifecycleConfigurationArgs(
            bucket=self.bucket.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="abort-incomplete-uploads", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                    days_after_initiation=1),
            )],
        ), owned)
        aws.s3.BucketPolicy(f"{name}-bucket", aws.s3.BucketPolicyArgs(
            bucket=self.bucket.id,
            policy=self.bucket.arn.apply(lambda arn: json.dumps(tls_only_policy(arn))),
        ), pulumi.ResourceOptions(parent=self.bucket, depends_on=[public_access]))

        self.endpoint = aws.ec2.VpcEndpoint(f"{name}-s3", aws.ec2.VpcEndpointArgs(
            vpc_id=args.vpc_id,
            service_name=pulumi.Output.concat("com.amazonaws.", region, ".s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=args.route_table_ids,
            policy=pulumi.Output.all(self.bucket.arn, region).apply(
                lambda v: json.dumps(endpoint_policy(bucket_arn=v[0], region=v[1]))),
            tags=args.tags,
        ), child)

        # S3's address ranges in this region (the AWS-managed prefix list): where model pods may connect.
        # Looked up on every `pulumi up`, so a range AWS adds reaches the NetworkPolicies with the next one.
        s3_ranges = aws.ec2.get_managed_prefix_list_output(
            name=pulumi.Output.concat("com.amazonaws.", region, ".s3"), opts=pulumi.InvokeOutputOptions(parent=self))
        self.s3_cidr_blocks: pulumi.Output[list[str]] = s3_ranges.entries.apply(
            lambda entries: sorted(entry.cidr for entry in entries))
        self.bucket_name: pulumi.Output[str] = self.bucket.bucket
        self.bucket_arn: pulumi.Output[str] = self.bucket.arn
        self.region: pulumi.Output[str] = region
        self.register_outputs({"bucket": self.bucket_name, "endpoint": self.endpoint.id})


def tls_only_policy(bucket_arn: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}


def endpoint_policy(*, bucket_arn: str, region: str) -> dict:
    """What S3 traffic from the private subnets may reach: the model store, and the buckets nodes need.

    A gateway endpoint carries all of the VPC's S3 traffic to this region, so this list is also what
    anything else in the cluster can read from S3 here: extend it for workloads of your own.
    """
    return {"Version": "2012-10-17", "Statement": [
        {
            # What the sync Jobs and model pods do; their roles narrow it to one model's prefix each.
            "Sid": "ModelStore",
            "Effect": "Allow",
            "Principal": "*",
            "Action": sorted({*STORE_OBJECT_ACTIONS, *STORE_BUCKET_ACTIONS}),
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
        },
        {
            # Amazon ECR keeps image layers here (Amazon ECR User Guide, "Amazon ECR interface VPC endpoints":
            # minimum Amazon S3 bucket permissions).
            "Sid": "ContainerImageLayers",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*",
        },
        {
            # Amazon Linux 2023 package repositories (`dnf` on the nodes; AL2023 User Guide).
            "Sid": "OperatingSystemPackages",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::al2023-repos-{region}-de612dc2/*",
        },
    ]}


def reader_policy(bucket_arn: str, model: str) -> dict:
    """A model pod's access: read its own model's files, nothing else, no writes."""
    prefix = model_prefix(model)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadModelFiles", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"{bucket_arn}/{prefix}/*"},
        {"Sid": "ListModelFiles", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
    ]}


def sync_policy(bucket_arn: str, model: str) -> dict:
    """The sync Job's access: read and write its own model's prefix, nothing else."""
    prefix = model_prefix(model)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "WriteModelFiles", "Effect": "Allow", "Action": list(STORE_OBJECT_ACTIONS),
         "Resource": f"{bucket_arn}/{prefix}/*"},
        {"Sid": "ListModelFiles", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": bucket_arn, "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
        # S3 takes no prefix condition on this one (Service Authorization Reference); it only lists the keys
        # of unfinished uploads, whose parts the prefix-scoped statement above alone can touch.
        {"Sid": "FindUnfinishedUploads", "Effect": "Allow", "Action": "s3:ListBucketMultipartUploads",
         "Resource": bucket_arn},
    ]}


def sync_job_name(model: ModelConfig) -> str:
    """Changes with the repository and revision, so a new revision is a new Job (Pulumi replaces a Job whose
    spec changes; a new name keeps the old one's logs until the next `up`)."""
    digest = hashlib.sha256(f"{model.hugging_face_repo}@{model.revision or 'main'}".encode()).hexdigest()[:8]
    return f"{model.name[:48]}-sync-{digest}"


@dataclass
class ModelSyncArgs:
    model: ModelConfig
    namespace: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    region: pulumi.Input[str]
    k8s_provider: k8s.Provider
    # Where the Job runs: the system nodes (their label and the tolerations of their taint).
    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    priority_class_name: pulumi.Input[str]
    # How long `pulumi up` waits for the copy; 0: it does not wait.
    await_minutes: int = 45
    tags: dict[str, str] = field(default_factory=dict)


class ModelSync(pulumi.ComponentResource):
    """A Job that copies one model's repository, at its revision, from Hugging Face into the store, once."""

    def __init__(self, name: str, args: ModelSyncArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainium-vllm:index:ModelSync", name, None, opts)
        model = args.model
        child = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        self.job_name = sync_job_name(model)
        account = f"{model.name}-sync"
        labels = {"app.kubernetes.io/name": "model-sync", "app.kubernetes.io/instance": model.name,
                  "app.kubernetes.io/part-of": "trainium-vllm"}

        service_account = k8s.core.v1.ServiceAccount(f"{name}-service-account", metadata={
            "name": account, "namespace": args.namespace, "labels": labels,
        }, automount_service_account_token=False, opts=child)
        identity = iam.pod_identity(
            f"{name}-writer", self, cluster_name=args.cluster_name, namespace=args.namespace,
            service_account=account, description=f"Model sync of {model.name}: writes its prefix of the model store",
            policy=pulumi.Output.from_input(args.bucket_arn).apply(lambda arn: json.dumps(sync_policy(arn, model.name))),
            tags=args.tags)

        script, requirements = (SYNC_FILES / "sync.py").read_text(), (SYNC_FILES / "requirements.txt").read_text()
        files = k8s.core.v1.ConfigMap(f"{name}-files", metadata={
            "name": self.job_name, "namespace": args.namespace, "labels": labels,
        }, data={"sync.py": script, "requirements.txt": requirements}, opts=child)

        # Only the Hub is reached outside the VPC; DNS, and the Pod Identity agent for credentials.
        k8s.networking.v1.NetworkPolicy(f"{name}-network-policy", metadata={
            "name": account, "namespace": args.namespace, "labels": labels,
        }, spec={
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "model-sync",
                                            "app.kubernetes.io/instance": model.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [DNS_EGRESS, POD_IDENTITY_EGRESS, INTERNET_HTTPS_EGRESS],
        }, opts=child)

        install = (f"python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes "
                   f"--no-deps --only-binary=:all: --target {SYNC_TOOLS_DIR} --requirement /etc/model-sync/requirements.txt")
        self.job = k8s.batch.v1.Job(f"{name}-job", metadata={
            "name": self.job_name, "namespace": args.namespace, "labels": labels,
            "annotations": {**checkov_skips(DIGEST_SKIP),
                            **({"pulumi.com/skipAwait": "true"} if args.await_minutes == 0 else {})},
        }, spec={
            # Retries resume where the last attempt stopped (files already in the store are skipped).
            "backoffLimit": 6,
            "activeDeadlineSeconds": 4 * 3600,
            # No ttlSecondsAfterFinished: a deleted Job would be created again by the next `pulumi up`.
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "priorityClassName": args.priority_class_name,
                    "nodeSelector": dict(args.node_selector),
                    "tolerations": [dict(t) for t in args.tolerations],
                    "enableServiceLinks": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    "containers": [restricted_container({
                        "name": "sync",
                        "image": versions.MODEL_SYNC_IMAGE,
                        "command": ["/bin/sh", "-c", f"{install} && exec python /etc/model-sync/sync.py"],
                        "env": env({
                            "MODEL_REPO": model.hugging_face_repo,
                            "MODEL_REVISION": model.revision or "",
                            "MODEL_BUCKET": args.bucket_name,
                            "MODEL_PREFIX": model_prefix(model.name),
                            "AWS_REGION": args.region,
                            "PYTHONPATH": SYNC_TOOLS_DIR,
                            "HOME": "/tmp",
                            "HF_HOME": "/tmp/hf",
                            # Xet downloads can take 15 GB of memory; plain HTTPS streams straight to S3.
                            "HF_HUB_DISABLE_XET": "1",
                            "HF_HUB_DISABLE_TELEMETRY": "1",
                            "PYTHONUNBUFFERED": "1",
                        }),
                        # Streams file by file from the Hub to S3: memory for the upload parts, disk only
                        # for the tools.
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                                      "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"}},
                        "volumeMounts": [{"name": "files", "mountPath": "/etc/model-sync", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    })],
                    "volumes": [{"name": "files", "configMap": {"name": self.job_name}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
                },
            },
        }, opts=pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider,
            depends_on=[files, service_account, identity.association, identity.policy],
            custom_timeouts=pulumi.CustomTimeouts(create=f"{args.await_minutes}m", update=f"{args.await_minutes}m")
            if args.await_minutes else None,
        ))
        self.register_outputs({"jobName": self.job_name})

