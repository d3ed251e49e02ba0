"""The inference core every protocol shares: resolve a request, queue it, and say what came of it.

HTTP (inference.py), and any other front end (OpenAI shapes, gRPC, WebSocket), turns its own
request into a `Submission`, calls `submit()`, and renders the outcome in its own shape:

- a `Result` when a worker answered (ok or not: `result_error()` maps a failed one to an ApiError);
- an `Accepted` when no worker is live: the item is recorded as a job and queued durably, and
  runs when a worker starts (a 202 in HTTP);
- an `ApiError` raised for everything refused (auth, unknown model, limits, deadline, ...).

`submit_stream()` is the same with the result streamed chunk by chunk (streaming.py): a
`ChunkStream` instead of an `Answered`, or the same `Accepted`.

The rules live here once: resolve → lane, pinned pools get `no_capacity`, `Prefer: wait`
holds, the create-only job record before the publish, dedup by tenant-scoped request id, and
the learned cold-start ETA. A front end never re-implements any of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.table import KeyRoute, RoutingTable
from ..api.upstream import Operation
from ..errors import ApiError
from ..messages import JobRecord, Result, WorkItem, as_dict
from ..subjects import DEDUPE_WINDOW_S
from .auth import tenant_of
from .eta import remaining
from .hold import hold_seconds
from .policy.chain import NO_TICKET, Ticket
from .priority import priority_class
from .progress import queue_position
from .resolve import Resolution, resolve, split_machine_profile
from .state import GatewayState
from .streaming import ChunkStream, open_stream
from .tracing import Trace

NO_CAPACITY_RETRY_AFTER_S = 10
OPERATIONS = frozenset(Operation.__args__)  # type: ignore[attr-defined]
MAX_ITEMS = 10_000  # items in one work item, whatever protocol carried them


def check_operation(op: str) -> None:
    if op not in OPERATIONS:
        raise ApiError("not_found", f"unknown operation {op!r} (operations: {', '.join(sorted(OPERATIONS))})")


def check_items(items: Any) -> list[Any]:
    """`items` when it is a non-empty array within the limit; else a 400."""
    if not isinstance(items, list) or not items:
        raise ApiError("bad_request", '"items" must be a non-empty array')
    if len(items) > MAX_ITEMS:
        raise ApiError("bad_request", f'"items" holds {len(items)} entries; the limit is {MAX_ITEMS}')
    return items


@dataclass(frozen=True, slots=True)
class Submission:
    """One inference request, whatever protocol it came in on (already authenticated and parsed)."""

    op: str
    model_ref: str  # model[:profile], as the caller named it
    items: list[Any]
    params: dict[str, Any]
    request_id: str
    key: KeyRoute | None
    machine_profile: str | None = None  # X-Machine-Profile: "profile" or "pool/profile"
    pool: str | None = None  # X-Pool
    bundle: str | None = None  # X-Bundle
    prefer: Sequence[str] = ()  # Prefer header values (RFC 7240); only `wait` is read
    respond_async: bool = False  # `Prefer: respond-async` (native HTTP): a job at once, even with a live worker
    deadline_s: int | None = None  # X-Job-Deadline: must start within this; refused up front when the ETA is longer
    priority: str | None = None  # X-Priority as sent (priority.py); None: the key's tier decides
    client_ip: str | None = None  # the client's address, for spec.policy limits per IP


@dataclass(frozen=True, slots=True)
class Accepted:
    """No live worker (or the caller asked, `Prefer: respond-async`): the item is a queued job."""

    job_id: str
    resolution: Resolution
    eta_s: float  # estimated_wait_s: the learned cold-start time left (eta.py)
    preference_applied: str | None = None  # "wait=N" when a hold ran out; "respond-async"
    asked: bool = False  # a job because the caller asked (Prefer: respond-async), live worker or not
    queue_position: int | None = None  # after a hold ran out: waiting items ahead (progress.py); else unread


@dataclass(frozen=True, slots=True)
class Answered:
    """A worker's result (ok or failed); `preference_applied` when it came during a hold."""

    result: Result
    resolution: Resolution
    preference_applied: str | None = None


Outcome = Answered | Accepted


