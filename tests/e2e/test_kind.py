"""End to end on kind: the manifests install, the operator runs, the examples become Ready.

Skipped unless Docker and kind are available (see conftest.py).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CRDS = [f"crd/{plural}.switchyard.dev" for plural in ("gateways", "upstreams", "pools", "planners")]
Cluster = Any  # conftest.Cluster: .kubectl(*args, check=True)


def test_crds_are_established_and_categorised(installed: Cluster) -> None:
    for crd in CRDS:
        got = json.loads(installed.kubectl("get", crd, "-o", "json").stdout)
        assert got["spec"]["names"]["categories"] == ["switchyard"]
    # `kubectl get switchyard` resolves the category (no resources yet is fine).
    installed.kubectl("get", "switchyard", "-A")


def test_operator_is_available_and_elects_one_leader(installed: Cluster) -> None:
    deploy = json.loads(installed.kubectl("get", "deployment/switchyard-operator", "-n", "switchyard-system",
                                          "-o", "json").stdout)
    assert deploy["status"].get("availableReplicas") == 2
    deadline = time.monotonic() + 60
    holder = ""
    while not holder and time.monotonic() < deadline:
        got = installed.kubectl("get", "lease/switchyard-operator", "-n", "switchyard-system",
                                "-o", "jsonpath={.spec.holderIdentity}", check=False)
        holder = got.stdout.strip() if got.returncode == 0 else ""
        time.sleep(0 if holder else 1)
    assert holder.startswith("switchyard-operator-"), f"no leader after 60 s (holder {holder!r})"


def test_examples_become_ready(installed: Cluster) -> None:
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    k = installed.kubectl
    k("create", "namespace", ns)
    try:
        k("apply", "--server-side", "-n", ns, "-f", str(ROOT / "examples"))
        k("wait", "--for=condition=Ready", "upstream/echo", "-n", ns, "--timeout=180s")
        k("wait", "--for=condition=Ready", "gateway/main", "-n", ns, "--timeout=60s")
        # The operator made the default pool, and the ScaledObject for the Upstream.
        k("get", "pool/default", "-n", ns)
        k("get", "scaledobject/echo", "-n", ns)
        listed = k("get", "switchyard", "-n", ns, "-o", "name").stdout.split()
        kinds = {name.split("/")[0] for name in listed}
        assert kinds == {f"{p}.switchyard.dev" for p in ("gateway", "upstream", "pool", "planner")}, listed
    finally:
        k("delete", "namespace", ns, "--wait=false", check=False)
