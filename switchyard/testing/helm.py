"""The real Helm CLI for tests, built from its Go module by tests/controlplane/build-helm.sh.

    helm = ensure_built() / "helm"

The build is cached per version under ~/.cache/switchyard/helm, like the control plane's.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .controlplane import ControlPlaneError

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tests/controlplane/build-helm.sh"


class HelmBuildError(ControlPlaneError):
    """build-helm.sh failed: the Go toolchain or the module proxy could not build Helm."""


def ensure_built() -> Path:
    """Run build-helm.sh (a no-op once cached) and return the dir that holds `helm`."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise HelmBuildError(f"{BUILD_SCRIPT} failed with exit code {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])


def env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """Environment for `helm`: its config, cache and data under `home`, not the user's."""
    out = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_DATA_HOME": str(home / "data")}
    if kubeconfig is not None:
        out["KUBECONFIG"] = str(kubeconfig)
    return out
