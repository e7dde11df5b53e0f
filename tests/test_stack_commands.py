"""`make deploy`, `make destroy` and `make render` (tools/stack.sh), against fake `pulumi`, `aws` and venv python.

Each test runs the real Makefile and script in a scratch copy of the project whose PATH holds only the fakes
(tests/fakes/fake_cli.py) and the few system tools the script and make use. The fakes log every call, and whether
PULUMI_CONFIG_PASSPHRASE reached it, to a file. The scratch ./venv is current for make (venv/.installed is
newer than the requirements), so `make venv/.installed` has nothing to build. Its python, and python3 on
PATH, are the fake too: `-m tools.preflight`, `-m venv` and `-m pip` are logged and answered as told,
anything else runs the real interpreter.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FAKE_CLI = Path(__file__).parent / "fakes" / "fake_cli.py"
PASSPHRASE = "correct horse battery staple"
SYSTEM_TOOLS = ("sh", "make", "stty", "sed", "grep", "cat", "dirname", "touch")
PROMPT = "Passphrase for the secrets of stack"
NO_LOGIN = "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions\n"
SMOKE = "venv/bin/python -m tools.smoke --stack dev"


def fake(path: Path, cli: str) -> None:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE_CLI}" {cli} "$@"\n')
    path.chmod(0o755)


@dataclass
class Result:
    code: int
    output: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    echo_at_exit: bool | None = None  # on a terminal: whether it echoes typing again at the end

    def commands(self, cli: str | None = None) -> list[str]:
        return [" ".join([c["cli"], *c["args"]]) for c in self.calls if cli is None or c["cli"] == cli]


class Project:
    """A scratch copy of the project, with fakes on PATH; `run()` runs make (or the script) in it."""

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "project"
        (self.dir / "tools").mkdir(parents=True)
        for name in ("Makefile", "Pulumi.yaml", "Pulumi.dev.yaml", "requirements.txt", "requirements-dev.txt",
                     "tools/stack.sh", "tools/get-helm.sh"):
            shutil.copy(REPO / name, self.dir / name)
        # Helm is current for make too (`make render` needs it; tools.render is faked here).
        (self.dir / ".tools").mkdir()
        (self.dir / ".tools" / "helm").touch()
        # The settings model, for the cluster name `make destroy` reports.
        (self.dir / "components").symlink_to(REPO / "components")
        (self.dir / "venv" / "bin").mkdir(parents=True)
        fake(self.dir / "venv" / "bin" / "python", "python")
        self.installed = self.dir / "venv" / ".installed"
        self.installed.touch()

        self.bin = root / "bin"
        self.bin.mkdir()
        for tool in SYSTEM_TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        for name, cli in (("pulumi", "pulumi"), ("aws", "aws"), ("python3", "python")):
            fake(self.bin / name, cli)
        (self.bin / "kubectl").symlink_to(shutil.which("true"))

        self.log = root / "calls.log"
        self.env = {"PATH": str(self.bin), "HOME": str(root / "home"), "FAKE_CLI_LOG": str(self.log),
                    "FAKE_EXPECTED_PASSPHRASE": PASSPHRASE, "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE}

    def results(self, **results: dict[str, Any]) -> None:
        """What a fake answers, by command: results(**{"pulumi whoami": {"exit": 255, "err": "..."}})."""
        self.env["FAKE_RESULTS"] = json.dumps(results)

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def run(self, *argv: str, terminal_input: str | None = None) -> Result:
        command = [str(self.bin / "make"), *argv] if argv[0] != "tools/stack.sh" else ["sh", *argv]
        if terminal_input is None:
            done = subprocess.run(command, cwd=self.dir, env=self.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
            return Result(done.returncode, done.stdout, self.calls())
        return self._run_on_terminal(command, terminal_input)

    def _run_on_terminal(self, command: list[str], answer: str) -> Result:
        """Run with a pseudo-terminal as stdin/stdout; type `answer` at each passphrase prompt."""
        main, terminal = pty.openpty()
        process = subprocess.Popen(command, cwd=self.dir, env=self.env, stdin=terminal, stdout=terminal,
                                   stderr=terminal, start_new_session=True)
        os.close(terminal)
        output, answered, deadline = b"", 0, time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not chunk:
                    break
                output += chunk
            # The prompt is printed after echo is turned off, so what we type is not echoed back.
            if output.count(PROMPT.encode()) > answered:
                os.write(main, answer.encode() + b"\n")
                answered += 1
        echo = bool(termios.tcgetattr(main)[3] & termios.ECHO)
        os.close(main)
        if process.poll() is None:
            process.kill()
        return Result(process.wait(timeout=10), output.decode(errors="replace"), self.calls(), echo)


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def with_settings(project: Project, stack: str, **settings: str) -> None:
    """Pulumi.<stack>.yaml: the dev settings with some top-level ones replaced."""
    text = (REPO / "Pulumi.dev.yaml").read_text()
    for key, value in settings.items():
        lines = [line for line in text.splitlines() if line.lstrip().startswith(f"{key}:")]
        assert len(lines) == 1, key
        text = text.replace(lines[0], f"  {key}: {value}")
    (project.dir / f"Pulumi.{stack}.yaml").write_text(text)


def assert_no_passphrase_anywhere(project: Project, result: Result) -> None:
    assert PASSPHRASE not in result.output
    for path in project.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert PASSPHRASE.encode() not in path.read_bytes(), path


# --- deploy ------------------------------------------------------------------------------------------


def test_deploy_runs_each_step_in_order_and_ends_with_the_smoke_command(project):
    before = project.installed.stat().st_mtime_ns

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert result.commands() == [
        "aws sts get-caller-identity --query Arn --output text",
        "pulumi whoami --verbose --non-interactive",
        "pulumi stack select --create dev",
        "python -m tools.preflight --stack dev",
        "pulumi up --stack dev",
    ]
    assert {c["passphrase"] for c in result.calls if c["cli"] == "pulumi"} == {"expected"}
    assert "AWS identity: arn:aws:sts::123456789012:assumed-role/Admin/tester" in result.output
    assert "Pulumi state: file://~ (your pulumi login)" in result.output
    assert result.output.rstrip().endswith(SMOKE)
    # The passphrase came from the environment: no prompt, and no hint to set it.
    assert PROMPT not in result.output and "read -rs" not in result.output
    # ./venv was current: make built nothing.
    assert project.installed.stat().st_mtime_ns == before
    assert_no_passphrase_anywhere(project, result)


def test_deploy_builds_a_missing_venv_after_the_stack_and_before_preflight(project):
    project.installed.unlink()

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert result.commands()[2:] == [
        "pulumi stack select --create dev",
        "python -m venv venv",
        "python -m pip install --quiet --upgrade pip",
        "python -m pip install --quiet -r requirements-dev.txt",
        "python -m tools.preflight --stack dev",
        "pulumi up --stack dev",
    ]
    assert project.installed.exists()


def test_stack_and_pulumi_args_are_passed_on(project):
    result = project.run("deploy", "STACK=prod", "PULUMI_ARGS=--yes --skip-preview")

    assert result.code == 0, result.output
    assert result.commands("pulumi")[1:] == ["pulumi stack select --create prod",
                                             "pulumi up --stack prod --yes --skip-preview"]
    assert result.commands("python") == ["python -m tools.preflight --stack prod"]
    assert result.output.rstrip().endswith("venv/bin/python -m tools.smoke --stack prod")


@pytest.mark.parametrize(("missing", "message"), [
    ("pulumi", "error: pulumi not found on PATH. Install the Pulumi CLI: curl -fsSL https://get.pulumi.com | sh"),
    ("aws", "error: aws not found on PATH. Install the AWS CLI v2 (the cluster's kubeconfig runs `aws eks get-token`): "
            "https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"),
])
@pytest.mark.parametrize("target", ["deploy", "destroy"])
def test_missing_cli_says_how_to_install_it_and_runs_nothing(project, missing, message, target):
    (project.bin / missing).unlink()

    result = project.run(target)

    assert result.code != 0
    assert message in result.output
    assert result.calls == []


def test_missing_credentials_say_how_to_log_in(project):
    project.results(**{"aws sts get-caller-identity": {
        "exit": 253,
        "err": "Unable to locate credentials. You can configure credentials by running \"aws configure\".\n",
    }})

    result = project.run("deploy")

    assert result.code != 0
    assert ("error: no usable AWS credentials: `aws sts get-caller-identity` failed:\n"
            "Unable to locate credentials.") in result.output
    assert "`aws configure sso` (first time) or `aws sso login` (expired session)" in result.output
    assert result.commands() == ["aws sts get-caller-identity --query Arn --output text"]


@pytest.mark.parametrize(("python", "message"), [
    ("python3.10",
     "error: Python 3.11 or newer is needed to build ./venv, and python3.10 is Python 3.10.12. Install it"),
    ("python3.99", "error: python3.99 not found on PATH. Python 3.11 or newer is needed to build ./venv. Install it"),
], ids=["too-old", "missing"])
def test_python_too_old_or_missing_says_what_is_needed(project, python, message):
    # A Python 3.10 stand-in: the real interpreter, told it is 3.10.12.
    (project.bin / "python3.10").write_text(f"""#!/bin/sh
