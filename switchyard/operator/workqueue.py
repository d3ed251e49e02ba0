"""A per-namespace work queue: collapse bursts, one pass per namespace at a time, retry with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from ..runtime import Backoff
from .kube import api_error
from .reconcile import Outcome

log = logging.getLogger("switchyard.operator.queue")
RETRY = Backoff(0.5, 60.0)  # a namespace's pass after its n-th failure in a row (the queue counts them)


class NamespaceQueue:
    def __init__(self, reconcile: Callable[[str], Awaitable[Outcome]], *, active: Callable[[], bool],
                 debounce_s: float = 0.05, resync_s: float = 60.0, workers: int = 2) -> None:
        self._reconcile = reconcile
        self._active = active
        self.debounce_s, self.resync_s, self.workers = debounce_s, resync_s, workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._dirty: set[str] = set()  # changed while its pass ran: run again after
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.known: set[str] = set()

    def enqueue(self, ns: str, delay: float = 0.0) -> None:
        self.known.add(ns)
        if delay > 0:
            old = self._timers.pop(ns, None)
            if old:
                old.cancel()
            self._timers[ns] = asyncio.get_running_loop().call_later(delay, self.enqueue, ns)
            return
        if ns in self._running:
            self._dirty.add(ns)
        elif ns not in self._queued:
            self._queued.add(ns)
            self._queue.put_nowait(ns)

    def enqueue_all(self) -> None:
        for ns in sorted(self.known):
            self.enqueue(ns)

    async def run(self) -> None:
        await asyncio.gather(self._resync(), *(self._worker() for _ in range(self.workers)))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_s)
            self.enqueue_all()

    async def _worker(self) -> None:
        while True:
            ns = await self._queue.get()
            await asyncio.sleep(self.debounce_s)  # let the rest of a burst arrive
            self._queued.discard(ns)
            if not self._active():
                continue
            self._running.add(ns)
            started = time.perf_counter()
            try:
                outcome = await self._reconcile(ns)
                self._failures.pop(ns, None)
                if outcome.requeue_after is not None:
                    self.enqueue(ns, outcome.requeue_after + 0.5)
                log.debug("reconciled", extra={"namespace": ns, "ms": round((time.perf_counter() - started) * 1e3)})
            except Exception as exc:  # noqa: BLE001 - retried with backoff, never fatal
                n = self._failures[ns] = self._failures.get(ns, 0) + 1
                delay = RETRY.delay(n)
                detail = api_error(exc) if isinstance(exc, ApiException) else repr(exc)
                log.warning("reconcile failed; retrying", extra={"namespace": ns, "attempt": n,
                                                                 "retry_in_s": delay, "error": detail})
                self.enqueue(ns, delay)
            finally:
                self._running.discard(ns)
                if ns in self._dirty:
                    self._dirty.discard(ns)
                    self.enqueue(ns)
