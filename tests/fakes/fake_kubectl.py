"""A fake `kubectl port-forward` for the smoke tool's tests, run through a wrapper named `kubectl` on PATH.

It checks its arguments like kubectl would be called for the dev stack's model, records them (and the
kubeconfig it was given, and its pid) as one JSON line in $FAKE_KUBECTL_LOG, then behaves like kubectl:
prints "Forwarding from 127.0.0.1:<port> -> 8080" for the fake vLLM server listening on $FAKE_VLLM_PORT
and runs until terminated. The first $FAKE_KUBECTL_FAILURES calls fail as they do while the pod is Pending.
"""

import json
import os
import sys
import time

EXPECTED = ["port-forward", "-n", "vllm", "service/mistral", ":8080"]


def main() -> int:
    args = sys.argv[1:]
    kubeconfig = args[1] if args[:1] == ["--kubeconfig"] and len(args) > 1 else None
    content = open(kubeconfig).read() if kubeconfig and os.path.isfile(kubeconfig) else None
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps({"args": args, "kubeconfig": content, "pid": os.getpid()}) + "\n")
        log.flush()
        calls = sum(1 for _ in open(os.environ["FAKE_KUBECTL_LOG"]))
    if content is None or args[2:] != EXPECTED:
        print(f"fake kubectl: unexpected call {args}", file=sys.stderr)
        return 1
    if calls <= int(os.environ.get("FAKE_KUBECTL_FAILURES", "0")):
        print("error: unable to forward port because pod is not running. Current status=Pending", file=sys.stderr)
        return 1
    port = os.environ["FAKE_VLLM_PORT"]
    print(f"Forwarding from 127.0.0.1:{port} -> 8080", flush=True)
    print(f"Forwarding from [::1]:{port} -> 8080", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
