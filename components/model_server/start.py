#!/usr/bin/env python3
"""Checks the pre-compiled Neuron artifact against the vLLM command line, then becomes that command.

    python3 /etc/model-server/start.py '<setting path>' -- vllm serve <model dir> ... \
        --tensor-parallel-size N --max-num-seqs N --max-model-len N ...

The first command of the `vllm` container (standard library only). With NEURON_COMPILED_ARTIFACTS set, vLLM's
Neuron loader builds the model from the artifact's own neuron_config.json and, if loading fails
(FileNotFoundError or ValueError), recompiles into the same directory: about 15 minutes for a 7B model, and it
cannot succeed here (pre-sharded weights only, no Hub access, the pod's memory). A command that asks for more
than the artifact was compiled for fails later, at load or on the first long or concurrent request. So this
refuses to start (exit 1, one line per problem, each naming the setting) when:
  - neuron_config.json or the compiled model (model.pt, and weights/tp<rank>_sharded_checkpoint.safetensors
    when the artifact is pre-sharded) is missing;
  - --tensor-parallel-size differs from neuron_config.tp_degree;
  - --max-num-seqs exceeds the compiled batch: neuron_config.batch_size, and tkg_batch_size /
    kv_cache_batch_size when set apart from it (the KV cache has kv_cache_batch_size lines; vLLM gives each
    running sequence one);
  - --max-model-len exceeds the compiled length: neuron_config.seq_len, and max_length (the KV cache's length)
    / max_context_length (the longest prompt) when set apart from it.
It also refuses when the command loads the API key middleware (`--middleware api_key_auth.ApiKeyAuth`) and the
key is missing or unusable: vLLM builds middleware only on its first ASGI call, and uvicorn's lifespan
`auto` swallows the error, so the server would load the model and then answer 500 to everything.
Otherwise it replaces itself with the command (os.execvp), so vLLM keeps this process's PID and gets SIGTERM.
Exit 2: the command line is not as above.

Sources (aws-neuron/neuronx-distributed-inference v0.6.10598 = Neuron SDK 2.26.0, the SDK of the default image):
  src/neuronx_distributed_inference/models/config.py: CONFIG_FILE = "neuron_config.json"; InferenceConfig.save
    writes to_json_string(): json.dumps(to_dict(self), indent=2, sort_keys=True), every attribute, with the
    NeuronConfig nested under "neuron_config"; NeuronConfig.__init__ defaults tkg_batch_size, max_batch_size and
    kv_cache_batch_size to batch_size, and max_context_length and max_length to seq_len.
  src/neuronx_distributed_inference/models/application_base.py: compile() saves the config, then
    torch.jit.save(..., "model.pt") (COMPILED_MODEL_FILE_NAME), then weights/tp{rank}_sharded_checkpoint.safetensors
    if save_sharded_checkpoint; load_weights() reads ranks start_rank_id .. start_rank_id + local_ranks_size - 1.
  modules/kvcache/kv_cache_manager.py: the cache is (kv_cache_batch_size + kv_cache_padding_size) x max_length.
aws-neuron/upstreaming-to-vllm (main, vLLM 0.9 Neuron fork): vllm/model_executor/model_loader/neuronx_distributed.py
  builds the default config as tp_degree = tensor_parallel_size, batch_size = max_num_seqs,
  seq_len = max_context_length = max_model_len, and with NEURON_COMPILED_ARTIFACTS set loads that directory's
  own config, recompiling on FileNotFoundError/ValueError; vllm/worker/neuron_worker.py gives vLLM
  max_num_seqs + 1 KV blocks of max_model_len tokens.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

USAGE = ("usage: start.py <setting path> -- <vllm command> "
         "(with --tensor-parallel-size, --max-num-seqs, --max-model-len)")
API_KEY_MIDDLEWARE = "api_key_auth.ApiKeyAuth"
RECOMPILE = "refusing to start vLLM, which would try a ~15-minute recompile that cannot succeed here"
FLAGS = {  # vLLM flag -> (other spellings, the setting's key)
    "--tensor-parallel-size": (("-tp",), "tensorParallelSize"),
    "--max-num-seqs": ((), "maxNumSeqs"),
    "--max-model-len": ((), "maxModelLen"),
}


class Refusal(Exception):
    pass


def flag_values(command: list[str]) -> dict[str, str]:
    """The last value of each checked flag (argparse keeps the last); vLLM also accepts underscores."""
    found: dict[str, str] = {}
    index = 0
    while index < len(command):
        word = command[index]
        name, has_value, value = word.partition("=")
        name = "--" + name[2:].replace("_", "-") if name.startswith("--") else name
        for flag, (aliases, _) in FLAGS.items():
            if name == flag or name in aliases:
                if has_value:
                    found[flag] = value
                elif index + 1 < len(command):
                    found[flag] = command[index + 1]
                    index += 1
        index += 1
    return found


def check(setting: str, command: list[str], artifacts: str | None) -> list[str]:
    """The problems that would make vLLM recompile or fail; empty if it can start."""
    values = flag_values(command)
    missing = [flag for flag in FLAGS if flag not in values]
    if missing:
        raise ValueError(f"the vLLM command lacks {', '.join(missing)}")
    asked: dict[str, int] = {}
    for flag, value in values.items():
        try:
            asked[flag] = int(value)
        except ValueError:
            raise ValueError(f"{flag} {value!r} is not a whole number") from None

    if not artifacts:
        return [f"{setting}: NEURON_COMPILED_ARTIFACTS is not set; {RECOMPILE}"]
    folder = Path(artifacts)
    config_file = folder / "neuron_config.json"
    if not config_file.is_file():
        return [f"{setting}: no compiled artifacts in {folder} (no neuron_config.json); {RECOMPILE}"]
    try:
        document = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        return [f"{setting}: {config_file} is unreadable ({error}); {RECOMPILE}"]
    neuron = document.get("neuron_config") if isinstance(document, dict) else None
    if not isinstance(neuron, dict):
        return [f"{setting}: {config_file} has no neuron_config section (not saved by NxD Inference); {RECOMPILE}"]

    def number(key: str) -> int | None:
        value = neuron.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    problems = []
    tp_degree = number("tp_degree")
    if tp_degree is None:
        return [f"{setting}: {config_file} has no neuron_config.tp_degree (not saved by NxD Inference); {RECOMPILE}"]

    wanted = ["model.pt"]
    if neuron.get("save_sharded_checkpoint"):
        first = number("start_rank_id") or 0
        ranks = number("local_ranks_size") or number("world_size") or tp_degree
        wanted += [f"weights/tp{rank}_sharded_checkpoint.safetensors" for rank in range(first, first + ranks)]
    absent = [name for name in wanted if not (folder / name).is_file()]
    if absent:
        problems.append(f"{setting}: no compiled artifacts in {folder} ({', '.join(absent)} missing); {RECOMPILE}")

    def label(flag: str) -> str:
        return f"{setting}.{FLAGS[flag][1]} is {asked[flag]}"

    if asked["--tensor-parallel-size"] != tp_degree:
        problems.append(f"{label('--tensor-parallel-size')} but the artifact was compiled for tp_degree {tp_degree}")

    # The binding limits: the smallest of the keys that bound them (all default to the first one).
    batch_keys = ["batch_size", "tkg_batch_size"]
    if (number("attention_dp_degree") or 1) == 1:  # with attention DP the cache lines are per DP rank
        batch_keys.append("kv_cache_batch_size")
    for flag, keys, what in (("--max-num-seqs", batch_keys, "the batch"),
                             ("--max-model-len", ["seq_len", "max_length", "max_context_length"], "the length")):
        limits = [(number(key), order, key) for order, key in enumerate(keys) if number(key) is not None]
        if not limits:
            problems.append(f"{setting}: {config_file} does not say {what} it was compiled for ({keys[0]}); "
                            f"{RECOMPILE}")
            continue
        limit, _, key = min(limits)  # on a tie, the key that sets the others' defaults
        if asked[flag] > limit:
            problems.append(f"{label(flag)} but the artifact was compiled for {key} {limit}")
    return problems


def api_key_problems(setting: str, command: list[str]) -> list[str]:
    """The middleware's own key check, run now: api_key_auth.py sits beside this script (the same ConfigMap)."""
    if API_KEY_MIDDLEWARE not in command:
        return []
    import api_key_auth  # the script's directory is on sys.path
    try:
        api_key_auth.ApiKeyAuth(app=None)
    except RuntimeError as error:
        return [f"{setting}: {error} (vllm.requireApiKey is on: the key comes from the stack's Secret)"]
    return []


def main(argv: list[str]) -> int:
    if "--" not in argv[1:]:
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    split = argv.index("--", 1)
    setting, command = " ".join(argv[1:split]), argv[split + 1:]
    if not setting or not command:
        print(f"error: {USAGE}", file=sys.stderr)
        return 2
    artifacts = os.environ.get("NEURON_COMPILED_ARTIFACTS")
    try:
        problems = check(setting, command, artifacts)
    except ValueError as error:
        print(f"error: {setting}: {error}; {USAGE}", file=sys.stderr)
        return 2
    problems += api_key_problems(setting, command)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"{setting}: the artifact in {artifacts} matches the command; starting {' '.join(command[:3])} ...",
          flush=True)
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as error:
        print(f"error: {setting}: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
