"""tools.smoke against a fake vLLM 0.9 server behind the stack's API key, directly (--url) and through fake
`pulumi` and `kubectl`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from components.config import PROJECT_DIR
from tests.fakes import fake_bin
from tests.fakes.fake_bin import KUBECONFIG, kubectl_calls, pulumi_calls
from tests.fakes.fake_kubectl import NODE, TRAINIUM_LABELS
from tests.fakes.fake_vllm import CHAT_PIECES, FakeVllm
from tools import cli, endpoint, smoke

KEY = "sk-smoke-7f3a9c2e41"
INFERENTIA2_LABELS = {"node.kubernetes.io/instance-type": "inf2.xlarge", "karpenter.sh/nodepool": "neuron-inf2",
                      "karpenter.sh/capacity-type": "on-demand"}


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch):
    """The key in $VLLM_API_KEY unless a test says otherwise, and no stray OpenAI settings."""
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    """Poll /health and retry the port-forward ten times as often as the tool does, to keep the tests quick."""
    monkeypatch.setattr(endpoint, "POLL_SECONDS", 0.1)


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with FakeVllm(api_key=KEY) as fake:
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = smoke.main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def statuses(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["name"], c["status"]) for c in result["checks"]]


def check(result: dict[str, Any], name: str) -> dict[str, str]:
    (found,) = [c for c in result["checks"] if c["name"] == name]
    return found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_without_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev stack with vllm.requireApiKey false, read from a scratch project."""
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    document["config"].setdefault("trainium-vllm:vllm", {})["requireApiKey"] = False
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)


def test_healthy_server_passes_with_metrics(server, capsys):
    code, result = run(capsys, "--url", server.url, "--wait", "5")

    assert code == 0
    assert set(result) == {"ok", "url", "model", "metrics", "checks"}
    assert (result["ok"], result["url"], result["model"]) == (True, server.url, "mistral")
    assert statuses(result) == [("api key", "pass"), ("health", "pass"), ("placement", "pass"), ("models", "pass"),
                                ("auth", "pass"), ("completion", "pass"), ("chat stream", "pass")]
    assert check(result, "api key")["detail"] == "from $VLLM_API_KEY"
    assert check(result, "placement")["detail"].startswith("not looked up: with --url there is no kubeconfig")
    assert check(result, "auth")["detail"] == f"POST {server.url}/invocations without the API key is refused (401)"
    completion = check(result, "completion")["detail"]
    assert completion.startswith("100 tokens in ")
    assert 'finish_reason length: "1. Red 2. Orange 3. Yellow 4. Green 5. Blue 6. Indigo 7. Violet"' in completion
    metrics = result["metrics"]
    assert metrics["completion_tokens"] == len(CHAT_PIECES)
    assert 0 < metrics["ttft_seconds"] < metrics["total_seconds"] < 5
    # 14 tokens 5 ms apart: well above 10 tokens/s, below 1000.
    assert 10 < metrics["output_tokens_per_second"] < 1000


def test_sends_the_key_the_workshop_request_and_a_streamed_chat(server, capsys):
    code, _ = run(capsys, "--url", server.url + "/", "--wait", "5")

    assert code == 0
    assert server.paths() == ["/health", "/v1/models", "/invocations", "/v1/completions", "/v1/chat/completions"]
    health, models, invocations, completion, chat = server.requests
    # The key goes with every API request and nowhere else: not to /health, and not with the /invocations probe.
    for request in (models, completion, chat):
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["user-agent"].startswith("OpenAI/Python ")
        # The client's automatic retries are off: every request is a first attempt.
        assert request.headers["x-stainless-retry-count"] == "0"
    assert "authorization" not in health.headers and "authorization" not in invocations.headers
    assert invocations.body == {"model": "mistral", "prompt": "ping", "max_tokens": 1}
    assert completion.body == {"model": "mistral", "prompt": "The names of the colors in the rainbow are: ",
                               "max_tokens": 100, "temperature": 0}
    assert chat.body["model"] == "mistral" and chat.body["max_tokens"] == 100
    assert (chat.body["stream"], chat.body["stream_options"]) == (True, {"include_usage": True})
    assert chat.body["messages"][0]["role"] == "user"


