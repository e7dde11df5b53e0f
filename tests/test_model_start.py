"""components/model_server/start.py, run for real: the first command of the vllm container checks the
pre-compiled artifact against the vLLM command line, then execs the command (a fake `vllm` on PATH here).

The artifact is laid out as NxD Inference 0.6 (Neuron SDK 2.26) saves it: neuron_config.json written by
InferenceConfig.save (json.dumps(..., indent=2, sort_keys=True), the NeuronConfig nested under "neuron_config"),
model.pt, and weights/tp<rank>_sharded_checkpoint.safetensors for a pre-sharded checkpoint.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

START = Path(__file__).parent.parent / "components" / "model_server" / "start.py"
SETTING = "vllm.models[0] (mistral)"
MODEL_DIR = "/models/mistral"
# The lead's command shape (components/vllm.py), with the settings' defaults.
SERVE = ["vllm", "serve", MODEL_DIR, "--served-model-name", "mistral", "--tokenizer", MODEL_DIR, "--device", "neuron",
         "--tensor-parallel-size", "2", "--max-num-seqs", "1", "--max-model-len", "2048", "--dtype", "bfloat16",
         "--host", "0.0.0.0", "--port", "8080"]

FAKE_VLLM = """#!/bin/sh
# Records its PID and argv, then waits for SIGTERM like a server would.
trap 'echo "SIGTERM" >> "$FAKE_VLLM_RECORD"; exit 0' TERM
printf '%s\\n' "$$" "$@" > "$FAKE_VLLM_RECORD.tmp" && mv "$FAKE_VLLM_RECORD.tmp" "$FAKE_VLLM_RECORD"
i=0
while [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
exit 3
"""


def nxdi_neuron_config(tp_degree: int = 2, batch_size: int = 1, seq_len: int = 2048, **overrides) -> dict:
    """A neuron_config.json as NxDI 0.6's InferenceConfig.save writes it for a vLLM-style Mistral compile:
    the HF config's attributes at the top, every NeuronConfig attribute under "neuron_config" (to_dict)."""
    neuron = {
        "allow_input_truncation": False, "async_mode": False, "attention_dp_degree": 1, "attention_dtype": None,
        "attn_cls": "NeuronLlamaAttention", "batch_size": batch_size, "bucket_n_active_tokens": False,
        "buckets": [seq_len], "cast_type": "config", "cc_pipeline_tiling_factor": 2, "context_encoding_buckets": None,
        "cp_degree": 1, "ctx_batch_size": 1, "enable_bucketing": True, "enable_fused_speculation": False,
        "ep_degree": 1, "flash_decoding_enabled": False, "fused_qkv": False, "is_block_kv_layout": False,
        "is_chunked_prefill": False, "is_continuous_batching": True, "is_prefix_caching": False,
        "k_cache_transposed": False, "kv_cache_batch_size": batch_size, "kv_cache_padding_size": 0,
        "kv_cache_quant": False, "kv_cache_tiling": False, "local_ranks_size": tp_degree, "logical_nc_config": 1,
        "lora_config": None, "max_batch_size": batch_size, "max_context_length": seq_len, "max_length": seq_len,
        "max_new_tokens": None, "n_active_tokens": seq_len, "n_positions": seq_len,
        "on_device_sampling_config": {"deterministic": False, "do_sample": False, "dynamic": True,
                                      "global_topk": 256, "on_device_sampling_config": True, "top_k": 1,
                                      "top_k_kernel_enabled": False, "top_p": 1.0, "temperature": 1.0},
        "output_logits": False, "padding_side": "right", "pp_degree": 1, "quantized": False,
        "save_sharded_checkpoint": True, "seq_len": seq_len, "sequence_parallel_enabled": False,
        "skip_sharding": False, "start_rank_id": 0, "tkg_batch_size": batch_size, "token_generation_buckets": None,
        "torch_dtype": "bfloat16", "tp_degree": tp_degree, "vocab_parallel": False, "world_size": tp_degree,
    }
    neuron.update(overrides)
    return {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.3", "architectures": ["MistralForCausalLM"],
        "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "fused_spec_config": None, "head_dim": 128,
        "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
        "max_position_embeddings": 32768, "metadata": None, "model_type": "mistral", "neuron_config": neuron,
        "num_attention_heads": 32, "num_cores_per_group": 1, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.51.3", "use_cache": True, "vocab_size": 32768,
    }


def write_artifact(folder: Path, config: dict | None, *, model: bool = True, shards: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        # Exactly InferenceConfig.to_json_file: to_json_string() plus a newline.
        (folder / "neuron_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if model:
        (folder / "model.pt").write_bytes(b"PK\x03\x04 torchscript archive")
    count = config["neuron_config"]["tp_degree"] if shards is None and config else (shards or 0)
    for rank in range(count):
        (folder / "weights").mkdir(exist_ok=True)
        # A safetensors file's shape: an 8-byte header length, then the JSON header.
        (folder / "weights" / f"tp{rank}_sharded_checkpoint.safetensors").write_bytes(b"\x02" + b"\x00" * 7 + b"{}")
    return folder


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(FAKE_VLLM)
    (bin_dir / "vllm").chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_VLLM_RECORD": str(tmp_path / "vllm.rec"),
            "NEURON_COMPILED_ARTIFACTS": str(tmp_path / "models" / "mistral")}


def serve_with(flag: str, value: str, spelling: str | None = None) -> list[str]:
    """The command with one flag's value changed (optionally spelled another way vLLM accepts)."""
    at = SERVE.index(flag)
    return [*SERVE[:at], spelling or flag, value, *SERVE[at + 2:]]


def start(env: dict, command: list[str] = SERVE, setting: str = SETTING) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(START), setting, "--", *command], env=env, capture_output=True,
                          text=True, timeout=30)


