"""The real Helm CLI for tests, built from its Go module (switchyard/testing/gotools.py).

    helm = ensure_built() / "helm"
"""

from __future__ import annotations

import os
from pathlib import Path

from .gotools import GoToolBuildError as HelmBuildError
from .gotools import ensure_built as _ensure_built

__all__ = ["HelmBuildError", "ensure_built", "env"]


def ensure_built() -> Path:
    """The dir that holds `helm` (tests/controlplane/build-tool.sh helm, a no-op once cached)."""
    return _ensure_built("helm")


def env(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    """Environment for `helm`: its config, cache and data under `home`, not the user's."""
    out = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_DATA_HOME": str(home / "data")}
    if kubeconfig is not None:
        out["KUBECONFIG"] = str(kubeconfig)
    return out
