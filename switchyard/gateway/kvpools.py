"""Standalone pools: one record per pool in the `sy_pools` JetStream KV bucket.

Writes are compare-and-set (create-only, update at the read revision), so two replicas
never both create one name or lose a renewal. Every replica keeps a view of the bucket
for routing and 410s: puts arrive on the bucket's subjects through a plain subscription
(which survives a NATS restart), and a full listing now and then catches what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ..api.meta import API_VERSION
from ..api.pool import Pool
from ..errors import ApiError
from ..jetstream import NATS_FAILURES, ensure_pools_bucket, kv_get
from ..logs import Repeats
from ..subjects import POOLS_BUCKET
from .poolstore import LeaseLapsed, NameTaken, PoolRecord, PoolStore, iso

log = logging.getLogger("switchyard.gateway.kvpools")

KV_PREFIX = f"$KV.{POOLS_BUCKET}."
UNREACHABLE: tuple[type[BaseException], ...] = (ApiError, *NATS_FAILURES)  # what _bucket and a resync raise then
RESYNC_S = 10.0  # a full listing this often: what a lost subscription message missed


class KvPoolStore(PoolStore):
    def __init__(self, nats_conn: Callable[[], tuple[NATS, JetStreamContext] | None],
                 replicas: Callable[[], int] = lambda: 1, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._conn = nats_conn
        self._replicas = replicas
        self._clock = clock
        self._kv: KeyValue | None = None
        self._view: dict[str, PoolRecord] = {}
        self._subscribed = False
        self.synced = asyncio.Event()
        self._failures = Repeats(log)

    # -- the watched view (routing, 410s) ------------------------------------------------

    def view(self) -> list[PoolRecord]:
        return list(self._view.values())

    def resources(self) -> list[Pool]:
        """The pools as resources, compiled into the table with the manifests directory."""
        return [Pool.model_validate({
            "apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": r.name},
            "spec": {"gpus": dict(r.gpus), "models": list(r.models), "tenant": r.tenant or None,
                     "ttlSeconds": r.ttl_seconds}}) for r in self._view.values()]

    def pool_expired(self, pool: str) -> str | None:
        """When `pool`'s lease lapsed (ISO 8601), for the 410 of a request; None while live or unknown."""
        record = self._view.get(pool)
        lapsed = self.expired_at(record) if record else None
        return iso(lapsed) if lapsed is not None else None

    def expires_at(self, record: PoolRecord) -> float | None:
        # A pool declared in the manifests has no record here, and no lease in standalone mode.
        return record.expires_at() if record.api else None

    async def run(self) -> None:
        while True:
            try:
                kv = await self._bucket()
                conn = self._conn()
                if conn is not None and not self._subscribed:
                    await conn[0].subscribe(f"{KV_PREFIX}>", cb=self._on_msg)
                    self._subscribed = True
                await self._resync(kv)
                self.synced.set()
            except UNREACHABLE as exc:  # NATS away: the view stays as it was, and is read again
                self._failures.failed("pools bucket resync", exc, bucket=POOLS_BUCKET)
                await asyncio.sleep(0.5)
            else:
                self._failures.recovered("pools bucket resync")
                await asyncio.sleep(RESYNC_S)

    async def _resync(self, kv: KeyValue) -> None:
        fresh = {r.name: r for r in await self._read_all(kv)}
        before, self._view = self._view, fresh
        if _compiled(before) != _compiled(fresh):
            self._changed()

    async def _on_msg(self, msg: Msg) -> None:
        name = msg.subject[len(KV_PREFIX):]
        op = (msg.headers or {}).get("KV-Operation")
        if op in ("DEL", "PURGE") or not msg.data:
            self._set(name, None)
            return
        try:
            self._set(name, PoolRecord.from_json(orjson.loads(msg.data)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable pool record", extra={"pool": name, "error": str(exc)})

    def _set(self, name: str, record: PoolRecord | None) -> None:
        before = dict(self._view)
        if record is None:
            self._view.pop(name, None)
        else:
            self._view[name] = record
        if _compiled(before) != _compiled(self._view):
            self._changed()  # a renewal changes no table: it only moves the expiry read by pool_expired

    # -- the store ------------------------------------------------------------------------

    async def _bucket(self) -> KeyValue:
        conn = self._conn()
        if conn is None:
            raise ApiError("pools_unavailable", "NATS is not reachable: pools cannot be read or changed now",
                           headers={"Retry-After": "1"})
        if self._kv is None:
            self._kv = await ensure_pools_bucket(conn[1], self._replicas())
        return self._kv

    async def _read_all(self, kv: KeyValue) -> list[PoolRecord]:
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out = []
        for key in keys:
            entry = await kv_get(kv, key)
            if entry is not None:
                out.append(PoolRecord.from_json(orjson.loads(entry.value)))
        return out

    async def list(self) -> list[PoolRecord]:
        return await self._read_all(await self._bucket())

    async def get(self, name: str) -> PoolRecord | None:
        entry = await kv_get(await self._bucket(), name)
        return PoolRecord.from_json(orjson.loads(entry.value)) if entry else None

    async def create(self, record: PoolRecord) -> PoolRecord:
        kv = await self._bucket()
        try:
            await kv.create(record.name, orjson.dumps(record.to_json()))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise NameTaken(await self.get(record.name)) from None
        self._set(record.name, record)
        return record

    async def renew(self, name: str, at: float) -> PoolRecord | None:
        kv = await self._bucket()
        for _ in range(5):  # compare-and-set against a concurrent renewal or delete
            entry = await kv_get(kv, name)
            if entry is None:
                return None
            record = PoolRecord.from_json(orjson.loads(entry.value))
            lapsed = self.expired_at(record, at)
            if lapsed is not None:
                raise LeaseLapsed(lapsed)
            renewed = PoolRecord(record.name, record.tenant, record.gpus, record.models, record.ttl_seconds,
                                 max(at, record.renewed_at))
            try:
                await kv.update(name, orjson.dumps(renewed.to_json()), last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            self._set(name, renewed)
            return renewed
        raise ApiError("internal", f"pool {name!r} kept changing while it was renewed; try again")

    async def delete(self, name: str) -> bool:
        kv = await self._bucket()
        entry = await kv_get(kv, name)
        if entry is None:
            return False
        await kv.purge(name)  # no history of a deleted pool is kept
        self._set(name, None)
        return True


def _compiled(view: dict[str, PoolRecord]) -> dict[str, tuple[object, ...]]:
    """What of the pools goes into the routing table (everything but the renewal time)."""
    return {n: (r.tenant, dict(r.gpus), r.models, r.ttl_seconds) for n, r in view.items()}

