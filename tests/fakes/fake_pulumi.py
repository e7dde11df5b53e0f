"""A fake `pulumi` for the tools' tests, run through a wrapper named `pulumi` on PATH.

`pulumi stack output kubeconfig --show-secrets --stack dev` prints $FAKE_KUBECONFIG, and
`pulumi stack output apiKey --show-secrets --stack dev` prints $FAKE_API_KEY, or fails as the real CLI does
for an output the stack does not have when that is unset. Anything else fails the way the real CLI does
for an unknown stack. Every call's arguments are logged as a JSON line to $FAKE_PULUMI_LOG.
"""

import json
import os
import sys

OUTPUTS = {"kubeconfig": "FAKE_KUBECONFIG", "apiKey": "FAKE_API_KEY"}


def main() -> int:
    args = sys.argv[1:]
    with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
        log.write(json.dumps(args) + "\n")
    name = args[2] if len(args) == 6 else None
    if name not in OUTPUTS or args != ["stack", "output", name, "--show-secrets", "--stack", "dev"]:
        print(f"error: no stack named '{args[-1]}' found (fake pulumi called with {args})", file=sys.stderr)
        return 255
    value = os.environ.get(OUTPUTS[name])
    if value is None:
        print(f"error: current stack does not have output property '{name}'", file=sys.stderr)
        return 255
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
