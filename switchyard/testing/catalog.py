"""A generated catalog of many Upstreams, for the scale test and bench/scale.py.

Each model is a small CPU-or-L4 Upstream with two machine profiles, like the ones
the issue measured (~470 bytes of routing table each); names sort in creation order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..api.meta import API_VERSION

GATEWAY = "main"


def model_name(i: int) -> str:
    return f"tenant-{i // 100:03d}/model-{i:05d}"


def upstream_name(i: int) -> str:
    return f"m{i:05d}"


def gateway(name: str = GATEWAY) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Gateway", "metadata": {"name": name},
            "spec": {"auth": {"anonymous": True}, "nats": {"url": "nats://127.0.0.1:4222"},
                     "machineProfiles": [{"name": "cpu"}, {"name": "l4"}]}}


def upstream(i: int, service: str = "scale-worker") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Upstream", "metadata": {"name": upstream_name(i)},
            "spec": {"model": model_name(i), "operations": ["encode", "generate"],
                     "bundles": [{"name": "default", "priority": 0}], "machineProfiles": ["cpu", "l4"],
                     "defaultMachineProfile": "cpu", "timeoutSeconds": 30,
                     "scaling": {"minReplicas": 0, "maxReplicas": 2},
                     "workers": {"service": service}}}


def upstreams(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [upstream(i) for i in range(start, start + n)]


async def create_all(kubeconfig: str, namespace: str, objs: list[dict[str, Any]], concurrency: int = 16) -> None:
    """Create many objects through the API, a bounded number at a time; existing ones are kept."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from ..kubeclient import api_client
    from ..operator.kube import Kube

    api = await api_client(kubeconfig)
    kube, gate = Kube(api), asyncio.Semaphore(concurrency)

    async def one(obj: dict[str, Any]) -> None:
        async with gate:
            for attempt in range(30):
                try:
                    await kube.create({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})
                    return
                except ApiException as exc:
                    if exc.status == 409:
                        return
                    if exc.status != 429 or attempt == 29:  # 429: the API server is still starting
                        raise
                await asyncio.sleep(1.0)

    try:
        await asyncio.gather(*(one(o) for o in objs))
    finally:
        await api.close()


def bucket_of(i: int, shards: int) -> int:
    """The shard that holds generated model i in a catalog of `shards` shards."""
    from ..api.catalog import bucket

    return bucket(model_name(i), shards)