def refused(result: subprocess.CompletedProcess, env: dict) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert not Path(env["FAKE_VLLM_RECORD"]).exists(), "vLLM must not start"
    return result.stderr


def test_a_matching_artifact_execs_vllm_in_place_with_its_arguments(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config())
    process = subprocess.Popen([sys.executable, str(START), SETTING, "--", *SERVE], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = Path(env["FAKE_VLLM_RECORD"])
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid, *argv = record.read_text().splitlines()
    # exec, not fork: vLLM is the same process, so the kubelet's SIGTERM reaches it.
    assert int(pid) == process.pid
    assert argv == SERVE[1:]
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert record.read_text().splitlines()[-1] == "SIGTERM"
    assert "matches the command" in out and SETTING in out


def test_tensor_parallel_size_must_equal_the_compiled_tp_degree(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(tp_degree=8))
    message = refused(start(env), env)
    assert f"{SETTING}.tensorParallelSize is 2 but the artifact was compiled for tp_degree 8" in message


def test_max_num_seqs_above_the_compiled_batch_size_is_refused(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(batch_size=1))
    message = refused(start(env, serve_with("--max-num-seqs", "4")), env)
    assert f"{SETTING}.maxNumSeqs is 4 but the artifact was compiled for batch_size 1" in message


def test_a_smaller_kv_cache_batch_binds_even_when_batch_size_is_larger(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(batch_size=4, kv_cache_batch_size=2))
    command = [*SERVE[:SERVE.index("--max-num-seqs")], "--max-num-seqs=4", *SERVE[SERVE.index("--max-num-seqs") + 2:]]
    message = refused(start(env, command), env)
    assert f"{SETTING}.maxNumSeqs is 4 but the artifact was compiled for kv_cache_batch_size 2" in message


def test_fewer_sequences_than_the_compiled_batch_start(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(batch_size=4))
    process = subprocess.Popen([sys.executable, str(START), SETTING, "--", *SERVE], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = Path(env["FAKE_VLLM_RECORD"])
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=10)
    assert record.read_text().splitlines()[0] == str(process.pid)


def test_max_model_len_above_the_compiled_sequence_length_is_refused(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(seq_len=2048))
    message = refused(start(env, serve_with("--max-model-len", "4096", spelling="--max_model_len")), env)
    assert f"{SETTING}.maxModelLen is 4096 but the artifact was compiled for seq_len 2048" in message


def test_a_shorter_compiled_prompt_length_binds(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(seq_len=2048, max_context_length=1024))
    message = refused(start(env), env)
    assert f"{SETTING}.maxModelLen is 2048 but the artifact was compiled for max_context_length 1024" in message


def test_every_mismatch_is_reported_at_once(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(tp_degree=2, batch_size=1, seq_len=1024))
    command = ["vllm", "serve", MODEL_DIR, "-tp", "4", "--max-num-seqs", "8", "--max-model-len", "2048"]
    lines = refused(start(env, command), env).strip().splitlines()
    assert len(lines) == 3 and all(SETTING in line for line in lines)


def test_a_missing_neuron_config_is_refused_before_a_recompile(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), None)
    message = refused(start(env), env)
    assert f"{SETTING}: no compiled artifacts in {env['NEURON_COMPILED_ARTIFACTS']} (no neuron_config.json)" in message
    assert "~15-minute recompile that cannot succeed here" in message


