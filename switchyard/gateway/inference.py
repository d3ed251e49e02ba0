"""POST /v1/{op}/{model}: resolve, queue on JetStream, answer with the worker's result."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..api.table import RoutingTable
from ..api.upstream import Operation
from ..errors import ApiError
from ..messages import JobRecord, Result, WorkItem
from ..subjects import DEDUPE_WINDOW_S
from .auth import authenticate, tenant_of
from .eta import remaining, retry_after
from .hold import hold_seconds
from .http import MACHINE_PROFILE, RID, json_response, read_json
from .resolve import Resolution, resolve, split_machine_profile
from .state import GatewayState, state_of
from .tracing import Trace, traced

OPERATIONS = frozenset(Operation.__args__)  # type: ignore[attr-defined]
MAX_ITEMS = 10_000
NO_CAPACITY_RETRY_AFTER_S = 10


async def infer(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    table = st.table()  # this request keeps this table, whatever reloads meanwhile
    if table.tracing is None:  # all that tracing costs while it is off
        return await _infer(request, st, table, None)
    return await traced(table.tracing, request, lambda rt: _infer(request, st, table, rt))


async def _infer(request: web.Request, st: GatewayState, table: RoutingTable,
                 rt: Trace | None) -> web.Response:
    op, model_ref = request.match_info["op"], request.match_info["model"]
    if op not in OPERATIONS:
        if op == "configs":
            raise ApiError("method_not_allowed", "config endpoints are read-only on the gateway")
        raise ApiError("not_found", f"unknown operation {op!r} (operations: {', '.join(sorted(OPERATIONS))})")
    key = authenticate(table, request.headers.get("Authorization"))
    items, params = _body(await read_json(request, table.max_request_body_bytes))
    h = request.headers
    # An expired pool may already be gone from the table: say why before resolving.
    st.check_pool(split_machine_profile(h.get("X-Machine-Profile"), h.get("X-Pool"))[1] or "")
    res = resolve(table, op, model_ref, machine_profile=h.get("X-Machine-Profile"), pool=h.get("X-Pool"),
                  bundle=h.get("X-Bundle"), key=key)
    request[MACHINE_PROFILE] = res.lane.machine_profile
    st.check_pool(res.lane.pool)
    rid = request[RID]
    item = WorkItem(
        id=rid, op=op, model=res.lane.model, bundle=res.lane.bundle, machine_profile=res.lane.machine_profile,
        pool=res.lane.pool, items=items, params=res.params(params), profile=res.profile,
        max_attempts=res.route.max_attempts, tenant=tenant_of(key),
    )
    if rt is not None:
        rt.resolved(item)
    if st.registry.serving(res.lane) == 0:
        if res.pinned:
            raise ApiError("no_capacity",
                           f"pool {res.lane.pool!r} has no live worker for {res.lane.machine_profile}/"
                           f"{res.lane.bundle}", headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)})
        # Prefer is read only here: the hot path with a live worker never parses it.
        held = hold_seconds(h.getall("Prefer", ()), res.route.timeout_s)
        return await _accept(st, item, res, table.result_ttl_seconds, model_ref, held, rt)
    return await _run(st, item, res, model_ref, rt)


def _body(body: Any) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(body, dict):
        raise ApiError("bad_request", 'body must be a JSON object like {"items": [...], "params": {...}}')
    unknown = set(body) - {"items", "params"}
    if unknown:
        raise ApiError("bad_request", f"unknown body field(s): {', '.join(sorted(unknown))}")
    items, params = body.get("items"), body.get("params", {})
    if not isinstance(items, list) or not items:
        raise ApiError("bad_request", '"items" must be a non-empty array')
    if len(items) > MAX_ITEMS:
        raise ApiError("bad_request", f'"items" holds {len(items)} entries; the limit is {MAX_ITEMS}')
    if not isinstance(params, dict):
        raise ApiError("bad_request", '"params" must be an object')
    return items, params


async def _run(st: GatewayState, item: WorkItem, res: Resolution, model_ref: str,
               rt: Trace | None) -> web.Response:
    """A worker is live: queue the item and wait for its result on our inbox.

    The waiter exists before the publish, so PubAck and result are awaited concurrently:
    a result that comes first waits in its future, and the answer still waits for the
    PubAck (nothing is answered before JetStream has stored the item). One deadline
    covers both.
    """
    timeout = res.route.timeout_s
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
    if result is None:
        raise ApiError("deadline_exceeded",
                       f"no result within {timeout:g}s; the item will not run after its deadline")
    return _result_response(result, model_ref)


def _expire(waiter: asyncio.Future[Result | None]) -> None:
    """The deadline passed: wake the request without a result."""
    if not waiter.done():
        waiter.set_result(None)


async def _accept(st: GatewayState, item: WorkItem, res: Resolution, ttl_s: int, model_ref: str,
                  wait_s: int | None, rt: Trace | None) -> web.Response:
    """No live worker: record the job (create-only), queue durably, answer 202 (or 200 after a hold).

    The record comes first, so a concurrent duplicate finds it and gets the same 202,
    and a request id reused later never overwrites the job it already names.
    With `Prefer: wait` the item's reply also comes to our inbox, and the request waits
    for it up to `wait_s` (see hold.py); only the request that created the job holds.
    """
    item.keep_result = True
    item.deadline = time.time() + ttl_s
    held = wait_s is not None and st.holds.acquire(res.lane)
    waiter: asyncio.Future[Result | None] | None = (
        st.dispatcher.expect_result(item) if held else None)  # type: ignore[assignment]  # sets item.reply
    eta: asyncio.Task[float] | None = None
    try:
        if rt is not None:  # the item carries the publish span's context: it is packed once, now
            rt.begin_publish(item, res.lane.subject)
        packed = st.dispatcher.pack(item)  # an item too large is refused before any record exists
        # The ETA's KV reads run alongside the record and the publish: they add no latency.
        eta = asyncio.create_task(st.eta.on_accept(res.lane, res.route.cold_start_s, ttl_s))
        record, revision = await st.dispatcher.create_job(item.key, JobRecord(
            id=item.id, state="queued", model=item.model, pool=item.pool, machine_profile=item.machine_profile,
            bundle=item.bundle, tenant=item.tenant, deadline=item.deadline,
        ))
        if revision is None and not (record.state == "queued"
                                     and time.time() - record.updated_at < DEDUPE_WINDOW_S / 2):
            # The job exists and runs, ended, or was queued too long ago for dedup to hold: never queue it again.
            if rt is not None:
                rt.not_published(f"job {record.state}")
            return _accepted(item.id, res, await eta)
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
        if waiter is None or wait_s is None or revision is None:
            return _accepted(item.id, res, await eta)
        return await _hold(waiter, wait_s, item.id, res, model_ref, await eta)
    finally:
        if waiter is not None:
            waiter.cancel()
        if held:
            st.holds.release(res.lane)
        if eta is not None and not eta.done():
            eta.cancel()


async def _hold(waiter: asyncio.Future[Result | None], wait_s: int, job_id: str, res: Resolution,
                model_ref: str, eta_s: float) -> web.Response:
    """Wait up to `wait_s` for the job's result: 200 with it, else the 202 with the ETA left."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    timer = loop.call_later(wait_s, _expire, waiter)
    try:
        result = await waiter
    finally:
        timer.cancel()
    applied = {"Preference-Applied": f"wait={wait_s}"}
    if result is None:
        return _accepted(job_id, res, remaining(eta_s, loop.time() - started), applied)
    return _result_response(result, model_ref, applied)