case $1 in
    --version) echo "Python 3.10.12" ;;
    -c) exec "{sys.executable}" -c 'import sys; sys.version_info = (3, 10, 12, "final", 0); exec(sys.argv[1])' "$2" ;;
esac
""")
    (project.bin / "python3.10").chmod(0o755)

    result = project.run("deploy", f"PYTHON={python}")

    assert result.code != 0
    assert message in result.output
    assert "make deploy PYTHON=python3.12" in result.output
    assert result.calls == []


def test_missing_kubectl_only_warns(project):
    (project.bin / "kubectl").unlink()

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert ("warning: kubectl not found on PATH: pulumi up does not need it, but the smoke test and the README's "
            "commands do. Install it: https://kubernetes.io/docs/tasks/tools/") in result.output
    assert "pulumi up --stack dev" in result.commands()


def test_no_login_logs_in_to_the_local_backend_and_says_so(project):
    project.results(**{"pulumi whoami": {"exit": 255, "err": NO_LOGIN}})

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive", "pulumi login --local",
                                         "pulumi stack select --create dev", "pulumi up --stack dev"]
    assert ("logged in to the local backend. The stack's state lives in\n"
            "    ~/.pulumi on this machine only") in result.output
    assert "pulumi login s3://<bucket>     shared state in S3" in result.output
    assert "pulumi login                   Pulumi Cloud" in result.output


def test_backend_url_in_the_environment_is_used_without_login(project):
    project.env["PULUMI_BACKEND_URL"] = "s3://team-state"

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert result.commands("pulumi") == ["pulumi stack select --create dev", "pulumi up --stack dev"]
    assert "Pulumi state: s3://team-state (PULUMI_BACKEND_URL)" in result.output


def test_a_broken_login_stops_instead_of_switching_backends(project):
    project.results(**{"pulumi whoami": {
        "exit": 255, "err": "error: failed to get bucket s3://team-state: AccessDenied\n"}})

    result = project.run("deploy")

    assert result.code != 0
    assert "error: pulumi whoami failed, so the Pulumi login cannot be used:\n" in result.output
    assert "AccessDenied" in result.output and "then run make deploy again" in result.output
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive"]


@pytest.mark.parametrize(("status", "report", "message"), [
    (1, "  FAIL  quota Running On-Demand Trn instances: 0 vCPUs\nFAILED: 1 check(s) failed, 0 warning(s)\n",
     "error: preflight failed: fix the failures above, then run make deploy again."),
    (2, "",
     "error: preflight could not check (exit status 2): fix the settings or flags above, then run make deploy again."),
], ids=["failed-check", "bad-settings"])
def test_failing_preflight_stops_before_pulumi_up(project, status, report, message):
    project.results(**{"python -m tools.preflight": {"exit": status, "out": report}})

    result = project.run("deploy")

    assert result.code != 0
    assert report in result.output and message in result.output
    assert result.commands()[-1] == "python -m tools.preflight --stack dev"
    assert not any(c.startswith("pulumi up") for c in result.commands())


def test_preflight_warnings_do_not_stop_deploy(project):
    report = "  WARN  instance type inf2.xlarge: not offered in any zone of us-west-2\nOK (1 warning(s))\n"
    project.results(**{"python -m tools.preflight": {"exit": 0, "out": report}})

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert report in result.output
    assert result.commands()[-2:] == ["python -m tools.preflight --stack dev", "pulumi up --stack dev"]


def test_failing_pulumi_up_says_what_next_and_not_the_smoke_test(project):
    project.results(**{"pulumi up": {"exit": 255, "err": "error: update failed\n"}})

    result = project.run("deploy")

    assert result.code != 0
    assert "error: pulumi up did not finish: see the README's troubleshooting table" in result.output
    assert "tools.smoke" not in result.output


# --- the passphrase ----------------------------------------------------------------------------------


def test_passphrase_is_asked_once_unechoed_and_reaches_every_pulumi_command(project):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]

    result = project.run("deploy", terminal_input=PASSPHRASE)

    assert result.code == 0, result.output
    assert result.output.count(PROMPT) == 1
    assert result.echo_at_exit is True
    after_prompt = [c for c in result.calls if c["cli"] == "pulumi"][1:]
    assert [" ".join(c["args"]) for c in after_prompt] == ["stack select --create dev", "up --stack dev"]
    assert {c["passphrase"] for c in after_prompt} == {"expected"}
    # The smoke test runs pulumi without a terminal: the next step says how to give it the passphrase.
    assert "read -rs PULUMI_CONFIG_PASSPHRASE && export PULUMI_CONFIG_PASSPHRASE" in result.output
    assert result.output.rstrip().endswith(SMOKE)
    assert_no_passphrase_anywhere(project, result)


def test_passphrase_reaches_destroy_too(project):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]

    result = project.run("destroy", terminal_input=PASSPHRASE)

    assert result.code == 0, result.output
    assert result.output.count(PROMPT) == 1
    assert {" ".join(c["args"]): c["passphrase"] for c in result.calls if c["cli"] == "pulumi"} == {
        "whoami --verbose --non-interactive": "unset",
        "stack select dev": "expected",
        "destroy --stack dev": "expected",
    }
    assert_no_passphrase_anywhere(project, result)


def test_an_empty_passphrase_is_refused(project):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]

    result = project.run("deploy", terminal_input="")

    assert result.code != 0
    assert "error: no passphrase given" in result.output
    assert result.echo_at_exit is True
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive"]


def test_without_a_terminal_or_passphrase_it_stops_and_names_the_variables(project):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]

    result = project.run("deploy")

    assert result.code != 0
    assert ("error: stack dev's secrets need its passphrase and there is no terminal to ask it on: set "
            "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE.") in result.output
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive"]


def test_passphrase_file_is_left_to_pulumi(project):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]
    project.env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(project.root / "passphrase.txt")

    result = project.run("deploy")

    assert result.code == 0, result.output
    assert PROMPT not in result.output
    pulumi = [c for c in result.calls if c["cli"] == "pulumi"]
    assert {(c["passphrase"], c["passphrase_file"]) for c in pulumi} == {("unset", True)}


@pytest.mark.parametrize(("salted", "needs_passphrase"), [(False, False), (True, True)],
                         ids=["service-secrets", "passphrase-stack"])
def test_pulumi_cloud_needs_a_passphrase_only_for_a_passphrase_stack(project, salted, needs_passphrase):
    del project.env["PULUMI_CONFIG_PASSPHRASE"]
    project.env["FAKE_BACKEND_URL"] = "https://api.pulumi.com"
    if salted:
        stack_file = project.dir / "Pulumi.dev.yaml"
        stack_file.write_text("encryptionsalt: v1:abc:def\n" + stack_file.read_text())

    result = project.run("deploy")

    assert (result.code != 0) == needs_passphrase, result.output
    assert ("there is no terminal to ask it on" in result.output) == needs_passphrase
    assert ("pulumi up --stack dev" in result.commands()) != needs_passphrase


# --- destroy -----------------------------------------------------------------------------------------


def test_destroy_selects_without_creating_and_lists_what_to_check(project):
    with_settings(project, "prod", **{"aws:region": "us-east-2", "trainium-vllm:clusterName": "llm-prod"})

    result = project.run("destroy", "STACK=prod", "PULUMI_ARGS=--yes")

    assert result.code == 0, result.output
    assert result.commands() == [
        "aws sts get-caller-identity --query Arn --output text",
        "pulumi whoami --verbose --non-interactive",
        "pulumi stack select prod",
        "pulumi destroy --stack prod --yes",
    ]
    out = result.output
    assert "Stack prod is destroyed. To check that nothing was left outside Pulumi's state (cluster llm-prod):" in out
    assert ("aws ec2 describe-instances --region us-east-2 --filters Name=tag:eks:eks-cluster-name,Values=llm-prod "
            "Name=tag-key,Values=karpenter.sh/nodepool") in out
    assert ("aws ec2 describe-launch-templates --region us-east-2 --filters "
            "Name=tag:karpenter.k8s.aws/cluster,Values=llm-prod") in out
    assert ("aws iam list-instance-profiles --query "
            "\"InstanceProfiles[?starts_with(InstanceProfileName, 'llm-prod_')]") in out
    assert "aws ec2 describe-vpcs --region us-east-2 --filters Name=tag:Name,Values=llm-prod" in out
    assert "aws ec2 describe-network-interfaces --region us-east-2 --filters Name=vpc-id,Values=<the VPC id>" in out
    assert "KMS key (scheduled for deletion after 7 days)" in out
    assert "pulumi stack rm prod" in out


def test_failed_destroy_says_what_is_left_across_the_stack(project):
    project.results(**{"pulumi destroy": {"exit": 255, "err": "error: deleting VPC: DependencyViolation\n"}})

    result = project.run("destroy")

    assert result.code != 0
    out = result.output
    assert "pulumi destroy failed (exit status 255). What can be left of stack dev (cluster trainium-vllm-dev):" in out
    assert "the S3 model bucket (Pulumi empties it first) or the log group /aws/eks/trainium-vllm-dev/cluster." in out
    assert "Run make destroy again: it retries only what is left." in out
    assert "Values=trainium-vllm-dev Name=tag-key,Values=karpenter.sh/nodepool" in out
    assert "aws ec2 describe-launch-templates --region us-west-2" in out


def test_destroy_of_a_missing_stack_creates_nothing(project):
    project.results(**{"pulumi stack select dev": {"exit": 255, "err": "error: no stack named 'dev' found\n"}})

    result = project.run("destroy")

    assert result.code != 0
    assert "error: no stack named 'dev' found" in result.output
    assert "error: could not select stack dev in file://~ (pulumi's error above)" in result.output
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive", "pulumi stack select dev"]


def test_destroy_never_logs_in(project):
    project.results(**{"pulumi whoami": {"exit": 255, "err": NO_LOGIN}})

    result = project.run("destroy")

    assert result.code != 0
    assert "error: not logged in to a Pulumi backend, so there is no stack to destroy." in result.output
    assert result.commands("pulumi") == ["pulumi whoami --verbose --non-interactive"]


def test_destroy_without_venv_takes_the_cluster_from_the_stack_outputs(project):
    shutil.rmtree(project.dir / "venv")
    project.results(**{"pulumi stack output clusterName": {"out": "from-outputs\n"},
                       "pulumi stack output region": {"out": "eu-north-1\n"}})

    result = project.run("tools/stack.sh", "destroy")

    assert result.code == 0, result.output
    assert "pulumi stack output clusterName --stack dev" in result.commands()
    assert ("aws ec2 describe-launch-templates --region eu-north-1 "
            "--filters Name=tag:karpenter.k8s.aws/cluster,Values=from-outputs") in result.output


# --- render ------------------------------------------------------------------------------------------


def test_render_needs_neither_pulumi_nor_aws(project):
    for cli in ("pulumi", "aws"):
        (project.bin / cli).unlink()

    result = project.run("render", "STACK=prod")

    assert result.code == 0, result.output
    assert result.commands() == ["python -m tools.render --stack prod"]


def test_render_without_python_says_what_to_install(project):
    result = project.run("render", "PYTHON=python3.99")

    assert result.code != 0
    assert "error: python3.99 not found on PATH. Python 3.11 or newer is needed to build ./venv." in result.output
    assert "make render PYTHON=python3.12" in result.output
    assert result.calls == []
