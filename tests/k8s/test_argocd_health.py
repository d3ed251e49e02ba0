"""manifests/argocd/health.lua, run by a real Lua 5.1 (lupa) over objects read from a real API server.

Argo CD runs the script with gopher-lua (Lua 5.1) and the object as the global `obj`,
as the JSON the API server returns; this test does the same with the objects the
operator wrote status into: a Ready Gateway (Healthy), a Planner with a cycle (Degraded),
and a Gateway changed while no operator runs (Progressing: observedGeneration is stale).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa_lua51  # the `test` extra
import pytest
from cluster import LOOP_PLANNER, ROOT, Proc, get, operator, wait

from switchyard.testing.controlplane import ControlPlane

SCRIPT = (ROOT / "manifests/argocd/health.lua").read_text()


def health(obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD would show: the script's `hs`, with `obj` a global as Argo CD sets it."""
    lua = lupa_lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(SCRIPT)
    return {"status": hs["status"], "message": hs["message"]}


def ready(cp: ControlPlane, ns: str, kind: str, name: str, status: str) -> dict[str, Any] | None:
    obj = get(cp, ns, kind, name) or {}
    conds = [c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"]
    return obj if conds and conds[0]["status"] == status else None


@pytest.fixture
def op(installed: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Proc]:
    proc = operator(installed, tmp_path, "argocd", namespace)
    yield proc
    proc.kill()
    print(proc.tail(60))  # shown when the test failed


def test_health_of_live_objects(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=LOOP_PLANNER, check=True)

    gateway = wait(lambda: ready(cp, ns, "gateway", "main", "True"), 30, "gateway/main Ready=True")
    assert health(gateway)["status"] == "Healthy", health(gateway)
    planner = wait(lambda: ready(cp, ns, "planner", "loop", "False"), 30, "planner/loop Ready=False")
    assert health(planner) == {"status": "Degraded", "message": health(planner)["message"]}
    assert health(planner)["message"].startswith("Invalid: ") and "cycle" in health(planner)["message"]

    # No operator: a spec change bumps metadata.generation past status.observedGeneration.
    op.kill()
    cp.kubectl("patch", "gateway", "main", "-n", ns, "--type=merge", "-p", '{"spec": {"replicas": 3}}', check=True)
    stale = get(cp, ns, "gateway", "main")
    assert stale is not None and stale["status"]["observedGeneration"] < stale["metadata"]["generation"]
    assert health(stale) == {"status": "Progressing",
                             "message": f"the operator has not seen generation {stale['metadata']['generation']} yet"}

    # Nor has it written any status into an object created now.
    cp.kubectl("apply", "-n", ns, "-f", "-", input=LOOP_PLANNER.replace("name: loop", "name: fresh"), check=True)
    fresh = get(cp, ns, "planner", "fresh")
    assert fresh is not None and "status" not in fresh
    assert health(fresh) == {"status": "Progressing", "message": "waiting for the Switchyard operator"}
