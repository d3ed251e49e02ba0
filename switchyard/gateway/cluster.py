"""Cluster mode: the routing table, worker endpoints and pool leases from Kubernetes.

- ConfigMap `<configmap>`: the table the operator compiled, either inline (key
  `routing.json`) or, past the object size wall, as a catalog: an index (key
  `catalog.json`) naming the digest of each shard ConfigMap `<configmap>-<i>`
  (api/catalog.py). Only the index is watched; a changed index fetches the shards
  whose digest changed, and the table is swapped only once every shard matches.
- EndpointSlices of the worker Services: a heartbeat counts only while its pod is
  a ready endpoint, so a pod Kubernetes takes out of service stops getting
  synchronous work at once instead of when its heartbeats lapse.
- Leases labelled `switchyard.dev/pool`: a pool whose lease lapsed answers 410.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import orjson
from kubernetes_asyncio import client

from ..api import catalog
from ..api.table import RoutingTable
from ..contracts import POOL_LABEL, SERVICE_LABEL, TABLE_KEY, Obj, endpoint_ready
from ..informer import Informer
from ..kubeclient import api_client
from ..messages import Heartbeat
from ..tasks import together
from .config import TableHolder
from .configsource import ConfigSource, SourceFactory
from .kubepools import KubePoolStore

log = logging.getLogger("switchyard.gateway.cluster")



def cluster(namespace: str, configmap: str, kubeconfig: str | None = None) -> SourceFactory:
    """Cluster mode's source for `new_state()`, its watches' relists counted in the metrics."""
    return lambda parts: ClusterConfig(parts.holder, namespace=namespace, configmap=configmap, kubeconfig=kubeconfig,
                                       on_relist=lambda name: parts.metrics.watch_relists.labels(name).inc())


class ClusterConfig(ConfigSource):
    def __init__(self, holder: TableHolder, *, namespace: str, configmap: str, kubeconfig: str | None = None,
                 on_relist: Callable[[str], None] = lambda informer: None) -> None:
        self.holder = holder
        self._on_relist = on_relist
        self.namespace, self.configmap, self.kubeconfig = namespace, configmap, kubeconfig
        # /v1/pools writes Pool resources; the operator compiles them and keeps their Leases (watched here).
        self.pool_store = self.pools = KubePoolStore(namespace, lambda: holder.table.gateway if holder.table else None,
                                                     self.pool_expires_at, kubeconfig)
        self._slices: dict[str, Obj] = {}  # slice name -> slice
        self._ready: set[str] = set()  # pod names (and hostnames) ready in some worker Service
        self._leases: dict[str, tuple[datetime | None, int]] = {}  # pool -> (renewed, duration)
        self.informers: list[Informer] = []
        self._index: dict[str, Any] | None = None  # the newest catalog index seen, not yet installed
        self._index_changed = asyncio.Event()
        self._shards: dict[int, tuple[str, dict[str, Any]]] = {}  # shard -> (digest, models), fetched

    # -- wiring ------------------------------------------------------------------

    def load(self) -> None:
        return None  # the table comes with the ConfigMap's first listing, in run()

    async def run(self) -> None:
        api = await api_client(self.kubeconfig)
        core, discovery, coord = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CoordinationV1Api(api)
        ns = self.namespace
        self.informers = [
            Informer("configmap", core.list_namespaced_config_map, namespace=ns,
                     on_relist=functools.partial(self._on_relist, "configmap"),
                     field_selector=f"metadata.name={self.configmap}",
                     on_sync=self._sync_table, on_event=lambda t, o: self._sync_table([] if t == "DELETED" else [o])),
            Informer("endpointslices", discovery.list_namespaced_endpoint_slice, namespace=ns,
                     on_relist=functools.partial(self._on_relist, "endpointslices"),
                     on_sync=self._sync_slices, on_event=self._slice_event),
            Informer("leases", coord.list_namespaced_lease, namespace=ns, label_selector=POOL_LABEL,
                     on_relist=functools.partial(self._on_relist, "leases"),
                     on_sync=self._sync_leases, on_event=self._lease_event),
        ]
        try:
            await together(*(i.run() for i in self.informers), self._load_catalogs(core), self.pools.run())
        finally:
            await api.close()

    # -- routing table -------------------------------------------------------------

    def _sync_table(self, items: list[Obj]) -> None:
        if not items:
            log.warning("routing ConfigMap missing; still serving the last table",
                        extra={"configmap": self.configmap})
            return
        data = items[0].get("data") or {}
        try:
            if data.get(TABLE_KEY):
                self._index = None  # back to inline: any catalog load under way is stale
                self.holder.swap(RoutingTable.from_json(data[TABLE_KEY]))
            elif data.get(catalog.INDEX_KEY):
                self._index = orjson.loads(data[catalog.INDEX_KEY])
                self._index_changed.set()
            else:
                log.error("routing ConfigMap has neither routing.json nor catalog.json",
                          extra={"configmap": self.configmap})
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable routing table; still serving the last one", extra={"error": str(exc)})

    async def _load_catalogs(self, core: client.CoreV1Api) -> None:
        """Install each new catalog index once all of its shards are here. A shard newer or older
        than the index (the operator writes shards first, the index last) means: wait a moment and
        fetch again; a newer index replaces the one being loaded."""
        while True:
            await self._index_changed.wait()
            self._index_changed.clear()
            for attempt in range(20):  # ~10 s: past it, the next index (or relist) tries again
                index = self._index
                if index is None or self._index_changed.is_set():
                    break
                try:
                    self.holder.swap(await self._assemble(core, index))
                    break
                except ValueError as exc:
                    log.info("catalog incomplete; fetching again", extra={"error": str(exc), "attempt": attempt})
                except Exception as exc:  # noqa: BLE001 - API server away: keep the last table, retry
                    log.warning("could not read catalog shards", extra={"error": repr(exc)})
                await asyncio.sleep(0.5)
            else:
                log.error("catalog never complete; still serving the last table", extra={"configmap": self.configmap})

    async def _assemble(self, core: client.CoreV1Api, index: dict[str, Any]) -> RoutingTable:
        wanted = {int(r["index"]): r["digest"] for r in index["shards"]}
        stale = [i for i, digest in wanted.items() if self._shards.get(i, ("", {}))[0] != digest]
        gate = asyncio.Semaphore(8)

        async def fetch(i: int) -> None:
            async with gate:
                # _preload_content=False: the raw response (its JSON read once), not the V1ConfigMap the stub says.
                resp = cast(aiohttp.ClientResponse, await core.read_namespaced_config_map(
                    catalog.shard_object(self.configmap, i), self.namespace, _preload_content=False))
                body = await resp.json()
            payload = base64.b64decode((body.get("binaryData") or {}).get(catalog.SHARD_KEY, ""))
            self._shards[i] = catalog.decode_shard(payload)

        await asyncio.gather(*(fetch(i) for i in stale))
        table = catalog.assemble(index, self._shards)
        self._shards = {i: s for i, s in self._shards.items() if i in wanted}
        return table

    # -- worker endpoints ----------------------------------------------------------

    def _sync_slices(self, items: list[Obj]) -> None:
        self._slices = {o["metadata"]["name"]: o for o in items}
        self._recompute_ready()

    def _slice_event(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self._slices.pop(name, None)
        else:
            self._slices[name] = obj
        self._recompute_ready()

    def _recompute_ready(self) -> None:
        table = self.holder.table
        services = {r.worker_service for r in table.models.values()} if table else set()
        ready: set[str] = set()
        for s in self._slices.values():
            if (s["metadata"].get("labels") or {}).get(SERVICE_LABEL) not in services:
                continue
            for ep in s.get("endpoints") or []:
                if not endpoint_ready(ep):
                    continue
                ref = ep.get("targetRef") or {}
                ready.update(n for n in (ref.get("name"), ep.get("hostname")) if n)
        self._ready = ready

    def admits(self, beat: Heartbeat) -> bool:
        """A heartbeat counts only while its pod is a ready endpoint of a worker Service: a pod Kubernetes
        takes out of service stops getting synchronous work at once, not when its heartbeats lapse."""
        return beat.host in self._ready or beat.worker_id in self._ready

    # -- pool leases -----------------------------------------------------------------

    def _sync_leases(self, items: list[Obj]) -> None:
        self._leases = {}
        for o in items:
            self._lease_event("ADDED", o)

    def _lease_event(self, kind: str, obj: Obj) -> None:
        pool = (obj["metadata"].get("labels") or {}).get(POOL_LABEL)
        if not pool:
            return
        if kind == "DELETED":
            self._leases.pop(pool, None)
            return
        spec: dict[str, Any] = obj.get("spec") or {}
        self._leases[pool] = (_parse_time(spec.get("renewTime") or spec.get("acquireTime")),
                              int(spec.get("leaseDurationSeconds") or 0))

    def pool_expires_at(self, pool: str) -> float | None:
        """When the pool's lease ends (unix seconds); None: no lease seen, or one that never expires."""
        renewed, duration = self._leases.get(pool, (None, 0))
        if renewed is None or duration <= 0:
            return None
        return renewed.timestamp() + duration

    def pool_expired(self, pool: str) -> str | None:
        """When the pool's lease lapsed, the time it did (ISO 8601); else None."""
        expiry = self.pool_expires_at(pool)
        if expiry is not None and expiry < datetime.now(UTC).timestamp():
            return datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds")
        return None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
