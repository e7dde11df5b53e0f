"""tools.smoke against a fake vLLM 0.9 server, directly (--url) and through fake `pulumi` and `kubectl`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from components.config import PROJECT_DIR
from tests.fakes.fake_vllm import CHAT_PIECES, FakeVllm
from tools import cli, smoke

FAKES = Path(__file__).parent / "fakes"
KUBECONFIG = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "trainium-vllm-dev"}]})


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with FakeVllm() as fake:
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = smoke.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthy_server_passes_with_metrics(server, capsys):
    code, result = run(capsys, "--url", server.url, "--wait", "5")

    assert code == 0
    assert set(result) == {"ok", "url", "model", "metrics", "checks"}
    assert (result["ok"], result["url"], result["model"]) == (True, server.url, "mistral")
    assert [(c["name"], c["status"]) for c in result["checks"]] == [
        ("health", "pass"), ("models", "pass"), ("completion", "pass"), ("chat stream", "pass")]
    completion = result["checks"][2]["detail"]
    assert completion.startswith("100 tokens in ")
    assert 'finish_reason length: "1. Red 2. Orange 3. Yellow 4. Green 5. Blue 6. Indigo 7. Violet"' in completion
    metrics = result["metrics"]
    assert metrics["completion_tokens"] == len(CHAT_PIECES)
    assert 0 < metrics["ttft_seconds"] < metrics["total_seconds"] < 5
    # 14 tokens 5 ms apart: well above 10 tokens/s, below 1000.
    assert 10 < metrics["output_tokens_per_second"] < 1000


def test_sends_the_workshop_request_and_a_streamed_chat(server, capsys):
    code, _ = run(capsys, "--url", server.url + "/", "--wait", "5")

    assert code == 0
    assert server.paths() == ["/health", "/v1/models", "/v1/completions", "/v1/chat/completions"]
    completion, chat = server.requests[2][2], server.requests[3][2]
    assert completion == {"model": "mistral", "prompt": "The names of the colors in the rainbow are: ",
                          "max_tokens": 100, "temperature": 0}
    assert chat["model"] == "mistral"
    assert (chat["stream"], chat["stream_options"]) == (True, {"include_usage": True})
    assert chat["messages"][0]["role"] == "user"


def test_human_report(server, capsys):
    code = smoke.main(["--url", server.url, "--wait", "5"])

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"Smoke test of model 'mistral' (stack 'dev') at {server.url}:")
    assert "  PASS  health: " in out and "  PASS  chat stream: 14 tokens (usage), first after " in out
    assert out.rstrip().endswith("OK (0 warning(s))")


@pytest.mark.parametrize("loading", [{"listen_after": 1.0}, {"unhealthy_for": 1.0}],
                         ids=["refusing-connections", "health-503"])
def test_waits_for_a_loading_server(loading, capsys):
    with FakeVllm(**loading) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "10")

    assert code == 0, result
    health = result["checks"][0]
    assert health["status"] == "pass"
    seconds = float(health["detail"].split(" after ")[1].rstrip("s"))
    assert 0.9 < seconds < 5


def test_server_never_ready_fails_within_wait(capsys):
    with FakeVllm(listen_after=30) as fake:
        started = time.monotonic()
        code, result = run(capsys, "--url", fake.url, "--wait", "1")
        elapsed = time.monotonic() - started

    assert code == 1 and result["ok"] is False
    assert elapsed < 4
    (health,) = result["checks"]
    assert health["name"] == "health" and health["status"] == "fail"
    assert f"{fake.url}/health not ready within 1s" in health["detail"]
    assert "Connection refused" in health["detail"]
    assert "kubectl logs deployment/mistral -n vllm -c vllm -f" in health["detail"]
    assert result["metrics"] == {"ttft_seconds": None, "output_tokens_per_second": None, "total_seconds": None,
                                 "completion_tokens": None}


def test_dead_port_fails_fast(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    code = smoke.main(["--url", url, "--wait", "0"])
    elapsed = time.monotonic() - started

    out = capsys.readouterr().out
    assert code == 1
    assert elapsed < 3
    assert f"FAIL  health: {url}/health not ready within 0s (last: " in out and "Connection refused)" in out
    assert "FAILED: 1 check(s) failed" in out


def test_wrong_model_names_what_is_served(capsys):
    with FakeVllm(served_name="llama") as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    models = result["checks"][-1]
    assert (models["name"], models["status"]) == ("models", "fail")
    assert "'mistral' is not served; /v1/models lists: llama" in models["detail"]
    assert "/v1/completions" not in fake.paths()


@pytest.mark.parametrize(("broken", "name", "message"), [
    ({"empty_completion": True}, "completion", "returned an empty completion"),
    ({"chat_status": 500}, "chat stream", "answered 500: {\"object\": \"error\", \"message\": \"EngineCore"),
], ids=["empty-completion", "chat-500"])
def test_bad_answers_fail(broken, name, message, capsys):
    with FakeVllm(**broken) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    failed = result["checks"][-1]
    assert (failed["name"], failed["status"]) == (name, "fail")
    assert message in failed["detail"]


def test_unknown_model_is_a_usage_error(capsys):
    assert smoke.main(["--model", "llama", "--url", "http://127.0.0.1:1"]) == 2
    assert "--model 'llama' is not in vllm.models of stack 'dev'; choose one of: mistral" in capsys.readouterr().err


def test_url_without_scheme_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(["--url", "localhost:8080"])
    assert exit_info.value.code == 2
    assert "--url localhost:8080: give a full URL such as http://localhost:8080" in capsys.readouterr().err


def test_bad_stack_is_a_usage_error(capsys):
    assert smoke.main(["--stack", "nope"]) == 2
    err = capsys.readouterr().err
    assert "stack 'nope'" in err and "Pulumi.nope.yaml not found" in err


# --- the port-forward path, with fake executables ---------------------------------------------------


@pytest.fixture
def fake_bin(tmp_path, monkeypatch, server) -> Path:
    """A PATH holding only fake `pulumi` and `kubectl`, which forward to the fake server."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pulumi", "kubectl"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / f"fake_{name}.py"}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_KUBECONFIG", KUBECONFIG)
    monkeypatch.setenv("FAKE_VLLM_PORT", str(server.port))
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(tmp_path / "kubectl.log"))
    return bin_dir


