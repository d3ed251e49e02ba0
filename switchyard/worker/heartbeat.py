"""Periodic Heartbeat into the workers bucket: how gateways and the autoscaler see this worker."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ..jetstream import NATS_FAILURES, ensure_workers_bucket
from ..messages import Heartbeat
from .config import WorkerConfig

log = logging.getLogger("switchyard.worker")


class Heartbeater:
    def __init__(self, js: JetStreamContext, config: WorkerConfig, in_flight: Callable[[], int],
                 healthy: Callable[[], bool] = lambda: True, draining: Callable[[], bool] = lambda: False,
                 holders: Callable[[], dict[str, int]] = dict) -> None:
        self._js = js
        self._cfg = config
        self._in_flight = in_flight
        self._healthy = healthy
        self._draining = draining
        self._holders = holders
        self._kv: KeyValue | None = None
        self.started_at = time.time()
        self.key = config.heartbeat_key

    async def beat(self) -> None:
        hb = Heartbeat(worker_id=self._cfg.worker_id, models=list(self._cfg.models), bundle=self._cfg.bundle,
                       machine_profile=self._cfg.machine_profile, pool=self._cfg.pool,
                       in_flight=self._in_flight(), healthy=self._healthy(), started_at=self.started_at,
                       interval_s=self._cfg.heartbeat_interval_s, host=self._cfg.host,
                       draining=self._draining(), concurrency=self._cfg.concurrency,
                       holders=self._holders() or None)
        if self._kv is None:
            self._kv = await ensure_workers_bucket(self._js)
        try:
            await self._kv.put(self.key, hb.encode())
        except Exception:
            # The bucket is memory-stored: a NATS restart loses it, so bind (or create) it afresh next time.
            self._kv = None
            raise

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.beat()
                if failing:
                    log.info("heartbeats resumed", extra={"worker": self._cfg.worker_id})
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep beating through NATS outages, and past a bug
                if not failing:  # once per outage; a bug (not NATS) with its traceback
                    log.warning("heartbeat failed", exc_info=None if isinstance(exc, NATS_FAILURES) else exc,
                                extra={"worker": self._cfg.worker_id, "error": str(exc) or type(exc).__name__})
                failing = True
            interval = self._cfg.heartbeat_interval_s
            await asyncio.sleep(interval if not failing else min(1.0, interval))

    async def delete(self) -> None:
        try:
            kv = self._kv if self._kv is not None else await asyncio.wait_for(ensure_workers_bucket(self._js), 3.0)
            await asyncio.wait_for(kv.delete(self.key), 3.0)
        except Exception as exc:  # the TTL removes it anyway
            log.warning("could not delete heartbeat", exc_info=None if isinstance(exc, NATS_FAILURES) else exc,
                        extra={"worker": self._cfg.worker_id, "error": str(exc) or type(exc).__name__})
