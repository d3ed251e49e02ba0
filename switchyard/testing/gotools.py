"""Go command-line tools the tests run (helm, actionlint), built from their Go modules.

tests/controlplane/build-tool.sh builds each from its wrapper module (tests/controlplane/
<tool>/go.mod, go.sum committed) into ~/.cache/switchyard/<tool>, once per version.

    helm = ensure_built("helm") / "helm"
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .controlplane import ControlPlaneError

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tests/controlplane/build-tool.sh"


class GoToolBuildError(ControlPlaneError):
    """build-tool.sh failed: the Go toolchain or the module proxy could not build the tool."""


def ensure_built(tool: str) -> Path:
    """Run build-tool.sh (a no-op once cached) and return the dir that holds the tool."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT), tool], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise GoToolBuildError(f"{BUILD_SCRIPT} {tool} failed with exit code {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])