@dataclass(slots=True)
class Hooks:
    """What a front end may observe on the way (metrics labels, tracing)."""

    on_resolved: Callable[[Resolution], None] = field(default=lambda res: None)
    trace: Trace | None = None


def respond_async(headers: Sequence[str]) -> bool:
    """`Prefer: respond-async` (RFC 7240 §4.1) among the Prefer header values."""
    return any(pref.partition(";")[0].strip().lower() == "respond-async"
               for header in headers for pref in header.split(","))


MAX_JOB_DEADLINE_S = 7 * 86_400  # the longest jobs TTL a Gateway may set


def job_deadline(raw: str | None) -> int | None:
    """X-Job-Deadline: whole seconds from now, 1 to MAX_JOB_DEADLINE_S (the jobs TTL bounds it further)."""
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_JOB_DEADLINE_S:
        raise ApiError("bad_request", f"X-Job-Deadline must be whole seconds from 1 to {MAX_JOB_DEADLINE_S}, "
                                      f"got {raw[:32]!r}")
    return int(raw)


async def submit(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks | None = None) -> Outcome:
    """The policy chain (spec.policy), then the request; the chain's ticket ends with the worker's usage."""
    ticket = await admit(st, table, sub)
    if ticket is NO_TICKET:
        return await _submit(st, table, sub, hooks)
    try:
        outcome = await _submit(st, table, _with_params(sub, ticket), hooks)
    except BaseException:
        ticket.end(None)
        raise
    ticket.end(outcome.result.usage if isinstance(outcome, Answered) else None)  # a 202 job: the reservation stands
    return outcome


async def admit(st: GatewayState, table: RoutingTable, sub: Submission) -> Ticket:
    """Run spec.policy's chain on the request (policy/): refused with its ApiError, or admitted."""
    return await st.policy.admit(table, op=sub.op, model=sub.model_ref, items=sub.items, params=sub.params,
                                 key=sub.key, tenant=tenant_of(sub.key), client_ip=sub.client_ip,
                                 request_id=sub.request_id)


def _with_params(sub: Submission, ticket: Ticket) -> Submission:
    """The request as the chain's transforms left it."""
    if ticket.params is None or ticket.params == sub.params:
        return sub
    return dataclasses.replace(sub, params=ticket.params)


async def _submit(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks | None = None) -> Outcome:
    hooks = hooks or Hooks()
    if sub.respond_async:
        return await _async_job(st, table, sub, hooks)
    item, res = await _lane(st, table, sub, hooks)
    if st.registry.serving(res.lane) == 0:
        return await _cold(st, table, sub, item, res, hooks.trace, streamed=False)  # type: ignore[return-value]
    if sub.deadline_s is not None:
        await _admit(st, table, sub, res)  # the same bounds as a job's (a live lane's ETA is 1 s)
    return await _run(st, item, res, hooks.trace, sub.deadline_s)


async def submit_stream(st: GatewayState, table: RoutingTable, sub: Submission,
                        hooks: Hooks | None = None) -> Accepted | ChunkStream:
    """_submit_stream() after the policy chain; a stream ends the chain's ticket with its final chunk's usage."""
    ticket = await admit(st, table, sub)
    if ticket is NO_TICKET:
        return await _submit_stream(st, table, sub, hooks)
    try:
        opened = await _submit_stream(st, table, _with_params(sub, ticket), hooks)
    except BaseException:
        ticket.end(None)
        raise
    if isinstance(opened, ChunkStream):
        opened.on_end = ticket.end
    else:
        ticket.end(None)
    return opened


async def _submit_stream(st: GatewayState, table: RoutingTable, sub: Submission,
                         hooks: Hooks | None = None) -> Accepted | ChunkStream:
    """submit(), streamed: the item's chunks as the worker yields them (see streaming.py).

    A live worker: the ChunkStream at once. None: with `Prefer: wait`, the stream once it begins
    within the hold, else `Accepted` (the job runs later; its record gets the joined result).
    Tracing covers the resolve (not the publish or each chunk).
    """
    hooks = hooks or Hooks()
    item, res = await _lane(st, table, sub, hooks)
    if st.registry.serving(res.lane) == 0:
        return await _cold(st, table, sub, item, res, hooks.trace, streamed=True)  # type: ignore[return-value]
    return await open_stream(st, item, res)