def test_a_missing_compiled_model_is_refused(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(), model=False)
    message = refused(start(env), env)
    assert "no compiled artifacts in" in message and "model.pt missing" in message and SETTING in message


def test_a_missing_weight_shard_is_refused(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config(tp_degree=2), shards=1)
    message = refused(start(env), env)
    assert "weights/tp1_sharded_checkpoint.safetensors missing" in message


def test_a_config_not_written_by_nxdi_is_refused(env):
    folder = write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), None)
    (folder / "neuron_config.json").write_text(json.dumps({"tp_degree": 2, "batch_size": 1, "seq_len": 2048}))
    message = refused(start(env), env)
    assert "no neuron_config section" in message


def test_a_command_without_the_checked_flags_is_a_usage_error(env):
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config())
    result = start(env, ["vllm", "serve", MODEL_DIR, "--tensor-parallel-size", "2"])
    assert result.returncode == 2 and "--max-num-seqs, --max-model-len" in result.stderr
    assert start(env, []).returncode == 2
    assert not Path(env["FAKE_VLLM_RECORD"]).exists()


def test_without_neuron_compiled_artifacts_vllm_would_compile(env):
    env = {k: v for k, v in env.items() if k != "NEURON_COMPILED_ARTIFACTS"}
    message = refused(start(env), env)
    assert "NEURON_COMPILED_ARTIFACTS is not set" in message


def test_the_api_key_is_checked_before_vllm_loads_anything(env, tmp_path):
    """With the middleware on the command line, a missing or empty key stops the pod in seconds, not after a
    15-minute load (vLLM builds the middleware only on its first request)."""
    write_artifact(Path(env["NEURON_COMPILED_ARTIFACTS"]), nxdi_neuron_config())
    command = [*SERVE, "--middleware", "api_key_auth.ApiKeyAuth"]
    key_file = tmp_path / "api-key"
    key_file.write_text("")
    message = refused(start({**env, "VLLM_API_KEY_FILE": str(key_file)}, command), env)
    assert f"{SETTING}: VLLM_API_KEY_FILE ({key_file}) is missing or empty" in message
    key_file.write_text("a-good-key")
    process = subprocess.Popen([sys.executable, str(START), SETTING, "--", *command],
                               env={**env, "VLLM_API_KEY_FILE": str(key_file)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    record = Path(env["FAKE_VLLM_RECORD"])
    deadline = time.monotonic() + 10
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.exists(), process.stderr.read() if process.poll() is not None else "vllm did not start"
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=10)