async def _duplicate(st: GatewayState, item: WorkItem, res: Resolution) -> web.Response:
    """Same X-Request-ID again from the same tenant: never queue twice; point at the job when there is one."""
    record = await st.dispatcher.job(item.key)
    if record is not None:
        # Read the ETA only: opening a cold-start episode here (a worker may well be live) would
        # teach the history a "cold start" of a fraction of a second.
        return _accepted(item.id, res, await st.eta.for_job(res.lane, res.route.cold_start_s, record.updated_at))
    raise ApiError("duplicate_request",
                   f"request id {item.id!r} was already accepted; its result went to the first caller. "
                   "Send a new X-Request-ID for new work")


def _accepted(job_id: str, res: Resolution, eta_s: float, headers: dict[str, str] | None = None) -> web.Response:
    # Retry-After is the ETA rounded up: the earliest time a worker is expected, learned per lane (eta.py).
    return json_response(
        {"status": "provisioning", "job_id": job_id, "machine_profile": res.lane.machine_profile,
         "bundle": res.lane.bundle, "pool": res.lane.pool, "estimated_wait_s": eta_s,
         "message": f"no live worker for {res.lane.machine_profile}/{res.lane.bundle} in pool "
                    f"{res.lane.pool!r}; the item is queued and runs when one starts"},
        status=202,
        headers={"Retry-After": str(retry_after(eta_s)), "Location": f"/v1/jobs/{job_id}", **(headers or {})},
    )


def result_body(result: Result, model: str) -> dict[str, Any]:
    if result.ok:
        return {"id": result.id, "model": model, "items": result.items, "worker": result.worker,
                "timing": {**result.timing, "attempt": result.attempt}}
    return {"error": result.error or {"code": "worker_error", "message": "worker failed"}}


def result_error(result: Result) -> ApiError:
    # Messages come from the worker runtime, which never forwards exception text (see worker/process.py).
    err = result.error or {}
    message = err.get("message") or "the worker failed"
    error_id = err.get("error_id")
    if result.state == "expired":
        return ApiError("deadline_exceeded", message)
    if err.get("code") == "invalid_input":
        return ApiError("invalid_input", message, error_id=error_id)
    return ApiError("worker_error", f"{message} (after {result.attempt} attempt(s))", error_id=error_id)


def _result_response(result: Result, model: str, headers: dict[str, str] | None = None) -> web.Response:
    if not result.ok:
        err = result_error(result)
        err.headers.update(headers or {})
        raise err
    return json_response(result_body(result, model), headers=headers)