async def queue_job(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks | None = None) -> Accepted:
    """submit() as a job whatever the lane's state: recorded, queued durably, answered at once.

    For work whose outcome must outlive this gateway (Planner steps, plans.py): the record in
    the jobs bucket is the result's only home. A pinned pool without a worker is still
    `no_capacity`; `Prefer` is not read. The same request id again finds the same job.
    """
    hooks = hooks or Hooks()
    item, res = _prepare(st, table, sub, hooks)
    if res.pinned and st.registry.serving(res.lane) == 0:
        await _cold(st, table, sub, item, res, hooks.trace, streamed=False)  # raises no_capacity
    await _admit(st, table, sub, res)
    return await _accept(st, item, res, _life(table, sub), None, hooks.trace)  # type: ignore[return-value]


async def _async_job(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks) -> Outcome:
    """`Prefer: respond-async`: a job whatever the lane's state; with `wait=N` as well (RFC 7240 §4.3),
    the answer if it comes within N s, else the job: a hold, on a live lane too."""
    item, res = _prepare(st, table, sub, hooks)
    if res.pinned and st.registry.serving(res.lane) == 0:
        await _cold(st, table, sub, item, res, hooks.trace, streamed=False)  # raises no_capacity
    await _admit(st, table, sub, res)
    held = hold_seconds(sub.prefer, res.route.timeout_s)
    outcome = await _accept(st, item, res, _life(table, sub), held, hooks.trace)
    if isinstance(outcome, Accepted):
        return dataclasses.replace(outcome, asked=True, preference_applied=outcome.preference_applied
                                   or "respond-async")
    return outcome  # type: ignore[return-value]


_CLOSING: set[asyncio.Future[None]] = set()


def close_orphan(opening: asyncio.Future[Accepted | ChunkStream]) -> None:
    """Done-callback for a shielded submit_stream() whose caller left: cancel the stream once it opens."""
    stream = opening.result() if not opening.cancelled() and opening.exception() is None else None
    if isinstance(stream, ChunkStream):
        closing = asyncio.ensure_future(stream.aclose())
        _CLOSING.add(closing)  # the loop holds tasks weakly: keep it until it is done
        closing.add_done_callback(_CLOSING.discard)


def _prepare(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks) -> tuple[WorkItem, Resolution]:
    res = _resolved(st, table, sub, hooks)
    st.breakers.admit(res.lane, res.route, tenant_of(sub.key))  # circuit_open: nothing is queued, not even a job
    return _item(table, sub, res, hooks.trace), res


def _resolved(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks) -> Resolution:
    # An expired pool may already be gone from the table: say why before resolving.
    st.check_pool(split_machine_profile(sub.machine_profile, sub.pool)[1] or "")
    res = resolve(table, sub.op, sub.model_ref, machine_profile=sub.machine_profile, pool=sub.pool,
                  bundle=sub.bundle, key=sub.key, request_id=sub.request_id)
    hooks.on_resolved(res)
    st.check_pool(res.lane.pool)
    return res


async def _lane(st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks) -> tuple[WorkItem, Resolution]:
    """_prepare() for a request answered now: spec.fallback's model instead when the lane cannot serve it
    (its circuit is open, or it has no live worker and cannot start one within fallback.afterSeconds)."""
    res = _resolved(st, table, sub, hooks)
    try:
        st.breakers.admit(res.lane, res.route, tenant_of(sub.key))
    except ApiError:
        taken = await _fallback(st, table, sub, res, hooks, circuit_open=True)
        if taken is None:
            raise  # circuit_open: nothing is queued, not even a job
        return taken
    if st.registry.serving(res.lane) == 0:
        taken = await _fallback(st, table, sub, res, hooks, circuit_open=False)
        if taken is not None:
            return taken
    return _item(table, sub, res, hooks.trace), res


