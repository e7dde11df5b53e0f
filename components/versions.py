"""Every version this stack pins, in one place.

Bump a value here, run `make test`, and read `python -m tools.render` to see what the change deploys.
"""

# Kubernetes minor versions this stack can run: Karpenter 1.14 supports 1.26-1.36 and the pinned node
# AMI release (below) ships images for 1.30-1.36; the intersection is what we accept.
KUBERNETES_VERSION = "1.35"
KUBERNETES_MINORS_SUPPORTED = range(30, 37)

# Karpenter controller, installed from its OCI Helm chart. Its CRDs come from their own chart, karpenter-crd,
# at the same version (Helm never upgrades a chart's crds/ directory).
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
KARPENTER_CHART_VERSION = "1.14.1"

# AWS Neuron device plugin (and optional scheduler extension), from its OCI Helm chart.
NEURON_CHART = "oci://public.ecr.aws/neuron/neuron-helm-chart"
NEURON_CHART_VERSION = "1.5.0"

# EKS-optimized AL2023 AMI release for Karpenter nodes. Karpenter picks the Neuron variant
# (amazon-eks-node-al2023-x86_64-neuron-<k8s>-v20260714, aws-neuronx-dkms 2.29) for accelerator
# instances by itself. Never `@latest`: in May 2026 a new release left Neuron nodes NotReady.
NODE_AMI_ALIAS = "al2023@v20260714"

# vLLM 0.9.1 built for Neuron SDK 2.26 (about 10 GB). The pre-compiled model artifacts below were
# compiled with SDK 2.26; another SDK may need a recompile.
VLLM_IMAGE = "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.9.1-neuronx-py311-sdk2.26.0-ubuntu22.04"

# Hugging Face repository of the default model: pre-compiled, pre-sharded for 2 NeuronCores, public.
DEFAULT_MODEL_REPO = "aws-neuron/Mistral-7B-Instruct-v0.3-seqlen-2048-bs-1-cores-2"

# A model pod's start path: the model-download init container copies the model from the stack's S3 store
# with the AWS CLI v2 (its CRT transfer client, whose memory cap AWS_CRT_S3_MEMORY_LIMIT_IN_MB needs
# aws-c-s3 1.1 or later; EKS Pod Identity credentials need 2.15 or later). ECR Public, not Docker Hub.
AWS_CLI_IMAGE = "public.ecr.aws/aws-cli/aws-cli:2.36.15"

# The model sync Job (Hugging Face -> S3, once per revision): Docker's official Python image as mirrored on
# ECR Public (no Docker Hub pull limits), with huggingface_hub and boto3 locked by hash in
# components/model_sync/requirements.txt.
MODEL_SYNC_IMAGE = "public.ecr.aws/docker/library/python:3.11.14-slim-bookworm"

# Autoscaling: KEDA, from its official chart (kedacore/charts, tag v2.20.2); the chart carries the CRDs.
KEDA_CHART = "keda"
KEDA_CHART_REPOSITORY = "https://kedacore.github.io/charts"
KEDA_CHART_VERSION = "2.20.2"

# Observability. kube-state-metrics 2.20.0 from the prometheus-community chart 8.4.0; Grafana 13.2.0 from the
# grafana-community chart 12.11.1, with the SigV4 data source plugin for Amazon Managed Service for Prometheus
# (Grafana 13 dropped SigV4 from the built-in Prometheus data source; changelog at grafana.com/grafana/plugins/
# grafana-amazonprometheus-datasource); the Neuron SDK's neuron-monitor exporter (aws-neuron-sdk src/k8).
KUBE_STATE_METRICS_CHART = "kube-state-metrics"
KUBE_STATE_METRICS_CHART_REPOSITORY = "https://prometheus-community.github.io/helm-charts"
KUBE_STATE_METRICS_CHART_VERSION = "8.4.0"
GRAFANA_CHART = "grafana"
GRAFANA_CHART_REPOSITORY = "https://grafana-community.github.io/helm-charts"
GRAFANA_CHART_VERSION = "12.11.1"
GRAFANA_IMAGE_TAG = "13.2.0"
GRAFANA_AMP_PLUGIN = "grafana-amazonprometheus-datasource"
GRAFANA_AMP_PLUGIN_VERSION = "3.3.4"
NEURON_MONITOR_IMAGE = "public.ecr.aws/neuron/neuron-monitor:1.3.0"