def test_human_report_never_shows_the_key(server, capsys):
    code = smoke.main(["--url", server.url, "--wait", "5"])

    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"Smoke test of model 'mistral' (stack 'dev') at {server.url}:")
    assert "  PASS  api key: from $VLLM_API_KEY" in out
    assert "  PASS  health: " in out and "  PASS  chat stream: 14 tokens (usage), first after " in out
    assert out.rstrip().endswith("OK (0 warning(s))")
    assert KEY not in out + err


@pytest.mark.parametrize("loading", [{"listen_after": 0.5}, {"unhealthy_for": 0.5}],
                         ids=["refusing-connections", "health-503"])
def test_waits_for_a_loading_server(loading, capsys):
    with FakeVllm(api_key=KEY, **loading) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "10")

    assert code == 0, result
    health = check(result, "health")
    assert health["status"] == "pass"
    seconds = float(health["detail"].split(" after ")[1].rstrip("s"))
    assert 0.45 < seconds < 3


def test_server_never_ready_fails_within_wait(capsys):
    with FakeVllm(api_key=KEY, listen_after=30) as fake:
        started = time.monotonic()
        code, result = run(capsys, "--url", fake.url, "--wait", "1")
        elapsed = time.monotonic() - started

    assert code == 1 and result["ok"] is False
    assert elapsed < 4
    assert statuses(result) == [("api key", "pass"), ("health", "fail")]
    health = check(result, "health")["detail"]
    assert f"{fake.url}/health not ready within 1s" in health
    assert "Connection refused" in health
    assert "kubectl logs deployment/mistral -n vllm -c vllm -f" in health
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
    with FakeVllm(api_key=KEY, served_name="llama") as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    models = result["checks"][-1]
    assert (models["name"], models["status"]) == ("models", "fail")
    assert "'mistral' is not served; /v1/models lists: llama" in models["detail"]
    assert "/v1/completions" not in fake.paths()


@pytest.mark.parametrize(("broken", "name", "message"), [
    ({"empty_completion": True}, "completion", "returned an empty completion"),
    ({"chat_status": 500}, "chat stream", "answered 500: {\"object\": \"error\", \"message\": \"EngineCore"),
    ({"stream_error_every": 1}, "chat stream", "the server sent an error in the stream: EngineCore encountered"),
    ({"malformed_stream": True}, "chat stream", "/v1/chat/completions sent a malformed stream: "),
    ({"cut_off": True}, "chat stream", "/v1/chat/completions ended without a finish_reason (cut off)"),
], ids=["empty-completion", "chat-500", "error-in-stream", "malformed-stream", "cut-off"])
def test_bad_answers_fail(broken, name, message, capsys):
    with FakeVllm(api_key=KEY, **broken) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    failed = result["checks"][-1]
    assert (failed["name"], failed["status"]) == (name, "fail")
    assert message in failed["detail"]
    # Reported as it happened: the client did not retry behind our back.
    assert fake.paths().count("/v1/chat/completions") == (name == "chat stream")


def test_decode_speed_leaves_out_the_wait_for_the_first_token(capsys):
    # 0.3 s to the first token, then 13 more 5 ms apart: at most 13 / 0.065 = 200 tokens/s after the first,
    # where 14 tokens over the whole 0.37 s would be under 40.
    with FakeVllm(api_key=KEY, first_token_delays=[0.3]) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 0
    metrics = result["metrics"]
    assert 0.3 <= metrics["ttft_seconds"] < 0.45
    assert 80 < metrics["output_tokens_per_second"] <= 200


# --- the API key -------------------------------------------------------------------------------------