def _item(table: RoutingTable, sub: Submission, res: Resolution, rt: Trace | None) -> WorkItem:
    item = WorkItem(
        id=sub.request_id, op=sub.op, model=res.lane.model, bundle=res.lane.bundle,
        machine_profile=res.lane.machine_profile, pool=res.lane.pool, items=sub.items,
        params=res.params(sub.params), profile=res.profile, max_attempts=res.route.max_attempts,
        priority=priority_class(table, sub.key, sub.priority),
        tenant=tenant_of(sub.key), key_name=sub.key.name if sub.key is not None else "",
    )
    if rt is not None:
        rt.resolved(item)
    return item


async def _fallback(st: GatewayState, table: RoutingTable, sub: Submission, res: Resolution, hooks: Hooks,
                    circuit_open: bool) -> tuple[WorkItem, Resolution] | None:
    """spec.fallback's model and its item, when its lane has a live worker and `res`'s lane cannot serve:
    its circuit is open, or its learned ETA is past fallback.afterSeconds. None: keep to the lane (its
    503, or its 202). One hop: a fallback's own is not followed. The fallback is resolved for the same
    key, so a key not allowed its model never gets it."""
    fb = res.route.fallback
    if fb is None or res.pinned:
        return None
    route = table.models.get(fb.model)
    if route is None:
        return None
    mp = split_machine_profile(sub.machine_profile, None)[0]  # the caller's, if the fallback offers it
    ref = f"{fb.model}:{res.profile}" if res.profile and res.profile in route.profiles else fb.model
    try:
        alt = resolve(table, sub.op, ref, machine_profile=mp if mp in route.machine_profiles else None,
                      key=sub.key, request_id=sub.request_id)
        if st.registry.serving(alt.lane) == 0:
            return None
        if not circuit_open and await st.eta.for_job(res.lane, res.route.cold_start_s, time.time()) <= fb.after_s:
            return None
        st.breakers.admit(alt.lane, alt.route, tenant_of(sub.key))
    except ApiError:  # not allowed this key, no such operation, its circuit open: keep to the lane
        return None
    alt = dataclasses.replace(alt, fallback_from=res.served_model)
    hooks.on_resolved(alt)
    return _item(table, sub, alt, hooks.trace), alt


async def _cold(st: GatewayState, table: RoutingTable, sub: Submission, item: WorkItem, res: Resolution,
                rt: Trace | None, streamed: bool) -> Outcome | ChunkStream:
    """No live worker on the lane: no_capacity for a pinned pool, else a queued job (or a hold)."""
    if res.pinned:
        raise ApiError("no_capacity",
                       f"pool {res.lane.pool!r} has no live worker for {res.lane.machine_profile}/"
                       f"{res.lane.bundle}", headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)})
    # Prefer is read only here: the hot path with a live worker never parses it.
    held = hold_seconds(sub.prefer, res.route.timeout_s)
    await _admit(st, table, sub, res)
    return await _accept(st, item, res, _life(table, sub), held, rt, streamed)


def _life(table: RoutingTable, sub: Submission) -> int:
    """How long a job may wait to start: the jobs TTL, or its X-Job-Deadline when sooner."""
    ttl = table.result_ttl_seconds
    return min(ttl, sub.deadline_s) if sub.deadline_s is not None else ttl


async def _admit(st: GatewayState, table: RoutingTable, sub: Submission, res: Resolution) -> None:
    """A job with a deadline that the lane's learned ETA already exceeds is refused before it is queued.

    Read-only (no cold-start episode is opened for work that is refused). A deadline the ETA
    allows may still pass in the queue: the worker then ends the job `expired` without running it.
    """
    if sub.deadline_s is None:
        return
    if sub.deadline_s > table.result_ttl_seconds:
        raise ApiError("bad_request", f"X-Job-Deadline {sub.deadline_s}s is past the Gateway's result TTL "
                                      f"({table.result_ttl_seconds}s): the job would be forgotten before it")
    eta = await st.eta.for_job(res.lane, res.route.cold_start_s, time.time())
    if eta > sub.deadline_s:
        raise ApiError("deadline_unreachable",
                       f"the job must start within {sub.deadline_s}s, but {res.lane.machine_profile}/"
                       f"{res.lane.bundle} in pool {res.lane.pool!r} is expected to start a worker in "
                       f"{eta:g}s; nothing was queued")


