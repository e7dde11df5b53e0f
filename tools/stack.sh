#!/bin/sh
# `make deploy`, `make destroy` and `make render`: from a fresh clone to a running stack, and back.
#
#   tools/stack.sh deploy     prerequisites, Pulumi login, passphrase, stack, ./venv, preflight, pulumi up
#   tools/stack.sh destroy    prerequisites, the same login, passphrase and stack, pulumi destroy, leftovers
#   tools/stack.sh render     ./venv, then tools.render: what the stack would create, offline
#
# Settings (the Makefile passes them): STACK (dev), VENV (venv), PYTHON (python3, builds the venv),
# PULUMI_ARGS (extra arguments for `pulumi up`/`pulumi destroy`, e.g. --yes).
# A shell script because it has to run before ./venv exists.
#
# Pulumi CLI behaviour relied on (https://www.pulumi.com/docs/iac/cli/commands/):
#   - `pulumi whoami` logs in to the current backend first; with no login configured it prompts for a
#     Pulumi Cloud token, or with --non-interactive fails ("PULUMI_ACCESS_TOKEN must be set for login
#     during non-interactive CLI sessions", pkg/cmd/pulumi/backend CurrentBackend). --verbose prints
#     "Backend URL: <url>".
#   - `pulumi login --local` is `pulumi login file://~`: state under ~/.pulumi.
#   - `pulumi stack select --create`: "If selected stack does not exist, create it".
#   - Passphrase-encrypted stacks read PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE, and
#     prompt on the terminal otherwise. Pulumi Cloud stacks encrypt secrets in the service instead.
set -eu

STACK=${STACK:-dev}
VENV=${VENV:-venv}
PYTHON=${PYTHON:-python3}
PULUMI_ARGS=${PULUMI_ARGS:-}

step() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ----------------------------------------------------------------------------------

require() {  # command, what it is and how to install it
    command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH. $2"
}

require_pulumi() {
    require pulumi "Install the Pulumi CLI: curl -fsSL https://get.pulumi.com | sh, then open a new shell \
(other ways: https://www.pulumi.com/docs/install/)."
}

require_aws() {
    require aws "Install the AWS CLI v2 (the cluster's kubeconfig runs \`aws eks get-token\`): \
https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
}