def kubectl_calls(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "kubectl.log").read_text().splitlines()]


def test_port_forward_with_the_stack_kubeconfig(fake_bin, tmp_path, server, capsys):
    code, result = run(capsys, "--wait", "10")

    assert code == 0, result
    assert result["url"] == f"http://127.0.0.1:{server.port}"
    assert result["checks"][0] == {"name": "port-forward", "status": "pass",
                                   "detail": f"127.0.0.1:{server.port} -> service/mistral:8080 in namespace vllm"}
    (call,) = kubectl_calls(tmp_path)
    kubeconfig = call["args"][1]
    assert call["args"] == ["--kubeconfig", kubeconfig, "port-forward", "-n", "vllm", "service/mistral", ":8080"]
    assert call["kubeconfig"].strip() == KUBECONFIG
    # The secret kubeconfig is gone afterwards, and kubectl was stopped (and reaped).
    assert not Path(kubeconfig).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(call["pid"], 0)


def test_port_forward_retries_while_the_pod_is_pending(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "1")

    code, result = run(capsys, "--wait", "10")

    assert code == 0, result
    assert len(kubectl_calls(tmp_path)) == 2


def test_port_forward_failure_names_the_kubectl_error(fake_bin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "99")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)

    code, result = run(capsys, "--kubeconfig", str(kubeconfig), "--wait", "0")

    assert code == 1
    (check,) = result["checks"]
    assert check["name"] == "port-forward" and check["status"] == "fail"
    assert "unable to forward port because pod is not running. Current status=Pending" in check["detail"]
    assert "kubectl get pods -n vllm" in check["detail"]
    # --kubeconfig skips pulumi and goes to kubectl as given.
    assert kubectl_calls(tmp_path)[0]["args"][1] == str(kubeconfig)


def test_pulumi_failure_says_what_to_do(fake_bin, tmp_path, monkeypatch, capsys):
    # A second stack, identical to dev, that the fake pulumi does not know.
    (tmp_path / "Pulumi.prod.yaml").write_text((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)

    code, result = run(capsys, "--stack", "prod", "--wait", "0")

    assert code == 1
    (check,) = result["checks"]
    assert check["name"] == "kubeconfig" and check["status"] == "fail"
    assert check["detail"].startswith("`pulumi stack output kubeconfig --stack prod` failed (error: no stack named "
                                      "'prod' found")
    assert "has `pulumi up` run for this stack? Or pass --kubeconfig" in check["detail"]
    assert not (tmp_path / "kubectl.log").exists()


@pytest.mark.parametrize(("missing", "message"), [
    ("kubectl", "kubectl not found on PATH: install kubectl (https://kubernetes.io/docs/tasks/tools/), or pass --url"),
    ("pulumi", "pulumi not found on PATH: install the Pulumi CLI (https://www.pulumi.com/docs/install/)"),
])
def test_missing_executables_say_what_to_install(fake_bin, missing, message, capsys):
    (fake_bin / missing).unlink()

    code, result = run(capsys)

    assert code == 1
    (check,) = result["checks"]
    assert check["status"] == "fail" and message in check["detail"]


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "tools.smoke", "--help"], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=30)

    assert result.returncode == 0
    assert "usage: python -m tools.smoke" in result.stdout and "--wait SECONDS" in result.stdout