def test_wrong_key_is_refused_with_a_hint(server, monkeypatch, capsys):
    monkeypatch.setenv("VLLM_API_KEY", "sk-not-the-key")

    code, result = run(capsys, "--url", server.url, "--wait", "5")

    assert code == 1
    assert statuses(result)[-1] == ("models", "fail")
    detail = check(result, "models")["detail"]
    assert detail.startswith(f"GET {server.url}/v1/models answered 401: {{\"error\": \"Unauthorized\"}}")
    assert "the server refused the API key: set $VLLM_API_KEY to the stack's current key" in detail
    assert server.paths() == ["/health", "/v1/models"]


def test_key_from_the_stack_output_when_not_in_env(server, tmp_path, monkeypatch, capsys):
    fake_bin.install(tmp_path, monkeypatch, server.port)
    monkeypatch.delenv("VLLM_API_KEY")
    monkeypatch.setenv("FAKE_API_KEY", KEY)

    code = smoke.main(["--url", server.url, "--wait", "5", "--json"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert check(json.loads(out), "api key")["detail"] == "from `pulumi stack output apiKey --stack dev`"
    assert pulumi_calls(tmp_path) == [["stack", "output", "apiKey", "--show-secrets", "--stack", "dev"]]
    assert server.requests[1].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in out


def test_key_in_env_wins_over_the_stack(server, tmp_path, monkeypatch, capsys):
    fake_bin.install(tmp_path, monkeypatch, server.port)
    monkeypatch.setenv("FAKE_API_KEY", "sk-stack-key-not-used")

    code, _ = run(capsys, "--wait", "10")

    assert code == 0
    # pulumi is asked for the kubeconfig only.
    assert [call[2] for call in pulumi_calls(tmp_path)] == ["kubeconfig"]


def test_missing_key_output_says_what_to_do(server, tmp_path, monkeypatch, capsys):
    fake_bin.install(tmp_path, monkeypatch, server.port)
    monkeypatch.delenv("VLLM_API_KEY")

    code, result = run(capsys, "--url", server.url, "--wait", "5")

    assert code == 1
    (failed,) = result["checks"]
    assert (failed["name"], failed["status"]) == ("api key", "fail")
    assert failed["detail"] == ("`pulumi stack output apiKey --stack dev` failed (error: current stack does not have "
                                "output property 'apiKey'); has `pulumi up` run for this stack? Or set VLLM_API_KEY")
    assert server.requests == []


def test_key_needed_without_pulumi_says_set_the_variable(server, tmp_path, monkeypatch, capsys):
    (fake_bin.install(tmp_path, monkeypatch, server.port) / "pulumi").unlink()
    monkeypatch.delenv("VLLM_API_KEY")

    code, result = run(capsys, "--url", server.url)

    assert code == 1
    assert check(result, "api key")["detail"] == ("pulumi not found on PATH: install the Pulumi CLI "
                                                  "(https://www.pulumi.com/docs/install/), or set VLLM_API_KEY")


def test_stack_without_a_key_needs_none(tmp_path, monkeypatch, capsys):
    stack_without_key(tmp_path, monkeypatch)
    monkeypatch.delenv("VLLM_API_KEY")

    with FakeVllm() as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 0, result
    assert check(result, "api key")["detail"] == "none sent: the stack requires none (vllm.requireApiKey: false)"
    # No key, so nothing to refuse: /invocations is not probed.
    assert "auth" not in [c["name"] for c in result["checks"]]
    assert "/invocations" not in fake.paths()


def test_open_invocations_fail_but_the_other_checks_run(capsys):
    # vLLM's own --api-key check: /v1 needs the key, /invocations does not.
    with FakeVllm(api_key=KEY, key_guards_only_v1=True) as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    assert statuses(result)[-3:] == [("auth", "fail"), ("completion", "pass"), ("chat stream", "pass")]
    detail = check(result, "auth")["detail"]
    assert detail.startswith(f"POST {fake.url}/invocations without the API key answered 200, not 401 ")
    assert "anyone who reaches the Service can use the model" in detail
    assert "is the stack's API key middleware loaded" in detail


def test_invocations_answering_something_else_fails(capsys):
    # A server without the key at all answers the probe with a completion; a 404 would fail the same way.
    with FakeVllm() as fake:
        code, result = run(capsys, "--url", fake.url, "--wait", "5")

    assert code == 1
    assert check(result, "auth")["status"] == "fail"


def test_unknown_model_is_a_usage_error(capsys):
    assert smoke.main(["--model", "llama", "--url", "http://127.0.0.1:1", "--wait", "0"]) == 2
    assert "--model 'llama' is not in vllm.models of stack 'dev'; choose one of: mistral" in capsys.readouterr().err


def test_model_option_picks_a_model_of_the_stack(tmp_path, monkeypatch, capsys):
    document = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    models = document["config"]["trainium-vllm:vllm"]["models"]
    models.append({**models[0], "name": "llama"})
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)

    with FakeVllm(api_key=KEY, served_name="llama") as fake:
        code, result = run(capsys, "--model", "llama", "--url", fake.url, "--wait", "5")

    assert code == 0, result
    assert result["model"] == "llama"
    assert {r.body["model"] for r in fake.requests if r.method == "POST"} == {"llama"}


@pytest.mark.parametrize(("argv", "message"), [
    (["--url", "localhost:8080"], "--url localhost:8080: give a full URL such as http://localhost:8080"),
    (["--url", "http://localhost:8080", "--kubeconfig", "k"], "--url and --kubeconfig exclude each other"),
    (["--wait", "-1"], "--wait must be zero or more seconds"),
])
def test_bad_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_stack_is_a_usage_error(capsys):
    assert smoke.main(["--stack", "nope"]) == 2
    err = capsys.readouterr().err
    assert "stack 'nope'" in err and "Pulumi.nope.yaml not found" in err


# --- the port-forward path, with fake executables ---------------------------------------------------


@pytest.fixture
def fakes(tmp_path, monkeypatch, server) -> Path:
    return fake_bin.install(tmp_path, monkeypatch, server.port)


def test_port_forward_with_the_stack_kubeconfig(fakes, tmp_path, server, capsys):
    code, result = run(capsys, "--wait", "10")

    assert code == 0, result
    assert result["url"] == f"http://127.0.0.1:{server.port}"
    assert check(result, "port-forward") == {
        "name": "port-forward", "status": "pass",
        "detail": f"127.0.0.1:{server.port} -> service/mistral:8080 in namespace vllm"}
    forward, pods, nodes = kubectl_calls(tmp_path)
    kubeconfig = forward["args"][1]
    assert forward["args"] == ["--kubeconfig", kubeconfig, "port-forward", "-n", "vllm", "service/mistral", ":8080"]
    assert forward["kubeconfig"].strip() == KUBECONFIG
    assert pods["args"] == ["--kubeconfig", kubeconfig, "--request-timeout=15s", "get", "pods", "-n", "vllm",
                            "-l", "app.kubernetes.io/instance=mistral", "-o", "json"]
    assert nodes["args"][2:] == ["--request-timeout=15s", "get", "nodes", NODE, "-o", "json"]
    # The secret kubeconfig is gone afterwards, and kubectl was stopped (and reaped).
    assert not Path(kubeconfig).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(forward["pid"], 0)


def test_reports_the_trainium_instance_served_from(fakes, capsys):
    code = smoke.main(["--wait", "10"])

    out = capsys.readouterr().out
    assert code == 0
    assert (f"  PASS  placement: served from trn1.2xlarge (NodePool neuron, on-demand): pod mistral-7c9d8b6f5-x2x4z "
            f"on node {NODE}\n") in out
    assert out.rstrip().endswith("OK (0 warning(s))")


def test_inferentia2_fallback_is_a_warning_that_says_how_to_move_back(fakes, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_NODES", json.dumps({NODE: INFERENTIA2_LABELS}))

    code = smoke.main(["--wait", "10"])

    out = capsys.readouterr().out
    assert code == 0
    assert "  WARN  placement: served from inf2.xlarge (NodePool neuron-inf2, on-demand): pod " in out
    assert "That is the Inferentia2 fallback pool: Trainium had no capacity or quota" in out
    assert (f"Once Trainium capacity/quota exists, move it back: kubectl cordon {NODE} && "
            "kubectl rollout restart deployment/mistral -n vllm") in out
    assert out.rstrip().endswith("OK (1 warning(s))")


def test_several_pods_each_say_where_they_run(fakes, tmp_path, monkeypatch, capsys):
    other = "ip-10-0-5-9.us-west-2.compute.internal"
    monkeypatch.setenv("FAKE_PODS", json.dumps([
        {"name": "mistral-b", "node": other, "phase": "Running"},
        {"name": "mistral-a", "node": NODE, "phase": "Running"},
        # A new pod still initialising on a third node: scheduled, but not serving.
        {"name": "mistral-c", "node": "ip-10-0-7-3.us-west-2.compute.internal", "phase": "Pending"},
    ]))
    monkeypatch.setenv("FAKE_NODES", json.dumps({NODE: TRAINIUM_LABELS, other: INFERENTIA2_LABELS}))

    code, result = run(capsys, "--wait", "10")

    assert code == 0
    placement = check(result, "placement")
    assert placement["status"] == "warn"
    assert placement["detail"].startswith(
        f"served from trn1.2xlarge (NodePool neuron, on-demand): pod mistral-a on node {NODE}; "
        f"inf2.xlarge (NodePool neuron-inf2, on-demand): pod mistral-b on node {other}. ")
    assert f"kubectl cordon {other} && kubectl rollout restart" in placement["detail"]
    assert kubectl_calls(tmp_path)[-1]["args"][4:] == ["nodes", NODE, other, "-o", "json"]


@pytest.mark.parametrize(("variable", "value", "status", "detail"), [
    ("FAKE_KUBECTL_GET_ERROR", 'Error from server (Forbidden): pods is forbidden: User "dev" cannot list resource',
     "warn", "could not look up the model's nodes: `kubectl get pods -n vllm -l app.kubernetes.io/instance=mistral` "
     "failed: Error from server (Forbidden): pods is forbidden"),
    ("FAKE_PODS", json.dumps([{"name": "mistral-a", "phase": "Pending"}, {"name": "mistral-b", "node": NODE,
                                                                         "phase": "Pending"}]),
     "warn", "no running pod labelled app.kubernetes.io/instance=mistral in namespace vllm"),
    ("FAKE_NODES", json.dumps({NODE: {}}),
     "pass", "served from an unknown instance type (not a Karpenter node, capacity type unknown): pod "),
], ids=["forbidden", "no-running-pod", "no-labels"])
def test_placement_it_cannot_tell_never_fails_the_test(fakes, monkeypatch, variable, value, status, detail, capsys):
    monkeypatch.setenv(variable, value)

    code, result = run(capsys, "--wait", "10")

    assert code == 0
    placement = check(result, "placement")
    assert placement["status"] == status
    assert placement["detail"].startswith(detail)


def test_port_forward_retries_while_the_pod_is_pending(fakes, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "1")

    code, result = run(capsys, "--wait", "10")

    assert code == 0, result
    assert [call["args"][2] for call in kubectl_calls(tmp_path)][:2] == ["port-forward", "port-forward"]


def test_port_forward_failure_names_the_kubectl_error(fakes, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "99")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)

    code, result = run(capsys, "--kubeconfig", str(kubeconfig), "--wait", "0")

    assert code == 1
    assert statuses(result) == [("api key", "pass"), ("port-forward", "fail")]
    detail = check(result, "port-forward")["detail"]
    assert "unable to forward port because pod is not running. Current status=Pending" in detail
    assert detail.endswith("; is the pod running? kubectl get pods -n vllm")
    # --kubeconfig skips pulumi and goes to kubectl as given.
    assert kubectl_calls(tmp_path)[0]["args"][1] == str(kubeconfig)
    assert pulumi_calls(tmp_path) == []


@pytest.mark.parametrize("error", [
    "Unable to connect to the server: dial tcp 203.0.113.10:443: i/o timeout",
    "Unable to connect to the server: dial tcp: lookup abc.gr7.us-west-2.eks.amazonaws.com: no such host",
    "error: You must be logged in to the server (Unauthorized)",
    "The connection to the server localhost:8080 was refused - did you specify the right host or port?",
])
def test_unreachable_api_server_fails_at_once_and_says_so(fakes, tmp_path, monkeypatch, error, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "99")
    monkeypatch.setenv("FAKE_KUBECTL_ERROR", error)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)

    code, result = run(capsys, "--kubeconfig", str(kubeconfig), "--wait", "60")

    assert code == 1
    assert len(kubectl_calls(tmp_path)) == 1
    assert check(result, "port-forward")["detail"] == (
        f"cannot reach the Kubernetes API server ({error}); check the kubeconfig and your credentials: "
        f"kubectl --kubeconfig {kubeconfig} get nodes")


