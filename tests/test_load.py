"""tools.load against the fake vLLM server: percentiles, stopping by count and by time, caps, errors by kind."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from components.config import PROJECT_DIR
from tests.fakes import fake_bin
from tests.fakes.fake_bin import kubectl_calls
from tests.fakes.fake_vllm import CHAT_PIECES, TOKEN_DELAY, FakeVllm
from tools import endpoint, load
from tools.endpoint import ChatTiming

KEY = "sk-load-51c0ffee"


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def run(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, dict[str, Any]]:
    code = load.main(["--url", url, *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def chats(fake: FakeVllm) -> list[Any]:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


@pytest.mark.parametrize(("values", "expected"), [
    (list(range(1, 101)), {50: 50, 90: 90, 99: 99}),
    ([7, 3, 10, 1, 9, 2, 8, 4, 6, 5], {50: 5, 90: 9, 99: 10}),
    ([4.0, 1.0, 3.0, 2.0], {50: 2.0, 90: 4.0, 99: 4.0}),
    ([0.25], {50: 0.25, 90: 0.25, 99: 0.25}),
], ids=["1-100", "1-10-shuffled", "four", "one"])
def test_percentiles_are_nearest_rank(values, expected):
    assert {p: load.percentile(values, p) for p in expected} == expected


def test_summary_of_known_timings():
    # Ten answers with first tokens at 0.1 .. 1.0 s and last at 1.1 .. 2.0 s, 20 tokens each, two failures, 4 s.
    burst = load.Burst(sent=12, wall_seconds=4.0, errors=Counter({"HTTP 500": 2}),
                       examples={"HTTP 500": "POST /v1/chat/completions answered 500"},
                       timings=[ChatTiming(ttft_seconds=0.1 * i, total_seconds=1 + 0.1 * i, decode_seconds=1.0,
                                           completion_tokens=20, tokens_from_usage=True) for i in range(10, 0, -1)])
    args = load.parse_args(["--requests", "12", "--max-error-rate", "0.2"])

    result, checks = load.summarize(burst, args)

    assert result["ttft_seconds"] == {"p50": 0.5, "p90": 0.9, "p99": 1.0}
    assert result["latency_seconds"] == {"p50": 1.5, "p90": 1.9, "p99": 2.0}
    assert (result["requests_per_second"], result["output_tokens"], result["output_tokens_per_second"]) == (
        2.5, 200, 50.0)
    assert (result["stopped_by"], result["answered"], result["failed"], result["error_rate"]) == (
        "requests", 10, 2, 0.1667)
    assert [(c.name, c.status) for c in checks] == [("requests", "pass"), ("time to first token", "pass"),
                                                    ("latency", "pass"), ("throughput", "pass")]
    assert checks[1].detail == "p50 0.500s, p90 0.900s, p99 1.000s"
    assert checks[3].detail == "2.5 requests/s, 50.0 output tokens/s (200 tokens)"


def test_percentiles_of_measured_delays(capsys):
    # Five requests at once whose first tokens come 0, 0, 0.25, 0.5 and 0.5 s in, then 13 more 5 ms apart.
    # Nearest rank of five: p50 is the 3rd (0.25 s), p90 and p99 the 5th (0.5 s). The windows leave room for
    # a busy machine's overhead but not for the neighbouring rank.
    with FakeVllm(api_key=KEY, first_token_delays=[0, 0, 0.25, 0.5, 0.5]) as fake:
        code, result = run(capsys, fake.url, "--requests", "5", "--concurrency", "5")

    assert code == 0, result
    ttft, latency = result["result"]["ttft_seconds"], result["result"]["latency_seconds"]
    assert 0.25 <= ttft["p50"] < 0.45 and 0.5 <= ttft["p90"] <= ttft["p99"] < 0.7, ttft
    stream = 13 * TOKEN_DELAY
    assert 0.25 + stream <= latency["p50"] < 0.45 + stream and 0.5 + stream <= latency["p99"] < 0.75 + stream, latency
    assert fake.max_in_flight == 5


def test_time_to_first_token_leaves_out_the_clients_own_start_up():
    class FirstUseCost:
        """The client with its first-use import of the chat module made slow and obvious."""

        def __init__(self, client):
            self._client = client

        @property
        def chat(self):
            time.sleep(0.3)
            return self._client.chat

        def __getattr__(self, name):
            return getattr(self._client, name)

    with FakeVllm(api_key=KEY) as fake:
        with endpoint.openai_client(fake.url, KEY) as client:
            timing = endpoint.stream_chat(FirstUseCost(client), "mistral", 10)

    assert timing.ttft_seconds < 0.25


def test_stops_after_the_request_count_and_keeps_the_concurrency(capsys):
    with FakeVllm(api_key=KEY, first_token_delays=[0.03]) as fake:
        code, result = run(capsys, fake.url, "--requests", "7", "--concurrency", "3", "--max-tokens", "20")

    assert code == 0, result
    outcome = result["result"]
    assert (outcome["stopped_by"], outcome["sent"], outcome["answered"], outcome["failed"]) == ("requests", 7, 7, 0)
    assert len(chats(fake)) == 7
    assert fake.max_in_flight == 3
    assert outcome["output_tokens"] == 7 * len(CHAT_PIECES)
    # Throughput is over the run's wall time.
    wall = outcome["wall_seconds"]
    assert outcome["requests_per_second"] == pytest.approx(7 / wall, rel=0.02)
    assert outcome["output_tokens_per_second"] == pytest.approx(7 * len(CHAT_PIECES) / wall, rel=0.02)
    # Every request streams with the key, the usage chunk requested, and the flag's max_tokens.
    for request in chats(fake):
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert request.headers["x-stainless-retry-count"] == "0"
        assert request.body["stream"] is True and request.body["stream_options"] == {"include_usage": True}
        assert (request.body["model"], request.body["max_tokens"]) == ("mistral", 20)


def test_stops_when_the_duration_is_up(capsys):
    # Each request takes about 0.12 s; 0.3 s at two at a time sends about six, far from the 2000 allowed.
    with FakeVllm(api_key=KEY, first_token_delays=[0.05]) as fake:
        started = time.monotonic()
        code, result = run(capsys, fake.url, "--requests", "2000", "--concurrency", "2", "--duration", "0.3")
        elapsed = time.monotonic() - started

    assert code == 0, result
    outcome = result["result"]
    assert outcome["stopped_by"] == "duration"
    assert 2 <= outcome["sent"] <= 12
    # Requests in flight when the time is up finish and count.
    assert outcome["answered"] == outcome["sent"] == len(chats(fake))
    assert elapsed < 2.5


def test_counts_errors_by_kind(capsys):
    # Of 20: every 4th answers 500 (5), every 5th of the others breaks off mid-stream (5, 10, 15: 3).
    with FakeVllm(api_key=KEY, chat_status=500, fail_every=4, stream_error_every=5) as fake:
        code, result = run(capsys, fake.url, "--requests", "20", "--concurrency", "4")

    assert code == 1
    outcome = result["result"]
    assert outcome["errors"] == {"HTTP 500": 5, "error in stream": 3}
    assert (outcome["sent"], outcome["answered"], outcome["failed"], outcome["error_rate"]) == (20, 12, 8, 0.4)
    # No retries: 20 requests sent, 20 received.
    assert len(chats(fake)) == 20
    requests = [c for c in result["checks"] if c["name"] == "requests"][0]
    assert requests["status"] == "fail"
    assert "20 sent in " in requests["detail"]
    assert ": 12 answered, 8 failed (40.0%; at most 1.0% allowed)" in requests["detail"]
    assert "failures: HTTP 500 x5 (first: POST " in requests["detail"]
    assert "error in stream x3 (first: the server sent an error in the stream: EngineCore" in requests["detail"]


def test_a_request_without_an_answer_in_time_is_a_timeout(monkeypatch, capsys):
    monkeypatch.setattr(endpoint, "REQUEST_TIMEOUT_SECONDS", 0.2)

    with FakeVllm(api_key=KEY, first_token_delays=[0.01, 0.5]) as fake:
        code, result = run(capsys, fake.url, "--requests", "2", "--concurrency", "1", "--max-error-rate", "0.5")

    assert code == 0, result
    assert result["result"]["errors"] == {"timeout": 1}
    detail = result["checks"][2]["detail"]
    assert f"timeout x1 (first: POST {fake.url}/v1/chat/completions: no answer within 0.2s)" in detail


def test_a_server_hanging_up_is_a_connection_error(capsys):
    with FakeVllm(api_key=KEY, hang_up_every=2) as fake:
        code, result = run(capsys, fake.url, "--requests", "4", "--concurrency", "1", "--max-error-rate", "0.5")

    assert code == 0, result
    assert result["result"]["errors"] == {"connection": 2}
    assert f"connection x2 (first: POST {fake.url}/v1/chat/completions failed: " in result["checks"][2]["detail"]


def test_error_rate_within_the_threshold_passes(capsys):
    with FakeVllm(api_key=KEY, chat_status=500, fail_every=4) as fake:
        code, result = run(capsys, fake.url, "--requests", "8", "--max-error-rate", "0.25")

    assert code == 0, result
    assert result["result"]["error_rate"] == 0.25


def test_nothing_answered_fails_whatever_the_threshold(capsys):
    with FakeVllm(api_key=KEY, chat_status=503) as fake:
        code, result = run(capsys, fake.url, "--requests", "3", "--max-error-rate", "1")

    assert code == 1
    assert [(c["name"], c["status"]) for c in result["checks"]] == [
        ("api key", "pass"), ("health", "pass"), ("requests", "fail")]
    assert result["checks"][-1]["detail"].startswith("nothing answered: 3 sent in ")
    assert (result["result"]["ttft_seconds"], result["result"]["latency_seconds"]) == (None, None)


def test_json_shape(capsys):
    with FakeVllm(api_key=KEY) as fake:
        code, result = run(capsys, fake.url, "--requests", "2", "--concurrency", "2", "--duration", "60")

    assert code == 0
    assert list(result) == ["ok", "url", "model", "settings", "result", "checks"]
    assert (result["ok"], result["url"], result["model"]) == (True, fake.url, "mistral")
    assert result["settings"] == {"concurrency": 2, "requests": 2, "duration_seconds": 60.0, "max_tokens": 100,
                                  "max_error_rate": 0.01}
    assert set(result["result"]) == {
        "stopped_by", "sent", "answered", "failed", "error_rate", "errors", "wall_seconds", "ttft_seconds",
        "latency_seconds", "requests_per_second", "output_tokens", "output_tokens_per_second"}
    assert set(result["result"]["ttft_seconds"]) == set(result["result"]["latency_seconds"]) == {"p50", "p90", "p99"}
    assert [c["name"] for c in result["checks"]] == [
        "api key", "health", "requests", "time to first token", "latency", "throughput"]


def test_human_report(capsys):
    with FakeVllm(api_key=KEY) as fake:
        code = load.main(["--url", fake.url, "--requests", "3"])

    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith(f"Load test of model 'mistral' (stack 'dev') at {fake.url}: up to 3 requests or 300s, "
                          "4 at a time, max_tokens 100:\n")
    assert "  PASS  requests: 3 sent in " in out and "(stopped by --requests 3): 3 answered, 0 failed (0.0%;" in out
    assert re.search(r"\n  PASS  time to first token: p50 \d+\.\d{3}s, p90 \d+\.\d{3}s, p99 \d+\.\d{3}s\n", out)
    assert re.search(r"\n  PASS  latency: p50 \d+\.\d{3}s, p90 \d+\.\d{3}s, p99 \d+\.\d{3}s\n", out)
    assert "  PASS  throughput: " in out and f"output tokens/s ({3 * len(CHAT_PIECES)} tokens)" in out
    assert "sending up to 3 requests, 4 at a time, for at most 300s ..." in err
    assert KEY not in out + err


def test_a_server_not_ready_is_not_loaded(monkeypatch, capsys):
    monkeypatch.setattr(endpoint, "HEALTH_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(endpoint, "POLL_SECONDS", 0.1)

    with FakeVllm(api_key=KEY, unhealthy_for=30) as fake:
        code, result = run(capsys, fake.url, "--requests", "5")

    assert code == 1
    assert result["result"] is None
    assert result["checks"][-1]["name"] == "health"
    assert "is the model ready? `python -m tools.smoke --stack dev` waits for it" in result["checks"][-1]["detail"]
    assert chats(fake) == []


def test_through_a_port_forward(tmp_path, monkeypatch, capsys):
    with FakeVllm(api_key=KEY) as fake:
        fake_bin.install(tmp_path, monkeypatch, fake.port)
        code = load.main(["--requests", "2", "--json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["url"] == f"http://127.0.0.1:{fake.port}"
    assert [c["name"] for c in result["checks"]][:3] == ["api key", "port-forward", "health"]
    assert [call["args"][2] for call in kubectl_calls(tmp_path)] == ["port-forward"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--concurrency", "33"], "argument --concurrency: 33 is over the cap of 32"),
    (["--requests", "2001"], "argument --requests: 2001 is over the cap of 2000"),
    (["--duration", "1801"], "argument --duration: 1801s is over the cap of 1800s"),
    (["--max-tokens", "1025"], "argument --max-tokens: 1025 is over the cap of 1024"),
    (["--max-error-rate", "1.5"], "argument --max-error-rate: 1.5 is over the cap of 1"),
    (["--concurrency", "0"], "argument --concurrency: 0 is below the minimum of 1"),
    (["--duration", "0"], "argument --duration: 0s is below the minimum of 0.1s"),
    (["--max-error-rate", "-0.1"], "argument --max-error-rate: -0.1 is below the minimum of 0"),
    (["--requests", "2.5"], "argument --requests: '2.5' is not a whole number"),
    (["--url", "localhost:8080"], "--url localhost:8080: give a full URL such as http://localhost:8080"),
    (["--url", "http://localhost:8080", "--kubeconfig", "k"], "--url and --kubeconfig exclude each other"),
])
def test_flags_out_of_bounds_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load.main(argv)

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_caps_themselves_are_allowed(capsys):
    args = load.parse_args(["--concurrency", "32", "--requests", "2000", "--duration", "1800", "--max-tokens", "1024",
                            "--max-error-rate", "1"])
    assert (args.concurrency, args.requests, args.duration, args.max_tokens, args.max_error_rate) == (
        32, 2000, 1800.0, 1024, 1.0)


def test_unknown_model_is_a_usage_error(capsys):
    assert load.main(["--model", "llama", "--url", "http://127.0.0.1:1"]) == 2
    assert "--model 'llama' is not in vllm.models of stack 'dev'" in capsys.readouterr().err


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "tools.load", "--help"], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=30)

    assert result.returncode == 0
    assert "usage: python -m tools.load" in result.stdout and "--concurrency N" in result.stdout
