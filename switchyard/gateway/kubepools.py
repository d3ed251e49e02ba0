"""Cluster mode pools: Pool resources in the gateway's namespace, through the API server.

The gateway creates, patches and deletes Pools (its Role grants exactly that on
`switchyard.dev/pools`); the operator does the rest: compiles them into the routing
table, gives each a Lease and runs its dedicated workers. A renewal sets the
`switchyard.dev/renewed-at` annotation, and the operator moves the Lease to it: the
gateway never writes Leases. Expiry is read from the Lease (gateway/cluster.py watches
them), falling back to the renewal time plus the TTL before the operator has made it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..api.pool import RENEWED_AT_ANNOTATION, Pool
from ..contracts import API_VERSION, GROUP, POOL_API_LABEL, VERSION
from ..errors import ApiError
from ..kubeclient import api_client
from .poolstore import LeaseLapsed, NameTaken, PoolRecord, PoolStore, iso, parse_time

PLURAL = Pool.PLURAL
MERGE_PATCH = "application/merge-patch+json"


class KubePoolStore(PoolStore):
    holds_declared = True

    def __init__(self, namespace: str, gateway: Callable[[], str | None], lease_expiry: Callable[[str], float | None],
                 kubeconfig: str | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self._gateway = gateway  # this gateway's name (the routing table's): its pools' spec.gatewayRef
        self._lease_expiry = lease_expiry
        self._kubeconfig = kubeconfig
        self._api: client.ApiClient | None = None
        self._lock = asyncio.Lock()

    async def _objects(self) -> client.CustomObjectsApi:
        async with self._lock:
            if self._api is None:
                self._api = await api_client(self._kubeconfig)
        return client.CustomObjectsApi(self._api)

    async def run(self) -> None:
        # Routing and 410s come from the operator's table and the Leases (cluster.py): nothing to
        # watch here. Held only to close the API client when the gateway stops.
        try:
            await asyncio.Event().wait()
        finally:
            if self._api is not None:
                await self._api.close()

    def expires_at(self, record: PoolRecord) -> float | None:
        if record.ttl_seconds <= 0:
            return None
        own = record.expires_at()  # renewed-at (or creation) + ttl: what the operator moves the Lease to
        lease = self._lease_expiry(record.name)
        if lease is None:
            return own  # the operator has not made the Lease yet
        if lease < time.time():
            return lease  # lapsed: a later renewal does not revive it
        return max(lease, own or lease)  # a renewal the operator has not applied to the Lease yet

    def _mine(self, obj: dict[str, Any]) -> bool:
        ref = (obj.get("spec") or {}).get("gatewayRef")
        return ref is None or ref == self._gateway()

    async def list(self) -> list[PoolRecord]:
        api = await self._objects()
        try:
            found = await api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        except ApiException as exc:
            raise _unavailable(exc) from None
        return [_record(o) for o in found.get("items") or [] if self._mine(o)]

    async def _get(self, name: str) -> dict[str, Any] | None:
        api = await self._objects()
        try:
            obj = await api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from None
        return obj if self._mine(obj) else None

    async def get(self, name: str) -> PoolRecord | None:
        obj = await self._get(name)
        return _record(obj) if obj is not None else None

    async def create(self, record: PoolRecord) -> PoolRecord:
        api = await self._objects()
        body = {
            "apiVersion": API_VERSION, "kind": Pool.KIND,
            "metadata": {"name": record.name, "labels": {POOL_API_LABEL: "true"},
                         "annotations": {RENEWED_AT_ANNOTATION: iso(record.renewed_at)}},
            "spec": {"gpus": dict(record.gpus), "models": list(record.models), "tenant": record.tenant,
                     "ttlSeconds": record.ttl_seconds, "gatewayRef": self._gateway()},
        }
        try:
            created = await api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: maybe another gateway's pool, which we do not show
                taken = await self._get(record.name)
                raise NameTaken(_record(taken) if taken else None) from None
            raise _unavailable(exc) from None
        return _record(created)

    async def renew(self, name: str, at: float) -> PoolRecord | None:
        record = await self.get(name)
        if record is None:
            return None
        lapsed = self.expired_at(record, at)
        if lapsed is not None:
            raise LeaseLapsed(lapsed)
        api = await self._objects()
        patch = {"metadata": {"annotations": {RENEWED_AT_ANNOTATION: iso(at)}}}
        try:
            obj = await api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch,
                                                           _content_type=MERGE_PATCH)  # type: ignore[call-arg]  # taken through **kwargs; kubernetes_asyncio's stub omits it
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from None
        return _record(obj)

    async def delete(self, name: str) -> bool:
        if await self._get(name) is None:
            return False
        api = await self._objects()
        try:
            await api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _unavailable(exc) from None
        return True


def _record(obj: dict[str, Any]) -> PoolRecord:
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    renewed = parse_time((meta.get("annotations") or {}).get(RENEWED_AT_ANNOTATION))
    created = parse_time(meta.get("creationTimestamp")) or 0.0
    return PoolRecord(
        name=meta["name"], tenant=spec.get("tenant") or "",
        gpus={str(k): int(v) for k, v in (spec.get("gpus") or {}).items()},
        models=tuple(sorted(spec.get("models") or ())), ttl_seconds=int(spec.get("ttlSeconds", 3600)),
        renewed_at=max(renewed or 0.0, created),
        api=(meta.get("labels") or {}).get(POOL_API_LABEL) == "true", gateway=spec.get("gatewayRef"))


def _unavailable(exc: ApiException) -> ApiError:
    if exc.status in (401, 403):
        return ApiError("internal", f"the gateway's ServiceAccount may not read or change Pools ({exc.status} "
                                    f"{exc.reason}): its Role needs get, list, create, patch, delete on "
                                    "switchyard.dev pools")
    if exc.status in (None, 0, 429) or (exc.status or 0) >= 500:
        return ApiError("pools_unavailable", f"the Kubernetes API cannot be reached for pools now: {exc.status} "
                                             f"{exc.reason}", headers={"Retry-After": "1"})
    return ApiError("internal", f"the Kubernetes API refused the pool change: {exc.status} {exc.reason}")
