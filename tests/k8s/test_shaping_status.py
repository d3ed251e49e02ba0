"""Traffic-shaping config issues in cluster mode (docs/routing.md#config-issues): the operator, against a
real kube-apiserver, reports them on the Upstream's Ready condition; the API server refuses a weight
out of range at apply (the CRD's schema)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import ROOT, Proc, get, operator, wait

from switchyard.testing.controlplane import ControlPlane

UPSTREAMS = """\
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: canary}
spec:
  model: shaping/canary
  aliases: [canary-latest]
  operations: [encode]
  machineProfiles: [cpu]
  bundles: [{name: stable, priority: 0, weight: 90}, {name: next, priority: 1, weight: 10}]
  circuitBreaker: {consecutiveFailures: 5}
  fallback: {model: switchyard/echo, afterSeconds: 20}
  workers: {service: canary}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: lopsided}
spec:
  model: shaping/lopsided
  operations: [encode]
  machineProfiles: [cpu]
  bundles: [{name: a, weight: 60}, {name: b, weight: 30}]
  workers: {service: lopsided}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: thief}
spec:
  model: shaping/thief
  aliases: [canary-latest]
  operations: [encode]
  machineProfiles: [cpu]
  workers: {service: thief}
"""


@pytest.fixture
def op(installed: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Proc]:
    proc = operator(installed, tmp_path, "op-shaping", namespace)
    yield proc
    proc.kill()
    print(proc.tail(60))  # shown when the test failed


def routing(cp: ControlPlane, ns: str) -> dict[str, Any]:
    cm = get(cp, ns, "configmap", "main-routing")
    return json.loads(cm["data"]["routing.json"]) if cm else {}


def ready(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    obj = get(cp, ns, "upstream", name)
    conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
    return conds.get("Ready")


def test_shaping_issues_are_upstream_conditions(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
    cp.kubectl("apply", "-n", ns, "-f", "-", check=True, input=UPSTREAMS)
    table = wait(lambda: (t := routing(cp, ns)) and "shaping/canary" in t.get("models", {}) and t, 60,
                 "the canary Upstream in the table")
    canary = table["models"]["shaping/canary"]
    assert [b.get("weight") for b in canary["bundles"]] == [90, 10]
    assert canary["fallback"] == {"model": "switchyard/echo", "afterSeconds": 20.0}
    assert canary["circuitBreaker"]["consecutiveFailures"] == 5
    assert table["aliases"] == {"canary-latest": "shaping/canary"}  # the first Upstream by name keeps it

    cond = wait(lambda: (c := ready(cp, ns, "lopsided")) and c["status"] == "False" and c, 30, "lopsided Invalid")
    assert cond["reason"] == "Invalid" and "the weights sum to 90" in cond["message"], cond
    assert "shaping/lopsided" not in routing(cp, ns)["models"]
    cond = wait(lambda: (c := ready(cp, ns, "thief")) and c["status"] == "False" and c, 30, "thief Invalid")
    assert "spec.aliases[0]" in cond["message"] and "already names 'shaping/canary'" in cond["message"], cond
    assert "shaping/thief" in routing(cp, ns)["models"]  # the model serves; only the alias is left out

    refused = cp.kubectl("apply", "-n", ns, "-f", "-", input=UPSTREAMS.split("---")[1].replace("weight: 60",
                                                                                                "weight: 160"))
    assert refused.returncode != 0 and "weight" in refused.stderr, refused.stderr