check_credentials() {
    if ! identity=$(aws sts get-caller-identity --query Arn --output text 2>&1); then
        die "no usable AWS credentials: \`aws sts get-caller-identity\` failed:
$identity
Set them up with \`aws configure sso\` (first time) or \`aws sso login\` (expired session), or pick a profile
with AWS_PROFILE; then check with \`aws sts get-caller-identity\`."
    fi
    step "AWS identity: $identity"
}

require_python() {
    # Building ./venv needs Python 3.11+ (the program's requirements).
    install="Install it (https://www.python.org/downloads/, or your package manager's python3.11+ with venv) \
and pass it if it is not python3: make $COMMAND PYTHON=python3.12"
    require "$PYTHON" "Python 3.11 or newer is needed to build ./$VENV. $install"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "Python 3.11 or newer is needed to build ./$VENV, and $PYTHON is $("$PYTHON" --version 2>&1). $install"
}

# kubectl is not needed by `pulumi up` (the Kubernetes provider talks to the API itself), only afterwards.
suggest_kubectl() {
    command -v kubectl >/dev/null 2>&1 ||
        warn "kubectl not found on PATH: pulumi up does not need it, but the smoke test and the README's \
commands do. Install it: https://kubernetes.io/docs/tasks/tools/"
}

# --- Pulumi backend, passphrase, stack --------------------------------------------------------------

# Sets BACKEND_URL. Pulumi's own default with no login is Pulumi Cloud, which needs an account; we use
# state on this machine instead, and say how to choose otherwise.
use_backend() {  # deploy: log in locally when nothing is configured; destroy: never log in
    if [ -n "${PULUMI_BACKEND_URL:-}" ]; then
        BACKEND_URL=$PULUMI_BACKEND_URL
        step "Pulumi state: $BACKEND_URL (PULUMI_BACKEND_URL)"
        return
    fi
    if whoami=$(pulumi whoami --verbose --non-interactive </dev/null 2>&1); then
        BACKEND_URL=$(printf '%s\n' "$whoami" | sed -n 's/^Backend URL: //p')
        step "Pulumi state: $BACKEND_URL (your pulumi login)"
        return
    fi
    # Only "no login at all" falls back to local state: a broken login (expired token, unreachable
    # bucket) must not quietly move the stack to another backend.
    case $whoami in
        *PULUMI_ACCESS_TOKEN*) ;;
        *) die "pulumi whoami failed, so the Pulumi login cannot be used:
$whoami
Fix the login (pulumi login <backend>) or set PULUMI_BACKEND_URL, then run make $COMMAND again." ;;
    esac
    [ "$1" = login ] || die "not logged in to a Pulumi backend, so there is no stack to destroy. Log in \
where make deploy kept the state (pulumi login --local, pulumi login s3://<bucket>, pulumi login) or set \
PULUMI_BACKEND_URL, then run make destroy again."
    pulumi login --local
    BACKEND_URL=file://~
    step "No Pulumi login was configured: logged in to the local backend. The stack's state lives in
    ~/.pulumi on this machine only (keep it: make destroy needs it). To keep state elsewhere instead,
    log in before deploying (pulumi up asks before it creates anything):
      pulumi login s3://<bucket>     shared state in S3 (what CI needs; see the README)
      pulumi login                   Pulumi Cloud
    or set PULUMI_BACKEND_URL."
}

needs_passphrase() {
    # A stack made with a passphrase records its salt in the stack file, whatever the backend.
    case $BACKEND_URL in
        https://*) grep -q '^encryptionsalt:' "Pulumi.$STACK.yaml" 2>/dev/null ;;
        *) true ;;
    esac
}

# Ask once and export it, so every pulumi command below (and only those, not your shell) has it and
# none prompts again. It is never echoed, printed or written anywhere.
ask_passphrase() {
    if [ -n "${PULUMI_CONFIG_PASSPHRASE+set}" ] || [ -n "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ] ||
        ! needs_passphrase; then
        return
    fi
    [ -t 0 ] || die "stack $STACK's secrets need its passphrase and there is no terminal to ask it on: set \
PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE."
    saved_tty=$(stty -g)
    trap 'stty "$saved_tty"' EXIT
    trap 'exit 130' INT TERM
    stty -echo
    printf 'Passphrase for the secrets of stack %s (a new stack: choose one and keep it): ' "$STACK" >&2
    IFS= read -r passphrase || passphrase=
    stty "$saved_tty"
    trap - EXIT INT TERM
    printf '\n' >&2
    [ -n "$passphrase" ] || die "no passphrase given"
    PULUMI_CONFIG_PASSPHRASE=$passphrase
    export PULUMI_CONFIG_PASSPHRASE
    unset passphrase
    PASSPHRASE_ASKED=yes
}

# --- deploy and render ------------------------------------------------------------------------------

# The program's virtualenv, the one `pulumi up` uses; make builds it only when requirements changed.
build_venv() {
    step "Building ./$VENV (the first time takes a few minutes)"
    make -s VENV="$VENV" PYTHON="$PYTHON" "$VENV/.installed"
}

run_preflight() {
    step "Preflight: can this account and region run stack $STACK?"
    status=0
    "$VENV/bin/python" -m tools.preflight --stack "$STACK" || status=$?
    case $status in
        0) ;;  # warnings do not stop a deploy
        1) die "preflight failed: fix the failures above, then run make deploy again." ;;
        *) die "preflight could not check (exit status $status): fix the settings or flags above, then run \
make deploy again." ;;
    esac
}

print_next_step() {
    step "Stack $STACK is up. Next, the smoke test (it port-forwards to the model and sends it a request):"
    if [ "${PASSPHRASE_ASKED:-}" = yes ]; then
        # The smoke test reads the kubeconfig output, a secret, and runs pulumi without a terminal.
        echo "    read -rs PULUMI_CONFIG_PASSPHRASE && export PULUMI_CONFIG_PASSPHRASE    # the passphrase, unechoed"
    fi
    echo "    $VENV/bin/python -m tools.smoke --stack $STACK"
}

deploy() {
    require_pulumi
    require_aws
    require_python
    suggest_kubectl
    check_credentials
    use_backend login
    ask_passphrase
    pulumi stack select --create "$STACK"
    build_venv
    run_preflight
    # PULUMI_ARGS is split into words on purpose: it holds flags.
    # shellcheck disable=SC2086
    pulumi up --stack "$STACK" $PULUMI_ARGS ||
        die "pulumi up did not finish: see the README's troubleshooting table; make deploy again continues from \
where it stopped."
    print_next_step
}

render() {
    require_python
    build_venv
    "$VENV/bin/python" -m tools.render --stack "$STACK"
}

# --- destroy ----------------------------------------------------------------------------------------

# Sets CLUSTER and REGION_OPTION, read before `pulumi destroy` removes the stack's outputs: from the
# stack settings when ./venv exists, else from the outputs; a placeholder if neither answers.
read_cluster() {
    settings=$("$VENV/bin/python" -c 'import pathlib, sys
from components.config import from_stack_file
config = from_stack_file(sys.argv[1], pathlib.Path.cwd())
print(config.cluster_name, config.region or "")' "$STACK" 2>/dev/null) ||
        settings="$(pulumi stack output clusterName --stack "$STACK" 2>/dev/null) \
$(pulumi stack output region --stack "$STACK" 2>/dev/null)" || settings=
    read -r CLUSTER region <<EOF
$settings
EOF
    CLUSTER=${CLUSTER:-<cluster name>}
    REGION_OPTION=${region:+ --region $region}
}

# What `pulumi destroy` cannot see: Karpenter's and AWS's own creations, found by the cluster's name.
print_outside_state() {
    r=$REGION_OPTION
    cat <<EOF
Outside Pulumi's state (each command prints nothing when none is left):
  EC2 instances Karpenter launched (remove: aws ec2 terminate-instances$r --instance-ids ...):
    aws ec2 describe-instances$r --filters Name=tag:eks:eks-cluster-name,Values=$CLUSTER Name=tag-key,Values=karpenter.sh/nodepool Name=instance-state-name,Values=pending,running,stopping,stopped --query 'Reservations[].Instances[].InstanceId' --output text
  their launch templates (remove: aws ec2 delete-launch-template$r --launch-template-name ...):
    aws ec2 describe-launch-templates$r --filters Name=tag:karpenter.k8s.aws/cluster,Values=$CLUSTER --query 'LaunchTemplates[].LaunchTemplateName' --output text
  instance profiles Karpenter created (remove: aws iam remove-role-from-instance-profile, then aws iam delete-instance-profile):
    aws iam list-instance-profiles --query "InstanceProfiles[?starts_with(InstanceProfileName, '${CLUSTER}_')].[InstanceProfileName,Roles[0].RoleName]" --output text
  network interfaces of the VPC CNI or the Prometheus scraper, which keep the VPC from being deleted
  (remove: aws ec2 delete-network-interface$r --network-interface-id ...). The VPC, if it is still there:
    aws ec2 describe-vpcs$r --filters Name=tag:Name,Values=$CLUSTER --query 'Vpcs[].VpcId' --output text
  and the interfaces in it:
    aws ec2 describe-network-interfaces$r --filters Name=vpc-id,Values=<the VPC id> --query 'NetworkInterfaces[].[NetworkInterfaceId,Status,Description]' --output text
Gone with the cluster or by themselves: the cluster creator's access entry (deleted with the cluster) and
  the secrets KMS key (scheduled for deletion after 7 days).
EOF
}

destroy() {
    require_pulumi
    require_aws
    check_credentials
    use_backend never
    ask_passphrase
    # No --create: destroying a stack that does not exist should not make one.
    pulumi stack select "$STACK" ||
        die "could not select stack $STACK in $BACKEND_URL (pulumi's error above). If it is not there, there is \
nothing to destroy in this backend: pulumi stack ls lists its stacks, make destroy STACK=<name> picks one."
    read_cluster
    status=0
    # shellcheck disable=SC2086
    pulumi destroy --stack "$STACK" $PULUMI_ARGS || status=$?
    if [ "$status" -ne 0 ]; then
        {
            echo "pulumi destroy failed (exit status $status). What can be left of stack $STACK (cluster $CLUSTER):"
            echo "In Pulumi's state: whatever it did not delete, which pulumi stack --stack $STACK lists, such as"
            echo "  the S3 model bucket (Pulumi empties it first) or the log group /aws/eks/$CLUSTER/cluster."
            echo "  Run make destroy again: it retries only what is left."
            print_outside_state
        } >&2
        exit "$status"
    fi
    step "Stack $STACK is destroyed. To check that nothing was left outside Pulumi's state (cluster $CLUSTER):"
    print_outside_state
    step "pulumi stack rm $STACK forgets the stack's (now empty) state, if you are done with it."
}

cd "$(dirname "$0")/.."
COMMAND=${1:-}
case $COMMAND in
    deploy) deploy ;;
    destroy) destroy ;;
    render) render ;;
    *) die "usage: $0 deploy|destroy|render" ;;
esac
