"""The operator's watch cache on the real API server: passes send no LIST, changes arrive by watch,
the pass's own writes are seen at once, and a relist repairs what a watch missed."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from cluster import ROOT, get

from switchyard.kubeclient import api_client
from switchyard.operator.cache import Cache
from switchyard.operator.kube import CONFIGMAP, UPSTREAM, Kube
from switchyard.operator.reconcile import WATCHED, Reconciler
from switchyard.testing.controlplane import ControlPlane


async def until(cond: Callable[[], Any], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


def operations(cm: dict | None) -> list[str]:
    table = json.loads((cm or {}).get("data", {}).get("routing.json", "{}"))
    return table.get("models", {}).get("switchyard/echo", {}).get("operations", [])


async def test_passes_read_the_cache_and_changes_arrive_by_watch(installed: ControlPlane, namespace: str) -> None:
    cp, ns = installed, namespace
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
    hints: list[str] = []
    async with await api_client(str(cp.kubeconfig)) as api:
        relists: Counter[str] = Counter()
        cache = Cache(api, WATCHED, namespaces=[ns], on_change=hints.append,
                      on_relist=lambda kind: relists.update([kind]))
        kube = Kube(api)
        kube.observer = cache
        watching = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.wait_synced(), 30)
            await until(lambda: cache.get(UPSTREAM, ns, "echo") is not None)
            assert ns in hints  # what the lists found asks for a pass
            rec = Reconciler(kube, image="test", reads=cache)
            await rec.reconcile(ns)
            assert kube.requests["LIST"] == 0 and kube.requests["PATCH"] > 0
            before = operations(get(cp, ns, "configmap", "main-routing"))
            assert "encode" in before and "rerank" not in before

            # Someone else's change reaches the cache through its watch, and asks for a pass.
            hints.clear()
            cp.kubectl("patch", "-n", ns, "upstream", "echo", "--type=merge",
                       "-p", json.dumps({"spec": {"operations": [*before, "rerank"]}}), check=True)
            await until(lambda: "rerank" in cache.get(UPSTREAM, ns, "echo")["spec"]["operations"])
            assert ns in hints
            kube.requests.clear()
            await rec.reconcile(ns)
            assert kube.requests["LIST"] == 0
            assert "rerank" in operations(get(cp, ns, "configmap", "main-routing"))
            # The pass's own write is in the cache as the API server answered it, watch event or not.
            assert "rerank" in operations(cache.get(CONFIGMAP, ns, "main-routing"))
            # One list of each watched kind, none since the first.
            assert set(relists.values()) == {1} and sum(relists.values()) == len(cache.informers)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)


async def test_a_relist_repairs_what_a_watch_missed(installed: ControlPlane, namespace: str) -> None:
    cp, ns = installed, namespace
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
    hints: list[str] = []
    async with await api_client(str(cp.kubeconfig)) as api:
        relists: Counter[str] = Counter()
        cache = Cache(api, WATCHED, namespaces=[ns], on_change=hints.append, relist_s=2,
                      on_relist=lambda kind: relists.update([kind]))
        watching = asyncio.create_task(cache.run())
        try:
            await asyncio.wait_for(cache.wait_synced(), 30)
            await until(lambda: cache.get(UPSTREAM, ns, "echo") is not None)
            before = relists["upstreams"]
            # A lost event, simulated (a real API server does not drop one on demand): the cache
            # no longer holds an Upstream that exists.
            cache.forget(UPSTREAM, ns, "echo")
            hints.clear()
            await until(lambda: cache.get(UPSTREAM, ns, "echo") is not None)
            assert relists["upstreams"] > before and ns in hints  # the relist found it, and asked for a pass
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
