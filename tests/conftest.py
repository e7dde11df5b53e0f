"""Shared fixtures: the dev stack's settings and a runner that executes `__main__.py` under the mocks.

Every run gets a fresh event loop and fresh recording mocks (see tools/offline.py), so tests are
independent and can run in any order.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from components.config import PROJECT
from tools.offline import Deployment, run_program, stack_values


@pytest.fixture
def dev_config() -> dict[str, Any]:
    """The real Pulumi.dev.yaml settings, with full keys; a fresh copy each test may change."""
    return copy.deepcopy(stack_values("dev"))


def with_settings(config: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A copy of `config` with project settings replaced (`neuron=...`); None removes a setting."""
    changed = copy.deepcopy(config)
    for key, value in settings.items():
        full_key = f"{PROJECT}:{key}"
        if value is None:
            changed.pop(full_key, None)
        else:
            changed[full_key] = value
    return changed


@pytest.fixture
def deploy(dev_config) -> Callable[..., Deployment]:
    """Run the program with the dev stack, optionally with settings replaced: `deploy(neuron={...})`."""

    def run(config: dict[str, Any] | None = None, *, preview: bool = False, **settings: Any) -> Deployment:
        return run_program(with_settings(config or dev_config, **settings), preview=preview)

    return run


@pytest.fixture(scope="session")
def dev_deployment() -> Deployment:
    """One run of the dev stack, shared by the tests that only read what it registered."""
    return run_program(stack_values("dev"))
