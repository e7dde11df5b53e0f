"""A fake `kubectl` for the tools' tests, run through a wrapper named `kubectl` on PATH.

Every call is recorded (its arguments, the kubeconfig it was given, its pid) as one JSON line in
$FAKE_KUBECTL_LOG. Like kubectl with a kubeconfig for the dev stack's cluster, it answers the calls the
tools make for the model `mistral` in namespace `vllm`, and fails anything else:
  - `port-forward -n vllm service/mistral :8080` prints "Forwarding from 127.0.0.1:<port> -> 8080" for the
    fake vLLM server listening on $FAKE_VLLM_PORT and runs until terminated. The first
    $FAKE_KUBECTL_FAILURES port-forwards fail with $FAKE_KUBECTL_ERROR (default: what kubectl says while
    the pod is Pending).
  - `get pods -n vllm -l app.kubernetes.io/instance=mistral -o json` lists the pods of $FAKE_PODS
    (JSON [{"name", "node", "phase"}]; default: one Running pod on NODE).
  - `get nodes NAME... -o json` answers the nodes of $FAKE_NODES (JSON {name: labels}; default: NODE, a
    trn1.2xlarge of the NodePool `neuron`): the Node for one name, a List for several, as kubectl does.
  - With $FAKE_KUBECTL_GET_ERROR set, the `get` calls print it and fail.
"""

import json
import os
import sys
import time

NODE = "ip-10-0-3-17.us-west-2.compute.internal"
TRAINIUM_LABELS = {"node.kubernetes.io/instance-type": "trn1.2xlarge", "karpenter.sh/nodepool": "neuron",
                   "karpenter.sh/capacity-type": "on-demand", "karpenter.k8s.aws/instance-family": "trn1"}
PORT_FORWARD = ["port-forward", "-n", "vllm", "service/mistral", ":8080"]
GET_PODS = ["get", "pods", "-n", "vllm", "-l", "app.kubernetes.io/instance=mistral", "-o", "json"]
PENDING = "error: unable to forward port because pod is not running. Current status=Pending"


def main() -> int:
    args = sys.argv[1:]
    kubeconfig = args[1] if args[:1] == ["--kubeconfig"] and len(args) > 1 else None
    content = open(kubeconfig).read() if kubeconfig and os.path.isfile(kubeconfig) else None
    log_path = os.environ["FAKE_KUBECTL_LOG"]
    with open(log_path, "a") as log:
        log.write(json.dumps({"args": args, "kubeconfig": content, "pid": os.getpid()}) + "\n")
    command = args[2:]
    if command and command[0] == "--request-timeout=15s":
        command = command[1:]
    if content is None:
        return fail(f"fake kubectl: unexpected call {args}")
    if command == PORT_FORWARD:
        return port_forward(log_path)
    if command[:1] == ["get"] and os.environ.get("FAKE_KUBECTL_GET_ERROR"):
        return fail(os.environ["FAKE_KUBECTL_GET_ERROR"])
    if command == GET_PODS:
        pods = json.loads(os.environ.get("FAKE_PODS", json.dumps([{"name": "mistral-7c9d8b6f5-x2x4z", "node": NODE,
                                                                     "phase": "Running"}])))
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod_object(pod) for pod in pods]}))
        return 0
    if command[:2] == ["get", "nodes"] and command[-2:] == ["-o", "json"] and len(command) > 4:
        return get_nodes(command[2:-2])
    return fail(f"fake kubectl: unexpected call {args}")


def port_forward(log_path: str) -> int:
    with open(log_path) as log:
        calls = sum("port-forward" in json.loads(line)["args"] for line in log)
    if calls <= int(os.environ.get("FAKE_KUBECTL_FAILURES", "0")):
        return fail(os.environ.get("FAKE_KUBECTL_ERROR", PENDING))
    port = os.environ["FAKE_VLLM_PORT"]
    print(f"Forwarding from 127.0.0.1:{port} -> 8080", flush=True)
    print(f"Forwarding from [::1]:{port} -> 8080", flush=True)
    while True:
        time.sleep(60)


def get_nodes(names: list[str]) -> int:
    nodes = json.loads(os.environ.get("FAKE_NODES", json.dumps({NODE: TRAINIUM_LABELS})))
    missing = [name for name in names if name not in nodes]
    if missing:
        return fail(f'Error from server (NotFound): nodes "{missing[0]}" not found')
    objects = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": nodes[name]}}
               for name in names]
    print(json.dumps(objects[0] if len(objects) == 1 else {"apiVersion": "v1", "kind": "List", "items": objects}))
    return 0


def pod_object(pod: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod["name"], "namespace": "vllm",
                         "labels": {"app.kubernetes.io/instance": "mistral"}},
            "spec": {"nodeName": pod["node"]} if pod.get("node") else {},
            "status": {"phase": pod["phase"]}}


def fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
