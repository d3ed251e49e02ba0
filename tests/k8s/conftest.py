"""Fixtures for tests against a real Kubernetes control plane (etcd + kube-apiserver)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import install

from switchyard.natsserver import NatsServer
from switchyard.testing import keda as keda_testing
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    # Without Go the binaries cannot be built; anything else failing is a real error.
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build kube-apiserver/etcd (tests/controlplane/build.sh)")
    # The aggregation layer costs one more cert and is idle until an APIService is registered.
    with ControlPlane(aggregation=True) as cp:
        cp.apply_keda_crds()
        yield cp


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> ControlPlane:
    """`kubectl apply -k manifests/` once per module: CRDs, namespace, RBAC."""
    install(control_plane)
    return control_plane


@pytest.fixture
def nats() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, so tests sharing the session's API server stay independent."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"  # readable, yet unique across parametrized cases
    control_plane.kubectl("create", "namespace", name, check=True)
    return name


@pytest.fixture(scope="session")
def keda_bin() -> Path:
    """KEDA operator, metrics adapter and kube-controller-manager (tests/controlplane/build-keda.sh)."""
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build KEDA (tests/controlplane/build-keda.sh)")
    try:
        return keda_testing.ensure_built()
    except keda_testing.KedaBuildError as exc:
        pytest.skip(f"the Go build of KEDA failed: {exc}")


@pytest.fixture(scope="session")
def keda(control_plane: ControlPlane, keda_bin: Path) -> Iterator[KedaOperator]:
    """The real KEDA operator, watching every namespace of the session's API server."""
    with KedaOperator(control_plane, keda_bin) as operator:
        yield operator
