"""Every version this stack pins, in one place.

Bump a value here, run `make test`, and read `python -m tools.render` to see what the change deploys.
"""

# Kubernetes minor versions this stack can run: Karpenter 1.14 supports 1.26-1.36 and the pinned node
# AMI release (below) ships images for 1.30-1.36; the intersection is what we accept.
KUBERNETES_VERSION = "1.35"
KUBERNETES_MINORS_SUPPORTED = range(30, 37)

# Karpenter controller, installed from its OCI Helm chart. The chart carries the CRDs.
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

# The model-download init container: a pinned Python image, and huggingface_hub 1.33.0 with every
# dependency locked by hash in components/model_download/requirements.txt (the workshop installed
# huggingface_hub unpinned at pod start, and a new release broke the download).
MODEL_DOWNLOAD_IMAGE = "python:3.11.14-slim-bookworm"
