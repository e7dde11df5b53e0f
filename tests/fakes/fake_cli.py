"""Fake `pulumi`, `aws` and venv `python` for the `make deploy`/`make destroy` tests (tools/stack.sh).

Run through wrappers on PATH (or at venv/bin/python) as `fake_cli.py <cli> <args...>`. Each call appends one
JSON line to $FAKE_CLI_LOG: {"cli", "args", "passphrase", "passphrase_file"}, where "passphrase" is "expected"
when PULUMI_CONFIG_PASSPHRASE equals $FAKE_EXPECTED_PASSPHRASE, "other" when it is set to anything else, and
"unset"; the value itself is never written.

A call answers as the real command does when it succeeds, unless $FAKE_RESULTS (JSON) has an entry for its key,
the command up to its first flag ("pulumi whoami", "pulumi stack select dev", "aws sts get-caller-identity")
or "python -m <module>": {"exit": N, "out": "...", "err": "..."}. `python -m <module>` (preflight, render, venv,
pip) is only logged and answered; other `python` calls (`-c`) run the real interpreter.
"""

import json
import os
import sys

DEFAULT_OUTPUT = {
    "pulumi whoami": "User: tester\nOrganizations: \nBackend URL: {backend}\nToken type: personal\n",
    "pulumi login": "Logged in to fakehost as tester (file://~)\n",
    "aws sts get-caller-identity": "arn:aws:sts::123456789012:assumed-role/Admin/tester\n",
    "python -m tools.preflight": "Preflight for stack 'dev' in us-west-2:\nOK (0 warning(s))\n",
}


def key(cli: str, args: list[str]) -> str:
    if cli == "python" and args[:1] == ["-m"]:
        return f"python -m {args[1]}"
    words = [cli]
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(words)


def passphrase_status() -> str:
    if "PULUMI_CONFIG_PASSPHRASE" not in os.environ:
        return "unset"
    expected = os.environ["PULUMI_CONFIG_PASSPHRASE"] == os.environ.get("FAKE_EXPECTED_PASSPHRASE")
    return "expected" if expected else "other"


def main() -> int:
    cli, args = sys.argv[1], sys.argv[2:]
    if cli == "python" and args[:1] != ["-m"]:
        os.execv(sys.executable, [sys.executable, *args])
    with open(os.environ["FAKE_CLI_LOG"], "a") as log:
        log.write(json.dumps({"cli": cli, "args": args, "passphrase": passphrase_status(),
                              "passphrase_file": "PULUMI_CONFIG_PASSPHRASE_FILE" in os.environ}) + "\n")
    result = json.loads(os.environ.get("FAKE_RESULTS", "{}")).get(key(cli, args), {})
    success = DEFAULT_OUTPUT.get(key(cli, args), "").format(backend=os.environ.get("FAKE_BACKEND_URL", "file://~"))
    sys.stdout.write(result.get("out", success if result.get("exit", 0) == 0 else ""))
    sys.stderr.write(result.get("err", ""))
    return result.get("exit", 0)


if __name__ == "__main__":
    sys.exit(main())
