"""The AWS CLI v2 the model pod's copy script is tested with (the init container runs v2)."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache


@cache
def aws_cli_v2() -> str:
    """$AWS_CLI_V2, Debian's (/usr/bin/aws), or the first `aws` on PATH that is v2: an older v1 from PyPI may
    come first on PATH."""
    for candidate in (os.environ.get("AWS_CLI_V2"), "/usr/bin/aws", shutil.which("aws")):
        if candidate and os.access(candidate, os.X_OK):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
            if (version.stdout + version.stderr).startswith("aws-cli/2."):
                return candidate
    raise RuntimeError("no AWS CLI v2 found: install Debian's awscli (sudo apt-get install awscli; `make test` "
                       "checks for it) or point AWS_CLI_V2 at one")
