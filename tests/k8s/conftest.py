"""Fixtures for tests against a real Kubernetes control plane (etcd + kube-apiserver)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from switchyard.testing.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    # Without Go the binaries cannot be built; anything else failing is a real error.
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build kube-apiserver/etcd (tests/controlplane/build.sh)")
    with ControlPlane() as cp:
        cp.apply_keda_crds()
        yield cp


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, so tests sharing the session's API server stay independent."""
    slug = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"  # readable, yet unique across parametrized cases
    control_plane.kubectl("create", "namespace", name, check=True)
    return name