async def _run(st: GatewayState, item: WorkItem, res: Resolution, rt: Trace | None,
               sub_deadline: int | None = None) -> Outcome:
    """A worker is live: queue the item and wait for its result on our inbox.

    The waiter exists before the publish, so PubAck and result are awaited concurrently:
    a result that comes first waits in its future, and the answer still waits for the
    PubAck (nothing is answered before JetStream has stored the item). One deadline
    covers both.
    """
    timeout = res.route.timeout_s if sub_deadline is None else min(res.route.timeout_s, sub_deadline)
    item.deadline = time.time() + timeout
    waiter: asyncio.Future[Result | None] = st.dispatcher.expect_result(item)  # type: ignore[assignment]
    # A timer on the future rather than asyncio.timeout(): same deadline, far less work per request.
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    try:
        if rt is None:
            ack = await st.dispatcher.publish(item, res.lane.subject)
        else:
            rt.begin_publish(item, res.lane.subject)
            packed = st.dispatcher.pack(item)
            ack = await st.dispatcher.publish(item, res.lane.subject, packed)
            rt.published(ack, len(packed[0]))
        if ack.duplicate:
            return await _duplicate(st, item, res)
        result = await waiter
    finally:
        timer.cancel()
        waiter.cancel()
    st.breakers.record(res.lane, res.route, item.tenant, result)  # no result in time counts as a failure
    if result is None:
        raise ApiError("deadline_exceeded",
                       f"no result within {timeout:g}s; the item will not run after its deadline")
    if st.dispatcher.results is not None:  # spec.jobs.syncResultTtlSeconds: re-fetchable by request id
        await st.dispatcher.keep_sync_result(item.key, _answered_record(item, result))
    return Answered(result, res)


def _answered_record(item: WorkItem, result: Result) -> JobRecord:
    return JobRecord(id=item.id, state=result.state, model=item.model, pool=item.pool,
                     machine_profile=item.machine_profile, bundle=item.bundle, result=as_dict(result),
                     tenant=item.tenant, created_at=item.enqueued_at, op=item.op, attempt=result.attempt)


def _expire(waiter: asyncio.Future[Result | None]) -> None:
    """The deadline passed: wake the request without a result."""
    if not waiter.done():
        waiter.set_result(None)


async def _accept(st: GatewayState, item: WorkItem, res: Resolution, ttl_s: int, wait_s: int | None,
                  rt: Trace | None, streamed: bool = False) -> Outcome | ChunkStream:
    """No live worker: record the job (create-only), queue durably, answer Accepted (or the result after a hold).

    The record comes first, so a concurrent duplicate finds it and gets the same job,
    and a request id reused later never overwrites the job it already names.
    With `Prefer: wait` the item's reply also comes to our inbox, and the request waits
    for it up to `wait_s` (see hold.py); only the request that created the job holds.
    """
    item.keep_result = True
    item.deadline = time.time() + ttl_s
    held = wait_s is not None and st.holds.acquire(res.lane)
    waiter: asyncio.Future[Result | None] | None = (
        st.dispatcher.expect_result(item) if held and not streamed else None)  # type: ignore[assignment]
    # A streamed hold listens for chunks instead (sets item.reply and item.stream).
    stream = ChunkStream(st, item, res) if held and streamed else None
    handed_over = False
    eta: asyncio.Task[float] | None = None
    try:
        if rt is not None:  # the item carries the publish span's context: it is packed once, now
            rt.begin_publish(item, res.lane.subject)
        packed = st.dispatcher.pack(item)  # an item too large is refused before any record exists
        # The ETA's KV reads run alongside the record and the publish: they add no latency.
        # Only a cold lane opens a cold-start episode (queue_job() also queues on live lanes).
        eta = asyncio.create_task(st.eta.on_accept(res.lane, res.route.cold_start_s, ttl_s)
                                  if st.registry.serving(res.lane) == 0
                                  else st.eta.for_job(res.lane, res.route.cold_start_s, time.time()))
        record, revision = await st.dispatcher.create_job(item.key, JobRecord(
            id=item.id, state="queued", model=item.model, pool=item.pool, machine_profile=item.machine_profile,
            bundle=item.bundle, tenant=item.tenant, deadline=item.deadline, created_at=item.enqueued_at, op=item.op,
        ))
        if revision is None and not (record.state == "queued"
                                     and time.time() - record.updated_at < DEDUPE_WINDOW_S / 2):
            # The job exists and runs, ended, or was queued too long ago for dedup to hold: never queue it again.
            if rt is not None:
                rt.not_published(f"job {record.state}")
            return Accepted(item.id, res, await eta)
        try:
            # Ours, or a duplicate still inside the dedup window: publishing again is idempotent, and it
            # stores the item even if the first request's publish failed.
            ack = await st.dispatcher.publish(item, res.lane.subject, packed)
            if rt is not None:
                rt.published(ack, len(packed[0]))
        except ApiError:
            if revision is not None:
                await st.dispatcher.delete_job(item.key, revision)
            raise
        if stream is not None and wait_s is not None and revision is not None:
            started = time.monotonic()
            if await stream.first(wait_s):
                handed_over = True
                return stream
            return await _positioned(st, Accepted(item.id, res, remaining(await eta, time.monotonic() - started),
                                                  f"wait={wait_s}"), item.key)
        if waiter is None or wait_s is None or revision is None:
            return Accepted(item.id, res, await eta)
        outcome = await _hold(waiter, wait_s, item.id, res, await eta)
        if isinstance(outcome, Answered):
            st.breakers.record(res.lane, res.route, item.tenant, outcome.result)
        return await _positioned(st, outcome, item.key) if isinstance(outcome, Accepted) else outcome
    finally:
        if waiter is not None:
            waiter.cancel()
        if stream is not None and not handed_over:
            await stream.detach()  # the job runs on; its record gets the result
        if held:
            st.holds.release(res.lane)
        if eta is not None and not eta.done():
            eta.cancel()


