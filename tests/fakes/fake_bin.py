"""A PATH of fake `pulumi` and `kubectl` executables (fake_pulumi.py, fake_kubectl.py) for the tools' tests."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

FAKES = Path(__file__).parent
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "trainium-vllm-dev"}]})


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vllm_port: int) -> Path:
    """Put only the fakes on PATH; kubectl forwards to the fake vLLM server on `vllm_port`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pulumi", "kubectl"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / f"fake_{name}.py"}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_KUBECONFIG", KUBECONFIG)
    monkeypatch.setenv("FAKE_VLLM_PORT", str(vllm_port))
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(tmp_path / "kubectl.log"))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(tmp_path / "pulumi.log"))
    return bin_dir


def kubectl_calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "kubectl.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def pulumi_calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "pulumi.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
