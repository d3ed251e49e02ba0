"""Planner runs: a Planner's DAG executed step by step through the inference core, its state in JetStream.

A run is a job: a JobRecord with kind="plan" and op=<planner> in the jobs bucket, key
job_key(tenant, run id). Its steps live in the runs bucket (sy_runs) under the same key. Each
step is an ordinary kept job (submit.queue_job) with the id "<run id>/<step>": it goes on its
lane's queue, so scale-from-zero, pools, retries and dedup apply per step, and its outcome is
the step's record in the jobs bucket. A "/" never appears in a request id, so no request of
the tenant can take a step's id.

Inputs: a step without dependencies gets the request's items; with one, that step's result
items; with several, one map per item keyed by step name ({"a": a[i], "b": b[i]}), which needs
every dependency to have answered as many items.

Who drives a run: the gateway that accepted it, holding a lease in the run record (owner,
lease_until) that it renews every LEASE_S / 3. Every write of the run record is a
compare-and-set on its revision, so a gateway that lost its lease can never write again. Every
gateway watches the runs bucket; a run whose lease lapsed (its gateway was SIGKILLed) is taken
over by the one gateway whose compare-and-set wins, and continues: steps already final are read,
not re-run, and a step queued again gets the same Nats-Msg-Id and job key, so JetStream's dedup
and the create-only record keep it from running twice.

Counting (planstats.py): the driver counts a run's start, then its end once the final run record is
written, and marks each in the run record (`counted`). A run whose end is not marked yet keeps its
lease, so a gateway that dies between its final write and the count is taken over like a running
run, and the new driver finishes the job record and counts the end: the same message id, so a count
that did land is not counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from ..api.table import KeyRoute, PlannerRoute, RoutingTable
from ..contracts import FINAL_STATES
from ..errors import ApiError
from ..jetstream import NATS_FAILURES, ensure_runs_bucket
from ..logs import swallowed
from ..messages import JobRecord, Result, as_dict
from ..subjects import JOBS_BUCKET, job_cancel_subject, job_key
from ..tasks import cancel_all, expected, forever
from .dispatch import read_entry, unavailable
from .planstats import OUTCOMES, PlanStats
from .state import GatewayState
from .submit import Submission, queue_job, result_error

log = logging.getLogger("switchyard.gateway.plans")

LEASE_S = 6.0  # a run whose gateway stopped renewing for this long is taken over
SWEEP_S = 1.0  # how often a gateway looks for runs whose lease lapsed
RECHECK_S = 5.0  # a step's record is re-read this often too (a KV update missed while disconnected)
EXPIRY_GRACE_S = 60.0  # as jobs.py: a step record still open this long past its deadline is expired
FIRST_WAVE_WAIT_S = 5.0  # how long a new run's answer waits for its first steps to be queued
RETRIED = frozenset({"queue_unavailable", "queue_full", "not_ready"})  # a step's queueing is retried on these


def step_job_id(run_id: str, step: str) -> str:
    return f"{run_id}/{step}"


@dataclass(slots=True)
class StepRun:
    name: str
    model: str
    operation: str
    depends_on: list[str]
    params: dict[str, Any]
    # pending: not queued yet; queued: its job exists (the jobs bucket has its live state); then final
    state: str = "pending"
    error: dict[str, Any] | None = None
    queued_at: float = 0.0
    ended_at: float = 0.0


@dataclass(slots=True)
class RunRecord:
    """A run as the runs bucket holds it (JSON). The Planner's steps are copied in, so a Planner
    edited or removed mid-run changes nothing for runs already accepted."""

    id: str
    tenant: str
    planner: str
    output: str
    steps: list[StepRun]
    items: list[Any]
    params: dict[str, Any]
    key_name: str | None  # the key that started it: each step is resolved with it (a revoked key stops the run)
    machine_profile: str | None = None
    pool: str | None = None
    state: str = "running"  # running | succeeded | failed | cancelled
    error: dict[str, Any] | None = None
    owner: str = ""
    lease_until: float = 0.0
    created_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    output_items: list[Any] | None = None  # the output step's items once succeeded (also in the job record)
    counted: str = ""  # "": not counted yet; "start": its start is counted; "end": its end too (planstats.py)

    @property
    def key(self) -> str:
        return job_key(self.tenant, self.id)

    def step(self, name: str) -> StepRun:
        return next(s for s in self.steps if s.name == name)

    def encode(self) -> bytes:
        return orjson.dumps({"v": 1, **as_dict(self), "steps": [as_dict(s) for s in self.steps]})

    @classmethod
    def decode(cls, raw: bytes) -> RunRecord:
        data = orjson.loads(raw)
        known = {f.name for f in fields(cls)}  # a field a newer gateway added is left out, not an error
        data = {k: v for k, v in data.items() if k in known}
        data["steps"] = [StepRun(**s) for s in data["steps"]]
        return cls(**data)


def new_run(planner: PlannerRoute, run_id: str, tenant: str, key: KeyRoute | None, items: list[Any],
            params: dict[str, Any], machine_profile: str | None, pool: str | None) -> RunRecord:
    steps = [StepRun(s.name, s.model, s.operation, list(s.depends_on), dict(s.params)) for s in planner.steps]
    return RunRecord(id=run_id, tenant=tenant, planner=planner.name, output=planner.output, steps=steps,
                     items=items, params=params, key_name=key.name if key else None,
                     machine_profile=machine_profile, pool=pool)


class StepInputError(Exception):
    pass


def step_input(step: StepRun, request_items: list[Any], results: dict[str, list[Any]]) -> list[Any]:
    """What a step is sent: see the module docstring."""
    if not step.depends_on:
        return request_items
    if len(step.depends_on) == 1:
        return results[step.depends_on[0]]
    counts = {d: len(results[d]) for d in step.depends_on}
    if len(set(counts.values())) != 1:
        raise StepInputError(f"step {step.name!r} joins steps with different item counts "
                             f"({', '.join(f'{d}: {n}' for d, n in counts.items())})")
    n = next(iter(counts.values()))
    return [{d: results[d][i] for d in step.depends_on} for i in range(n)]


class LeaseLost(Exception):
    """Another gateway took the run over: this one stops without writing anything."""


class _Driven:
    """One run this gateway drives: its record, the revision it last wrote, and the write lock."""

    def __init__(self, run: RunRecord, revision: int) -> None:
        self.run, self.revision = run, revision
        self.lock = asyncio.Lock()
        self.cancelled = asyncio.Event()
        self.queued = asyncio.Event()  # its first steps are queued (or it ended): the 202 can show them


class PlanRuns:
    """Every run this gateway drives, and the sweep that takes over runs whose gateway died."""

    def __init__(self, st: GatewayState) -> None:
        self.st = st
        self._kv: KeyValue | None = None
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._finished: dict[str, asyncio.Future[RunRecord]] = {}  # for a request that holds (Prefer: wait)
        self.stats = PlanStats(st.dispatcher, self._settings)  # runs counted per Planner (GET /v1/plans, status)

    def _settings(self) -> tuple[float, int]:
        table = self.st.holder.table
        return (table.result_ttl_seconds, table.queue.replicas) if table else (3600.0, 1)

    # -- the runs bucket --------------------------------------------------------

    async def bucket(self) -> KeyValue:
        d = self.st.dispatcher
        if not d.connected or d.js is None:
            raise unavailable("not connected to NATS")
        if self._kv is None:
            self._kv = await ensure_runs_bucket(d.js, *self._settings())
        return self._kv

    async def read(self, key: str) -> tuple[RunRecord, int] | None:
        entry = await read_entry(await self.bucket(), key)
        return (RunRecord.decode(entry.value), entry.revision or 0) if entry is not None else None

    # -- starting ---------------------------------------------------------------

    async def start(self, run: RunRecord, ttl_s: float) -> tuple[JobRecord, bool]:
        """Record the run as a job (create-only) and start driving it. (record, True) when made;
        (the existing record, False) when the id was taken: nothing is started twice."""
        now = time.time()
        record = JobRecord(id=run.id, state="running", model="", tenant=run.tenant, deadline=now + ttl_s,
                           kind="plan", created_at=now, op=run.planner, updated_at=now)
        existing, revision = await self.st.dispatcher.create_job(run.key, record)
        if revision is None:
            return existing, False
        run.owner, run.lease_until = self.st.instance, now + LEASE_S
        kv = await self.bucket()
        try:
            run_revision = await kv.create(run.key, run.encode())
        except nats.errors.MaxPayloadError:
            await self.st.dispatcher.delete_job(run.key, revision)
            raise ApiError("payload_too_large", "the run's request does not fit in one NATS message") from None
        except (TimeoutError, nats.errors.Error) as exc:
            await self.st.dispatcher.delete_job(run.key, revision)
            raise unavailable(f"cannot record the run: {exc or type(exc).__name__}") from None
        driven = self._drive(run, run_revision)
        with suppress(asyncio.TimeoutError):  # the answer shows the first steps queued, with their ETA
            await asyncio.wait_for(asyncio.shield(driven.queued.wait()), FIRST_WAVE_WAIT_S)
        return record, True

    def _drive(self, run: RunRecord, revision: int) -> _Driven:
        key = run.key
        self._finished.setdefault(key, asyncio.get_running_loop().create_future())
        driven = _Driven(run, revision)
        task = asyncio.create_task(self._run(driven))
        self._driving[key] = task

        def done(t: asyncio.Task[None]) -> None:
            self._driving.pop(key, None)
            fut = self._finished.pop(key, None)
            if fut is not None and not fut.done():
                fut.cancel()
            driven.queued.set()

        task.add_done_callback(done)
        return driven

    async def wait(self, key: str, seconds: float) -> RunRecord | None:
        """The run's final record if this gateway drives it and it ends within `seconds`."""
        fut = self._finished.get(key)
        if fut is None:
            return None
        with suppress(asyncio.TimeoutError, asyncio.CancelledError):
            return await asyncio.wait_for(asyncio.shield(fut), seconds)
        return None

    # -- driving ----------------------------------------------------------------

    async def _run(self, d: _Driven) -> None:
        key = d.run.key
        nc = self.st.dispatcher.nc
        assert nc is not None
        sub = await nc.subscribe(job_cancel_subject(key), cb=_setter(d.cancelled))
        renew = asyncio.create_task(self._renew(d))
        # Counted beside the first steps' queueing, not before it; _finish counts it if this did not.
        counting = asyncio.create_task(self._count_start(d)) if d.run.counted == "" else None
        try:
            if d.run.state == "running":
                await self._advance(d)
            else:
                await self._finish(d)  # its gateway died between the final write and counting the end
        except LeaseLost:
            log.info("plan run taken over by another gateway", extra={"run": key})
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease lapses and another gateway (or this one) resumes it
            log.exception("plan run stopped; it resumes once its lease lapses", extra={"run": key})
            return
        finally:
            renew.cancel()
            if counting is not None:
                counting.cancel()
            with swallowed(log, "unsubscribe a plan run's cancel subject", NATS_FAILURES, run=key):
                await sub.unsubscribe()
        fut = self._finished.get(key)
        if fut is not None and not fut.done() and d.run.state in FINAL_STATES:
            fut.set_result(d.run)

    async def _count_start(self, d: _Driven) -> None:
        try:
            await self.stats.started(d.run.planner, d.run.tenant, d.run.key, d.run.created_at)
        except Exception as exc:  # NATS away: _finish counts it (the same id) before the end
            log.warning("could not count a plan run's start yet", exc_info=None if expected(exc) else exc,
                        extra={"run": d.run.key, "error": repr(exc)})
            return
        if d.run.counted == "":
            d.run.counted = "start"  # written with the next save; counted again (a duplicate) if it never is

    async def _renew(self, d: _Driven) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            with suppress(LeaseLost):
                await self._save(d)

    async def _save(self, d: _Driven) -> None:
        """Write the run record (and a fresh lease) by compare-and-set; LeaseLost when someone else wrote."""
        async with d.lock:
            if d.run.state == "running" or d.run.counted != "end":
                d.run.lease_until = time.time() + LEASE_S
            kv = await self.bucket()
            try:
                d.revision = await kv.update(d.run.key, d.run.encode(), last=d.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                raise LeaseLost() from None

    async def _advance(self, d: _Driven) -> None:
        run = d.run
        record = await self.st.dispatcher.job(run.key)
        if record is not None and record.state == "cancelled":
            d.cancelled.set()
        waits: dict[str, asyncio.Task[JobRecord]] = {
            s.name: asyncio.create_task(self._final_record(self._step_key(run, s.name)))
            for s in run.steps if s.state == "queued"}  # a resumed run: steps the previous owner queued
        cancel_wait = asyncio.create_task(d.cancelled.wait())
        results: dict[str, list[Any]] = {}
        try:
            while run.state == "running":
                if d.cancelled.is_set():
                    await self._stop_steps(run, waits)
                    await self._end(d, "cancelled", None)
                    return
                failed = await self._queue_ready(run, results)
                if failed is not None:
                    await self._stop_steps(run, waits)
                    await self._end(d, "failed", failed)
                    return
                for s in run.steps:
                    if s.state == "queued" and s.name not in waits:
                        waits[s.name] = asyncio.create_task(self._final_record(self._step_key(run, s.name)))
                await self._save(d)
                d.queued.set()
                if not waits:
                    if any(s.state == "pending" for s in run.steps):  # queueing refused for now: retried
                        await asyncio.sleep(1.0)
                        continue
                    await self._end(d, "succeeded", None, results.get(run.output))
                    return
                await asyncio.wait([*waits.values(), cancel_wait], return_when=asyncio.FIRST_COMPLETED)
                failed = None
                for name, task in list(waits.items()):
                    if not task.done():
                        continue
                    del waits[name]
                    step, rec = run.step(name), task.result()
                    step.state, step.ended_at = rec.state, time.time()
                    if rec.state == "succeeded":
                        results[name] = list((rec.result or {}).get("items") or [])
                    elif failed is None:
                        step.error = _step_error(name, rec)
                        failed = step.error
                if failed is not None:
                    await self._stop_steps(run, waits)
                    await self._end(d, "failed", failed)
                    return
        finally:
            cancel_wait.cancel()
            for task in waits.values():
                task.cancel()

    async def _queue_ready(self, run: RunRecord, results: dict[str, list[Any]]) -> dict[str, Any] | None:
        """Queue every pending step whose dependencies succeeded; the error that fails the run, if any."""
        ready = [s for s in run.steps if s.state == "pending"
                 and all(run.step(dep).state == "succeeded" for dep in s.depends_on)]
        if not ready:
            return None
        table = self.st.table()
        key = _key_named(table, run.key_name)
        for step in ready:
            for dep in step.depends_on:
                if dep not in results:
                    results[dep] = await self._result_items(run, dep)
            try:
                items = step_input(step, run.items, results)
                await queue_job(self.st, table, Submission(
                    op=step.operation, model_ref=step.model, items=items, params={**run.params, **step.params},
                    request_id=step_job_id(run.id, step.name), key=key, machine_profile=run.machine_profile,
                    pool=run.pool))
            except StepInputError as exc:
                step.state, step.ended_at = "failed", time.time()
                step.error = {"code": "bad_request", "message": str(exc), "step": step.name}
                return step.error
            except ApiError as exc:
                if exc.code in RETRIED:
                    log.warning("cannot queue a plan step yet; retrying",
                                extra={"run": run.key, "step": step.name, "error": exc.message})
                    continue
                step.state, step.ended_at = "failed", time.time()
                step.error = {"code": exc.code, "message": f"step {step.name!r}: {exc.message}", "step": step.name}
                return step.error
            step.state, step.queued_at = "queued", time.time()
        return None

    async def _result_items(self, run: RunRecord, step: str) -> list[Any]:
        rec = await self.st.dispatcher.job(self._step_key(run, step))
        return list(((rec.result if rec else None) or {}).get("items") or [])

    def _step_key(self, run: RunRecord, step: str) -> str:
        return job_key(run.tenant, step_job_id(run.id, step))

    async def _final_record(self, key: str) -> JobRecord:
        """The step's record once final: from the KV updates themselves (each carries the record),
        after one read, and a re-read every RECHECK_S (an update missed while disconnected)."""
        nc = self.st.dispatcher.nc
        assert nc is not None
        updates: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_update(msg: Msg) -> None:
            updates.put_nowait(msg.data)

        sub = await nc.subscribe(f"$KV.{JOBS_BUCKET}.{key}", cb=on_update)
        try:
            with swallowed(log, "flush before reading a plan step", NATS_FAILURES, job=key):
                await nc.flush()  # subscribed before the first read: no update falls in between
            rec: JobRecord | None = None
            read = True
            while True:
                if read:
                    with suppress(ApiError):
                        rec = await self.st.dispatcher.job(key)
                        if rec is None:  # gone (its TTL, or deleted): nothing will ever finish it
                            return JobRecord(id=key, state="expired", result={"ok": False, "error": {
                                "code": "deadline_exceeded", "message": "the step's record is gone"}})
                if rec is not None and rec.final:
                    return rec
                if rec is not None and rec.deadline and time.time() > rec.deadline + EXPIRY_GRACE_S:
                    rec.state = "expired"
                    return rec
                try:
                    data = await asyncio.wait_for(updates.get(), RECHECK_S)
                except TimeoutError:
                    read = True
                    continue
                read = not data  # a delete or purge: read what is left
                if data:
                    with suppress(ValueError, TypeError):
                        rec = JobRecord.decode(data)
        finally:
            with swallowed(log, "unsubscribe a plan step's record", NATS_FAILURES, job=key):
                await sub.unsubscribe()

    async def _stop_steps(self, run: RunRecord, waits: dict[str, asyncio.Task[JobRecord]]) -> None:
        """Cancel every step still queued or running: its record ends `cancelled` (a queued item is then
        skipped by the worker that pulls it) and its worker hears it on the job's cancel subject."""
        for task in waits.values():
            task.cancel()
        waits.clear()
        for step in run.steps:
            if step.state == "pending":
                step.state = "cancelled"
            elif step.state == "queued":
                step.state = await self._cancel_step(self._step_key(run, step.name))
            step.ended_at = step.ended_at or time.time()

    async def _cancel_step(self, key: str) -> str:
        """CAS the step's record to cancelled (a final one stays as it is); the state it ends in."""
        jobs = self.st.dispatcher.jobs
        nc = self.st.dispatcher.nc
        assert jobs is not None and nc is not None
        state = "cancelled"
        for _ in range(10):
            try:
                entry = await jobs.get(key)
                assert entry.value is not None  # kv.get raises KeyDeletedError on a delete marker
                rec = JobRecord.decode(entry.value)
                if rec.final:
                    state = rec.state
                    break
                rec.state, rec.updated_at = "cancelled", time.time()
                rec.result = as_dict(Result(id=rec.id, ok=False, state="cancelled", error={
                    "code": "cancelled", "message": "cancelled: another step of its plan run failed or the run "
                                                    "was cancelled"}))
                await jobs.update(key, rec.encode(), last=entry.revision)
                break
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # the worker moved it on meanwhile: read it again
            except (TimeoutError, nats.errors.Error, ValueError) as exc:
                log.warning("could not cancel a plan step", extra={"job": key, "error": str(exc)})
                break
        with swallowed(log, "tell a plan step's worker to stop", NATS_FAILURES, level=logging.WARNING, job=key):
            await nc.publish(job_cancel_subject(key), b"")  # its worker stops it if it runs
        return state

    async def _end(self, d: _Driven, state: str, error: dict[str, Any] | None,
                   items: list[Any] | None = None) -> None:
        """Final: the run record (the one write that decides the outcome), then _finish."""
        run = d.run
        run.state, run.error, run.ended_at = state, error, time.time()
        if state == "succeeded":
            if items is None:  # the output step ended before this gateway took the run over
                items = await self._result_items(run, run.output)
            run.output_items = items
        await self._save(d)
        await self._finish(d)

    async def _finish(self, d: _Driven) -> None:
        """After the final run record: the job record, then the end counted and marked in the run record."""
        run = d.run
        outcome = await self._final_job(run)
        fut = self._finished.get(run.key)
        if fut is not None and not fut.done():  # a held request answers now: counting is bookkeeping
            fut.set_result(run)
        if run.counted == "":  # its start was not counted yet (or not marked): the same id, counted once
            await self.stats.started(run.planner, run.tenant, run.key, run.created_at)
        if run.counted != "end":
            await self.stats.ended(run.planner, run.tenant, run.key, run.created_at, outcome,
                                   run.error if outcome == run.state else None, run.ended_at)
            run.counted = "end"
            await self._save(d)

    async def _final_job(self, run: RunRecord) -> str:
        """Write the run's outcome into its job record by compare-and-set (a cancel wins over our outcome);
        the outcome the job record ends with, which is the one counted."""
        result = Result(id=run.id, ok=run.state == "succeeded", items=run.output_items, error=run.error,
                        state=run.state, timing={"compute_ms": round((run.ended_at - run.created_at) * 1000, 3)})
        jobs = self.st.dispatcher.jobs
        assert jobs is not None
        for _ in range(10):
            try:
                entry = await jobs.get(run.key)
                assert entry.value is not None  # kv.get raises KeyDeletedError on a delete marker
                rec = JobRecord.decode(entry.value)
                if rec.final:
                    return rec.state if rec.state in OUTCOMES else run.state
                rec.state, rec.result, rec.updated_at = run.state, as_dict(result), time.time()
                await jobs.update(run.key, rec.encode(), last=entry.revision)
                return run.state
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            except nats.js.errors.KeyNotFoundError:
                return run.state  # deleted (DELETE /v1/jobs/{id}, or its TTL)
        return run.state

    # -- taking over --------------------------------------------------------------

    async def sweep_forever(self) -> None:
        """Watch the runs bucket; take over any run whose lease lapsed (its gateway died)."""
        await forever(self._sweep, pause_s=SWEEP_S, what="plan run sweep", logger=log)

    async def _sweep(self) -> None:
        while not self.st.dispatcher.connected:
            await asyncio.sleep(SWEEP_S)
        kv = await self.bucket()
        watcher = await kv.watchall()
        leases: dict[str, float] = {}  # open runs (running, or their end not counted yet): key -> lease_until
        try:
            next_check = 0.0
            while True:
                with suppress(nats.errors.TimeoutError):
                    entry = await watcher.updates(timeout=SWEEP_S)
                    if entry is not None and entry.key:
                        run = RunRecord.decode(entry.value) if entry.value else None
                        if run is not None and _open(run):
                            leases[entry.key] = run.lease_until
                        else:
                            leases.pop(entry.key, None)
                now = time.time()
                if now < next_check:
                    continue
                next_check = now + SWEEP_S
                for key, until in list(leases.items()):
                    if until < now and key not in self._driving:
                        await self._take_over(kv, key)
        finally:
            with swallowed(log, "stop the plan-run watcher", NATS_FAILURES):
                await watcher.stop()

    async def _take_over(self, kv: KeyValue, key: str) -> None:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return
        if not entry.value:
            return
        run = RunRecord.decode(entry.value)
        now = time.time()
        if not _open(run) or run.lease_until >= now:
            return
        previous = run.owner
        run.owner, run.lease_until = self.st.instance, now + LEASE_S
        try:
            revision = await kv.update(key, run.encode(), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # another gateway took it first
        log.info("took over a plan run", extra={"run": key, "from": previous})
        self._drive(run, revision)

    async def stop(self) -> None:
        """Stop driving (the gateway stops): each run's lease lapses and another gateway takes it over."""
        await cancel_all(list(self._driving.values()))


def _open(run: RunRecord) -> bool:
    """A run some gateway must still drive: running, or ended with its end not counted yet."""
    return run.state == "running" or run.counted != "end"


def _key_named(table: RoutingTable, name: str | None) -> KeyRoute | None:
    if name is None:
        if not table.anonymous:
            raise ApiError("unauthorized", "the run was started without a key and this Gateway now requires one")
        return None
    for key in table.keys:
        if key.name == name:
            return key
    raise ApiError("unauthorized", f"the key {name!r} that started the run no longer exists")


def _step_error(name: str, rec: JobRecord) -> dict[str, Any]:
    result = rec.result or {}
    if rec.state == "cancelled":
        return {"code": "cancelled", "message": f"step {name!r} was cancelled", "step": name}
    err = result_error(Result(id=rec.id, ok=False, state=rec.state, error=result.get("error"),
                              attempt=int(result.get("attempt") or 1)))
    return {"code": err.code, "message": f"step {name!r}: {err.message}", "step": name}


def _setter(event: asyncio.Event) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback (nats-py wants a coroutine) that sets `event`."""
    async def on_msg(_: Msg) -> None:
        event.set()
    return on_msg
