"""Cluster mode: the routing table, worker endpoints and pool leases from Kubernetes.

- ConfigMap `<configmap>` key `routing.json`: the table the operator compiled.
- EndpointSlices of the worker Services: a heartbeat counts only while its pod is
  a ready endpoint, so a pod Kubernetes takes out of service stops getting
  synchronous work at once instead of when its heartbeats lapse.
- Leases labelled `switchyard.dev/pool`: a pool whose lease lapsed answers 410.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from kubernetes_asyncio import client

from ..api.table import RoutingTable
from ..kubeclient import api_client
from ..messages import Heartbeat
from .config import TableHolder
from .informer import Informer, Obj
from .registry import Registry

log = logging.getLogger("switchyard.gateway.cluster")

TABLE_KEY = "routing.json"
POOL_LABEL = "switchyard.dev/pool"
SERVICE_LABEL = "kubernetes.io/service-name"


class ClusterConfig:
    def __init__(self, holder: TableHolder, registry: Registry, *, namespace: str, configmap: str,
                 kubeconfig: str | None = None) -> None:
        self.holder, self.registry = holder, registry
        self.namespace, self.configmap, self.kubeconfig = namespace, configmap, kubeconfig
        self._slices: dict[str, Obj] = {}  # slice name -> slice
        self._ready: set[str] = set()  # pod names (and hostnames) ready in some worker Service
        self._leases: dict[str, tuple[datetime | None, int]] = {}  # pool -> (renewed, duration)
        self.informers: list[Informer] = []

    # -- wiring ------------------------------------------------------------------

    async def run(self) -> None:
        api = await api_client(self.kubeconfig)
        core, discovery, coord = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CoordinationV1Api(api)
        ns = self.namespace
        self.informers = [
            Informer("configmap", core.list_namespaced_config_map, namespace=ns,
                     field_selector=f"metadata.name={self.configmap}",
                     on_sync=self._sync_table, on_event=lambda t, o: self._sync_table([] if t == "DELETED" else [o])),
            Informer("endpointslices", discovery.list_namespaced_endpoint_slice, namespace=ns,
                     on_sync=self._sync_slices, on_event=self._slice_event),
            Informer("leases", coord.list_namespaced_lease, namespace=ns, label_selector=POOL_LABEL,
                     on_sync=self._sync_leases, on_event=self._lease_event),
        ]
        self.registry.admit = self._admit
        try:
            await asyncio.gather(*(i.run() for i in self.informers))
        finally:
            await api.close()

    # -- routing table -------------------------------------------------------------

    def _sync_table(self, items: list[Obj]) -> None:
        if not items:
            log.warning("routing ConfigMap missing; still serving the last table",
                        extra={"configmap": self.configmap})
            return
        raw = (items[0].get("data") or {}).get(TABLE_KEY)
        if not raw:
            log.error("routing ConfigMap has no routing.json", extra={"configmap": self.configmap})
            return
        try:
            self.holder.swap(RoutingTable.from_json(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable routing table; still serving the last one", extra={"error": str(exc)})

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
                cond = ep.get("conditions") or {}
                if cond.get("ready", True) is False or cond.get("terminating"):
                    continue
                ref = ep.get("targetRef") or {}
                ready.update(n for n in (ref.get("name"), ep.get("hostname")) if n)
        self._ready = ready

    def _admit(self, beat: Heartbeat) -> bool:
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
        if expiry is not None and expiry < datetime.now(timezone.utc).timestamp():
            return datetime.fromtimestamp(expiry, timezone.utc).isoformat(timespec="seconds")
        return None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
