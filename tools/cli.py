"""What the operator tools share: exit codes, loading the stack, and printing a list of checks.

A tool builds a list of `Check`s and hands it to `report()`, which prints it for people or as JSON and
returns the exit code. Usage problems (bad flags, a bad stack file) raise `UsageError` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from components import config as stack_config

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

# Where `Pulumi.<stack>.yaml` is read from; module-level so tests can point it at a scratch project.
PROJECT_DIR: Path = stack_config.PROJECT_DIR

Status = Literal["pass", "warn", "fail"]


class UsageError(Exception):
    """The command line or the stack file is wrong: nothing was checked."""


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def parser(tool: str, description: str, exit_status: str) -> argparse.ArgumentParser:
    """The tool's argument parser, with the --stack option every tool has."""
    parser = argparse.ArgumentParser(prog=f"python -m tools.{tool}", description=description,
                                     epilog=f"Exit status: {exit_status}.")
    parser.add_argument("--stack", default="dev", help="stack whose Pulumi.<stack>.yaml to read (default: dev)")
    return parser


def load_stack(stack: str) -> stack_config.StackConfig:
    """The stack's validated settings, the same ones `pulumi up` uses."""
    try:
        return stack_config.from_stack_file(stack, PROJECT_DIR)
    except stack_config.ConfigError as error:
        raise UsageError(f"stack '{stack}': {error}") from None


def failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def report(title: str, checks: list[Check], as_json: bool, extra: dict[str, Any]) -> int:
    """Print the checks (human text, or JSON with `extra` fields first) and return the exit code."""
    ok = not failed(checks)
    if as_json:
        print(json.dumps({"ok": ok, **extra, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(title)
        for check in checks:
            print(f"  {check.status.upper():4}  {check.name}: {check.detail}")
        warnings = sum(c.status == "warn" for c in checks)
        failures = sum(c.status == "fail" for c in checks)
        print(f"OK ({warnings} warning(s))" if ok else f"FAILED: {failures} check(s) failed, {warnings} warning(s)")
    return EXIT_OK if ok else EXIT_PROBLEM


def usage_error(error: UsageError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USAGE