def test_unreachable_api_server_with_the_stack_kubeconfig_says_how_to_try_it(fakes, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "99")
    monkeypatch.setenv("FAKE_KUBECTL_ERROR", "Unable to connect to the server: dial tcp 203.0.113.10:443: i/o timeout")

    code, result = run(capsys, "--wait", "60")

    assert code == 1
    assert check(result, "port-forward")["detail"].endswith(
        "check the kubeconfig and your credentials: pulumi stack output kubeconfig --show-secrets --stack dev "
        "> kubeconfig.json && kubectl --kubeconfig kubeconfig.json get nodes")


@pytest.mark.parametrize("error", [
    'Error from server (NotFound): services "mistral" not found',
    # The API server failing to reach the node's kubelet: not our connection to the API server.
    "error: error upgrading connection: error dialing backend: dial tcp 10.0.3.17:10250: i/o timeout",
])
def test_other_kubectl_errors_are_retried_without_the_pod_hint(fakes, tmp_path, monkeypatch, error, capsys):
    monkeypatch.setenv("FAKE_KUBECTL_FAILURES", "99")
    monkeypatch.setenv("FAKE_KUBECTL_ERROR", error)

    code, result = run(capsys, "--wait", "0.5")

    assert code == 1
    assert len(kubectl_calls(tmp_path)) >= 2
    assert check(result, "port-forward")["detail"] == (
        f"kubectl port-forward to service/mistral in namespace vllm failed: {error}")


