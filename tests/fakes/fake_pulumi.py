"""A fake `pulumi` for the smoke tool's tests, run through a wrapper named `pulumi` on PATH.

`pulumi stack output kubeconfig --show-secrets --stack dev` prints $FAKE_KUBECONFIG; anything else fails
the way the real CLI does for an unknown stack.
"""

import os
import sys

EXPECTED = ["stack", "output", "kubeconfig", "--show-secrets", "--stack", "dev"]


def main() -> int:
    if sys.argv[1:] != EXPECTED:
        print(f"error: no stack named '{sys.argv[-1]}' found (fake pulumi called with {sys.argv[1:]})", file=sys.stderr)
        return 255
    print(os.environ["FAKE_KUBECONFIG"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
