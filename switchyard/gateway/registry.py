"""The live-worker registry, built from heartbeats in the workers KV bucket.

Every gateway replica reads the same bucket, so they agree on who is alive. Puts
are read from the bucket's subjects with a plain subscription (which survives a
NATS restart on its own); a full listing on start and after each reconnect
catches what was missed. A worker is live while its heartbeats keep coming: KV
TTL expiry sends no event, so freshness is judged here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from ..jetstream import NATS_FAILURES, kv_get
from ..logs import Repeats
from ..messages import Heartbeat
from ..subjects import WORKERS_BUCKET, Lane

log = logging.getLogger("switchyard.gateway.registry")

KV_PREFIX = f"$KV.{WORKERS_BUCKET}."


@dataclass(slots=True)
class Seen:
    beat: Heartbeat
    at: float  # local monotonic time it arrived

    def fresh(self, now: float) -> bool:
        # A draining worker takes nothing new: out of the live set from its first draining beat.
        return self.beat.healthy and not self.beat.draining and now - self.at < max(3 * self.beat.interval_s, 2.0)


class Registry:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 admit: Callable[[Heartbeat], bool] = lambda beat: True) -> None:
        self._clock = clock
        # Whether a fresh beat counts (ConfigSource.admits): cluster mode also requires the worker to be
        # a ready endpoint of its Service.
        self._admit = admit
        self._workers: dict[str, Seen] = {}
        self._kv: KeyValue | None = None
        self._failures = Repeats(log)

    async def start(self, nc: NATS, kv: KeyValue) -> None:
        self._kv = kv
        await nc.subscribe(f"{KV_PREFIX}>", cb=self._on_msg)
        await self.resync()

    async def resync(self) -> None:
        """Read every key; used at start and after a reconnect."""
        if self._kv is None:
            return
        try:
            try:
                keys = await self._kv.keys()
            except nats.js.errors.NoKeysError:  # an empty bucket: no worker yet
                keys = []
            for key in keys:
                entry = await kv_get(self._kv, key)  # None: deleted between keys() and get()
                if entry is not None and entry.value:
                    self._put(key, entry.value)
        except NATS_FAILURES as exc:  # NATS away again: the next reconnect reads it all again
            self._failures.failed("worker registry resync", exc, bucket=WORKERS_BUCKET)
            return
        self._failures.recovered("worker registry resync")

    async def _on_msg(self, msg: Msg) -> None:
        key = msg.subject[len(KV_PREFIX):]
        op = (msg.headers or {}).get("KV-Operation")
        if op in ("DEL", "PURGE") or not msg.data:
            self._workers.pop(key, None)
        else:
            self._put(key, msg.data)

    def _put(self, key: str, raw: bytes) -> None:
        try:
            self._workers[key] = Seen(Heartbeat.decode(raw), self._clock())
        except (ValueError, TypeError) as exc:
            log.warning("bad heartbeat", extra={"worker_key": key, "error": str(exc)})

    def live(self) -> list[Heartbeat]:
        now = self._clock()
        for key in [k for k, s in self._workers.items() if now - s.at > 60]:
            del self._workers[key]  # long gone: forget
        return [s.beat for s in self._workers.values() if self._live(s, now)]

    def _live(self, seen: Seen, now: float) -> bool:
        return seen.fresh(now) and self._admit(seen.beat)

    def alive(self, worker_id: str) -> bool:
        """Still beating, draining or not: a draining worker finishes what it holds (streams included)."""
        now = self._clock()
        return any(s.beat.worker_id == worker_id and now - s.at < max(3 * s.beat.interval_s, 2.0)
                   for s in self._workers.values())

    def serving(self, lane: Lane) -> int:
        """Live workers that pull this lane."""
        now = self._clock()
        return sum(
            1 for s in self._workers.values()
            if self._live(s, now) and s.beat.pool == lane.pool and s.beat.machine_profile == lane.machine_profile
            and s.beat.bundle == lane.bundle and lane.model in s.beat.models
        )
