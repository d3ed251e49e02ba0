"""The worker: pull work items for its lanes, run the handler, answer, heartbeat, drain on stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ..jetstream import NATS_FAILURES
from ..logs import swallowed
from ..runtime import Backoff, StopSignals
from ..subjects import CANCEL_PREFIX, JOB_CANCEL_PREFIX
from ..tasks import cancel_all
from .config import WorkerConfig
from .fairness import FairPuller
from .health import start_health_server
from .heartbeat import Heartbeater
from .loader import StreamingInvoker, make_invoker
from .process import Processor, settle
from .pull import Slots
from .tracing import WorkerTracing, wanted

log = logging.getLogger("switchyard.worker")


class _Flight:
    __slots__ = ("msg", "last_progress")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.last_progress = time.monotonic()


class Worker:
    """Embeddable worker: `await start()`, then `await stop()` (drains in-flight items)."""

    def __init__(self, config: WorkerConfig, tracing: WorkerTracing | None = None) -> None:
        self.config = config
        self.tracing = tracing  # None: tracing off (the default); see worker/tracing.py
        self._nc: NATS | None = None
        self._pullers: list[FairPuller] = []
        self._slots = Slots(config.concurrency)
        self._flights: dict[int, _Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._bg: list[asyncio.Task[None]] = []
        self._side: set[asyncio.Task[None]] = set()
        self._handback: list[Msg] = []  # arrived while stopping: nak'd once the pull requests are gone
        self._executor: ThreadPoolExecutor | None = None
        self._processor: Processor | None = None
        self._heartbeat: Heartbeater | None = None
        self._stopping = False
        self._abort = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self.reconnects = 0

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    @property
    def nc(self) -> NATS:
        assert self._nc is not None, "worker not started"
        return self._nc

    @property
    def pullers(self) -> list[FairPuller]:
        return self._pullers

    @property
    def heartbeat(self) -> Heartbeater | None:
        return self._heartbeat

    @property
    def draining(self) -> bool:
        return self._stopping

    def healthy(self) -> bool:
        return not self._stopping and self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        cfg = self.config
        self._pullers = []
        self._nc = await nats.connect(
            servers=[u.strip() for u in cfg.nats_url.split(",") if u.strip()],
            name=f"{cfg.name}/{cfg.worker_id}",
            max_reconnect_attempts=-1,  # a worker outlives NATS restarts
            reconnect_time_wait=0.5,
            ping_interval=5, max_outstanding_pings=3,  # notice a dead link in ~15s, not minutes
            reconnected_cb=self._on_reconnected, disconnected_cb=self._on_disconnected,
            error_cb=self._on_error,
        )
        self._executor = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="sy-handler")
        try:
            js = self._nc.jetstream()
            invoker = make_invoker(cfg.handler, self._executor)
            self._processor = Processor(self._nc, js, cfg, invoker, self.tracing)
            # Jobs cancelled through the API (POST /v1/jobs/{id}/cancel): before any pull, like stream cancels.
            await self._nc.subscribe(f"{JOB_CANCEL_PREFIX}.>", cb=self._processor.cancels.on_msg)
            if isinstance(invoker, StreamingInvoker):
                # Before any pull: a cancel for an item this worker is about to get must not be missed.
                await self._nc.subscribe(f"{CANCEL_PREFIX}.>", cb=self._processor.cancels.on_msg)
            # Each lane may hold at most its share of the slots in one pull request, so an idle
            # lane cannot starve the others for a whole request lifetime.
            share = max(1, math.ceil(cfg.concurrency / len(cfg.lanes)))
            for lane in cfg.lanes:
                p = FairPuller(self._nc, js, lane, self._slots, self._dispatch, ack_wait_s=cfg.ack_wait_s,
                               max_batch=share)
                await p.open()
                self._pullers.append(p)
            self._heartbeat = Heartbeater(js, cfg, lambda: len(self._flights), self.healthy,
                                          lambda: self._stopping, self._processor.holders)
            await self._heartbeat.beat()  # visible as soon as start() returns
        except BaseException:
            await self._nc.close()
            self._executor.shutdown(wait=False)
            raise
        self._bg = [asyncio.create_task(p.run(), name=f"pull {p.lane.model}") for p in self._pullers]
        self._bg.append(asyncio.create_task(self._beat_later(), name="heartbeat"))
        self._bg.append(asyncio.create_task(self._progress_loop(), name="in-progress"))
        log.info("worker started", extra={"worker": cfg.worker_id, "models": ",".join(cfg.models),
                                          "bundle": cfg.bundle, "machine_profile": cfg.machine_profile,
                                          "pool": cfg.pool, "concurrency": cfg.concurrency})

    async def _beat_later(self) -> None:
        assert self._heartbeat is not None
        await asyncio.sleep(self.config.heartbeat_interval_s)
        await self._heartbeat.run()

    def _dispatch(self, msg: Msg) -> None:
        if self._stopping:
            # Arrived while stopping: handed back by stop() once our pull requests are withdrawn.
            # A nak now would reach the server while a request of ours is still open there, and it
            # would redeliver the item to us at once, again and again (each time an attempt).
            self._slots.release(1)
            self._handback.append(msg)
            return
        task = asyncio.create_task(self._run(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, msg: Msg) -> None:
        key = id(msg)
        self._flights[key] = _Flight(msg)
        try:
            assert self._processor is not None
            await self._processor.handle(msg)
        except Exception:  # Processor handles its own errors; this is a bug guard
            log.exception("unexpected error processing a work item", extra={"subject": msg.subject})
        finally:
            del self._flights[key]
            self._slots.release(1)

    async def _progress_loop(self) -> None:
        """+WPI for long-running items, so the server does not redeliver them mid-run."""
        while True:
            every = min((p.ack_wait_s for p in self._pullers), default=self.config.ack_wait_s) / 3
            await asyncio.sleep(max(0.05, every / 2))
            now = time.monotonic()
            for f in list(self._flights.values()):
                if now - f.last_progress >= every:
                    f.last_progress = now
                    with swallowed(log, "in-progress ack", NATS_FAILURES, subject=f.msg.subject):
                        await f.msg.in_progress()  # disconnected: the next tick tries again

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        log.info("reconnected to NATS, re-issuing pull requests",
                 extra={"worker": self.worker_id,
                        "server": str(self.nc.connected_url.netloc if self.nc.connected_url else "")})
        for p in self._pullers:
            p.reset()
        if self._heartbeat is not None and not self._stopping:
            # Show up again without waiting a tick.
            task = asyncio.create_task(_quiet(self._heartbeat.beat(), "heartbeat after a reconnect"))
            self._side.add(task)
            task.add_done_callback(self._side.discard)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("disconnected from NATS", extra={"worker": self.worker_id})

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error", extra={"worker": self.worker_id, "error": str(exc) or type(exc).__name__})

    def abort(self) -> None:
        """Cut a running drain short (a second SIGTERM/SIGINT)."""
        self._abort.set()

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Stop pulling, let in-flight items finish (up to the drain timeout), delete the heartbeat, close."""
        async with self._stop_lock:
            if self._stopped.is_set() or self._nc is None:
                self._stopped.set()
                return
            self._stopping = True
            timeout = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
            log.info("worker stopping", extra={"worker": self.worker_id, "in_flight": self.in_flight})
            if self._heartbeat is not None:
                # Say "draining" now, not at the next tick: gateways stop sending work meant for us
                # (it would wait in the stream until its deadline) and answer 202 instead.
                await _quiet(asyncio.wait_for(self._heartbeat.beat(), 2.0), "draining heartbeat")
            for p in self._pullers:
                await p.close()
            await self._hand_back()
            await cancel_all(self._bg[: len(self._pullers)])
            await self._drain(timeout)
            await cancel_all([*self._bg, *self._side])
            if self._heartbeat is not None:
                await self._heartbeat.delete()
            with swallowed(log, "flush before closing", NATS_FAILURES, worker=self.worker_id):
                await self._nc.flush(timeout=2)
            await self._nc.close()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            log.info("worker stopped", extra={"worker": self.worker_id})

    async def _hand_back(self) -> None:
        """Nak what arrived while stopping. The pullers' unsubscribes went out first on this same
        connection, so the server sees no interest left here and gives the items to another worker."""
        msgs, self._handback = self._handback, []
        for msg in msgs:
            await settle(msg.nak)

    async def _drain(self, timeout: float) -> None:
        pending = set(self._tasks)
        if pending:
            all_done = asyncio.ensure_future(asyncio.wait(pending))  # cancelling this leaves the tasks be
            aborted = asyncio.ensure_future(self._abort.wait())
            await asyncio.wait({all_done, aborted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            all_done.cancel()
            aborted.cancel()
        left = list(self._flights.values())
        if left:
            log.warning("drain timed out, returning items", extra={"worker": self.worker_id, "count": len(left)})
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for f in left:
                if not f.msg.is_acked:
                    await settle(f.msg.nak)  # redelivered now to another worker, not after ack_wait

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _quiet(coro: Awaitable[object], what: str) -> None:
    """A heartbeat beside the loop's: NATS away is logged by the loop (Heartbeater.run) as well."""
    with swallowed(log, what, NATS_FAILURES):
        await coro


async def serve(config: WorkerConfig, health_port: int | None = None, health_host: str = "0.0.0.0",
                otlp_endpoint: str | None = None) -> None:
    """Run a worker until SIGTERM/SIGINT, then drain; a second signal cuts the drain short.

    Traces go over OTLP/HTTP to `otlp_endpoint`, or where the standard OTEL_EXPORTER_OTLP_*
    variables say; with neither, tracing is off and OpenTelemetry is never imported.
    """
    tracing = WorkerTracing.start(otlp_endpoint) if wanted(otlp_endpoint) else None
    worker = Worker(config, tracing)
    health = await start_health_server(health_port, worker.healthy, health_host) if health_port else None
    # A SIGTERM noted while still importing (earlystop) stops it before it starts.
    signals = StopSignals(on_repeat=worker.abort)
    try:
        with signals:
            if await _start_retrying(worker, signals.stopping):
                await signals.stopping.wait()
                await worker.stop()
    finally:
        if health is not None:
            await health.cleanup()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # sends the spans still batched


async def _start_retrying(worker: Worker, stop: asyncio.Event) -> bool:
    """NATS may come up after the worker (a fresh cluster): keep trying until it does or we are told to stop."""
    backoff = Backoff(0.5, 10.0)
    while not stop.is_set():
        try:
            await worker.start()
            return True
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            delay = backoff.next()
            log.warning("cannot start worker, retrying", extra={"worker": worker.worker_id,
                                                                "error": str(exc) or type(exc).__name__,
                                                                "retry_in_s": delay})
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass
    return False