async def _hold(waiter: asyncio.Future[Result | None], wait_s: int, job_id: str, res: Resolution,
                eta_s: float) -> Outcome:
    """Wait up to `wait_s` for the job's result: the result, else the job with the ETA left."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    timer = loop.call_later(wait_s, _expire, waiter)
    try:
        result = await waiter
    finally:
        timer.cancel()
    applied = f"wait={wait_s}"
    if result is None:
        return Accepted(job_id, res, remaining(eta_s, loop.time() - started), applied)
    return Answered(result, res, applied)


async def _positioned(st: GatewayState, acc: Accepted, key: str) -> Accepted:
    """A hold that ran out ends in a 202 its client cannot follow mid-body: it says where the job stands."""
    position, _ = await queue_position(st, acc.resolution.lane, key)
    return dataclasses.replace(acc, queue_position=position)


async def _duplicate(st: GatewayState, item: WorkItem, res: Resolution) -> Outcome:
    """Same request id again from the same tenant: never queue twice; point at the job when there is one."""
    record = await st.dispatcher.job(item.key)
    if record is not None:
        # Read the ETA only: opening a cold-start episode here (a worker may well be live) would
        # teach the history a "cold start" of a fraction of a second.
        return Accepted(item.id, res, await st.eta.for_job(res.lane, res.route.cold_start_s, record.updated_at))
    kept = (f" and can be fetched again with GET /v1/jobs/{item.id} for {int(st.dispatcher.sync_ttl_s())} s"
            if st.dispatcher.results is not None else "")
    raise ApiError("duplicate_request",
                   f"request id {item.id!r} was already accepted; its result went to the first caller{kept}. "
                   "Send a new X-Request-ID for new work")


def result_error(result: Result) -> ApiError:
    """A failed Result as the error every protocol answers."""
    # Messages come from the worker runtime, which never forwards exception text (see worker/process.py).
    err = result.error or {}
    message = err.get("message") or "the worker failed"
    error_id = err.get("error_id")
    if result.state == "expired":
        return ApiError("deadline_exceeded", message)
    if result.state == "cancelled":
        return ApiError("cancelled", message)
    if err.get("code") == "invalid_input":
        return ApiError("invalid_input", message, error_id=error_id)
    return ApiError("worker_error", f"{message} (after {result.attempt} attempt(s))", error_id=error_id)
