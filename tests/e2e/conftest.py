"""A kind cluster with Switchyard installed, for end-to-end tests.

Runs only where `docker`, `kind` and `kubectl` are on PATH and `docker info` answers;
everywhere else the tests skip and say why. Knobs (environment):

- SWITCHYARD_E2E_CLUSTER: cluster name (default switchyard-e2e). An existing cluster of
  that name is reused and left running; one the tests create is deleted afterwards...
- SWITCHYARD_E2E_KEEP=1: ...unless this is set.
- SWITCHYARD_E2E_KIND_CONFIG: kind config (default kind-config.yaml; it maps host ports
  8080 and 9090, so those must be free).
- SWITCHYARD_E2E_SKIP_BUILD=1: do not `docker build` the image (it must exist locally).
- SWITCHYARD_E2E_INSTALL: `kustomize` (default: manifests/ and manifests/nats/) or `helm`
  (charts/switchyard with nats.enabled=true, with the helm of tests/controlplane/build-tool.sh).
- SWITCHYARD_E2E_KEDA_CRDS: file, directory or URL of the KEDA CRDs (default: the release
  matching tests/controlplane/build.sh). The operator writes ScaledObjects; KEDA itself
  need not run for these tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/switchyard-dev/switchyard:0.1.0"
CRDS = [f"crd/{plural}.switchyard.dev" for plural in ("gateways", "upstreams", "pools", "planners")]


def _run(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def require_kind() -> None:
    """Skip (with the reason) unless a kind cluster can be made here."""
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"kind e2e needs {', '.join(missing)} on PATH")
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("kind e2e needs a Docker engine: docker info timed out")
    if info.returncode != 0:
        error = (info.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"kind e2e needs a Docker engine: docker info failed: {error}")


def keda_crds() -> str:
    if os.environ.get("SWITCHYARD_E2E_KEDA_CRDS"):
        return os.environ["SWITCHYARD_E2E_KEDA_CRDS"]
    # The version build.sh fetches the CRDs of (it reads it from the KEDA wrapper module).
    found = re.search(r"^\s*(?:require\s+)?github\.com/kedacore/keda/v2 v([^\s]+)",
                      (ROOT / "tests/controlplane/keda/go.mod").read_text(), re.M)
    assert found, "tests/controlplane/keda/go.mod does not require github.com/kedacore/keda/v2"
    version = found.group(1)
    return f"https://github.com/kedacore/keda/releases/download/v{version}/keda-{version}-crds.yaml"


@dataclass
class Cluster:
    name: str
    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run("kubectl", f"--kubeconfig={self.kubeconfig}", *args, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def kind_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_kind()
    name = os.environ.get("SWITCHYARD_E2E_CLUSTER", "switchyard-e2e")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = name in _run("kind", "get", "clusters").stdout.split()
    if existing:
        kubeconfig.write_text(_run("kind", "get", "kubeconfig", "--name", name).stdout)
    else:
        config = os.environ.get("SWITCHYARD_E2E_KIND_CONFIG", str(ROOT / "kind-config.yaml"))
        _run("kind", "create", "cluster", "--name", name, "--config", config, "--kubeconfig", str(kubeconfig),
             "--wait", "180s")
    try:
        if not os.environ.get("SWITCHYARD_E2E_SKIP_BUILD"):
            _run("docker", "build", "-t", IMAGE, str(ROOT), timeout=1800)
        _run("kind", "load", "docker-image", IMAGE, "--name", name)
        yield Cluster(name, kubeconfig)
    finally:
        if not existing and not os.environ.get("SWITCHYARD_E2E_KEEP"):
            _run("kind", "delete", "cluster", "--name", name, check=False)


@pytest.fixture(scope="session")
def image() -> str:
    """The image the tests built and loaded into kind (gateways and rendered workers run it)."""
    return IMAGE


@pytest.fixture(scope="session")
def installed(kind_cluster: Cluster) -> Cluster:
    """The KEDA CRDs, then Switchyard and NATS (kustomize or helm: SWITCHYARD_E2E_INSTALL); the operator rolled out."""
    k = kind_cluster.kubectl
    k("apply", "--server-side", "-f", keda_crds())
    if os.environ.get("SWITCHYARD_E2E_INSTALL", "kustomize") == "helm":
        from switchyard.testing import helm

        k("create", "namespace", "switchyard-system")
        _run(str(helm.ensure_built() / "helm"), "install", "switchyard", str(ROOT / "charts/switchyard"),
             "--namespace", "switchyard-system", "--take-ownership", "--set", "nats.enabled=true",
             env=helm.env(kind_cluster.kubeconfig.parent / "helm-home", kind_cluster.kubeconfig))
        k("wait", "--for=condition=Established", "--timeout=60s", *CRDS)
    else:
        k("apply", "--server-side", "-k", str(ROOT / "manifests"))
        k("wait", "--for=condition=Established", "--timeout=60s", *CRDS)
        k("apply", "--server-side", "-k", str(ROOT / "manifests/nats"))
    k("rollout", "status", "deployment/switchyard-operator", "-n", "switchyard-system", "--timeout=300s")
    return kind_cluster
