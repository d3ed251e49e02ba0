"""The gateway's list-watch against the real API server: expiry (410) relists, restarts reconnect."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from kubernetes_asyncio import client

from switchyard.informer import Informer
from switchyard.kubeclient import api_client
from switchyard.testing.controlplane import ControlPlane


@pytest.fixture(scope="module")
def uncached() -> Iterator[ControlPlane]:
    """An API server that watches etcd directly, so an old resourceVersion really is gone (410)."""
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build kube-apiserver/etcd (tests/controlplane/build.sh)")
    with ControlPlane(apiserver_args=("--watch-cache=false",)) as cp:
        yield cp


def configmap(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{v: '{value}'}}\n"


async def _until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


async def test_watch_expiry_relists_and_api_restart_reconnects(uncached: ControlPlane) -> None:
    cp, ns = uncached, "default"
    cp.kubectl("apply", "-n", ns, "-f", "-", input=configmap("a", "1"), check=True)
    await asyncio.sleep(11)  # two compaction intervals: resourceVersion "1" is gone for good
    seen: dict[str, str] = {}

    def sync(items: list[dict]) -> None:
        seen.clear()
        seen.update({o["metadata"]["name"]: o["data"]["v"] for o in items})

    def event(kind: str, obj: dict) -> None:
        if kind == "DELETED":
            seen.pop(obj["metadata"]["name"], None)
        else:
            seen[obj["metadata"]["name"]] = obj["data"]["v"]

    async with await api_client(str(cp.kubeconfig)) as api:
        core = client.CoreV1Api(api)
        relists: list[None] = []
        informer = Informer("cm", core.list_namespaced_config_map, namespace=ns, on_sync=sync, on_event=event,
                            on_relist=lambda: relists.append(None))
        real_relist = informer._relist
        calls = 0

        async def relist_with_stale_version() -> str:
            # The first list hands back a resourceVersion etcd has long compacted
            # away, as after a long disconnect: the watch must get 410 and relist.
            nonlocal calls
            calls += 1
            rv = await real_relist()
            return "1" if calls == 1 else rv

        informer._relist = relist_with_stale_version  # type: ignore[method-assign]
        task = asyncio.create_task(informer.run())
        try:
            await _until(lambda: len(relists) >= 2)
            cp.kubectl("apply", "-n", ns, "-f", "-", input=configmap("b", "2"), check=True)
            await _until(lambda: seen == {"a": "1", "b": "2"})
            await asyncio.get_running_loop().run_in_executor(None, cp.restart_apiserver)
            cp.kubectl("apply", "-n", ns, "-f", "-", input=configmap("a", "3"), check=True)
            cp.kubectl("delete", "configmap", "b", "-n", ns, check=True)
            await _until(lambda: seen == {"a": "3"}, 60)
        finally:
            task.cancel()