def test_pulumi_failure_says_what_to_do(fakes, tmp_path, monkeypatch, capsys):
    # A second stack, identical to dev, that the fake pulumi does not know.
    (tmp_path / "Pulumi.prod.yaml").write_text((PROJECT_DIR / "Pulumi.dev.yaml").read_text())
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)

    code, result = run(capsys, "--stack", "prod", "--wait", "0")

    assert code == 1
    assert statuses(result) == [("api key", "pass"), ("kubeconfig", "fail")]
    detail = check(result, "kubeconfig")["detail"]
    assert detail.startswith("`pulumi stack output kubeconfig --stack prod` failed (error: no stack named 'prod' found")
    assert detail.endswith("has `pulumi up` run for this stack? Or pass --kubeconfig PATH (or --url URL)")
    assert kubectl_calls(tmp_path) == []


@pytest.mark.parametrize(("missing", "name", "message"), [
    ("kubectl", "port-forward",
     "kubectl not found on PATH: install kubectl (https://kubernetes.io/docs/tasks/tools/), or pass --url"),
    ("pulumi", "kubeconfig", "pulumi not found on PATH: install the Pulumi CLI (https://www.pulumi.com/docs/install/), "
     "or pass --kubeconfig PATH (or --url URL)"),
])
def test_missing_executables_say_what_to_install(fakes, missing, name, message, capsys):
    (fakes / missing).unlink()

    code, result = run(capsys)

    assert code == 1
    assert statuses(result) == [("api key", "pass"), (name, "fail")]
    assert check(result, name)["detail"] == message


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "tools.smoke", "--help"], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=30)

    assert result.returncode == 0
    assert "usage: python -m tools.smoke" in result.stdout and "--wait SECONDS" in result.stdout
