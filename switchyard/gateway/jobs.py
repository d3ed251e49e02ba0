"""One job: GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel, DELETE /v1/jobs/{id}, from the jobs bucket.

describe_job(), cancel() and delete() are the rules; the HTTP handlers here, gRPC (grpc/service.py)
and WebSocket (websocket.py) only translate them.

A job belongs to the tenant whose request made it. Another tenant gets the same
404 as for a job that never existed, so ids cannot be probed; an admin key reads
(and cancels, and deletes) any tenant's job by naming the tenant (`?tenant=`).

Every change is a compare-and-set on the record's revision, so a cancel racing the worker's
final write either wins (the worker's write then fails, and it stops) or finds the job ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..api.table import DEFAULT_COLD_START_S, KeyRoute
from ..errors import ApiError
from ..messages import JobRecord, Result
from ..subjects import Lane, job_key
from .auth import authenticate_request, tenant_of
from .http import REQUEST_ID, json_response
from .inference import result_body
from .progress import POSITION_SCAN_MAX, queue_position
from .state import GatewayState, state_of

# A record still open this long past its item's deadline was lost with a gateway that
# died between recording and queueing it: report it expired rather than queued forever.
EXPIRY_GRACE_S = 60.0

# Hook for Planner runs (kind "plan"): their steps, from the runs bucket. The Planner part of
# issue 11 sets it (gateway/plans.py: `run_steps(st, key)`); until then a run shows no steps.
RunSteps = Callable[[GatewayState, str], Awaitable["list[dict[str, object]] | None"]]
run_steps_hook: RunSteps | None = None


async def get_job(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate_request(request, st.table())
    return json_response(await describe_job(st, key, request.match_info["id"], request.query.get("tenant")))


async def cancel_job(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate_request(request, st.table())
    return json_response(await cancel(st, key, request.match_info["id"], request.query.get("tenant")))


async def delete_job(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate_request(request, st.table())
    return json_response(await delete(st, key, request.match_info["id"], request.query.get("tenant")))


async def cancel(st: GatewayState, key: KeyRoute | None, job_id: str, asked: str | None) -> dict[str, object]:
    """A queued job never runs; a running one is told to stop through NATS; a final one stays as it is.

    Every protocol's cancel (HTTP here, gRPC's CancelJob, WebSocket's job.cancel): the job's view
    with `cancelled` and a `message`; unknown_job when not the key's to touch. Shielded: a caller that
    leaves (a gRPC client gone, a WebSocket closing with the call in flight) between the record's
    change and the worker's signal must not leave a job marked cancelled whose worker was never told.
    """
    return await asyncio.shield(_cancel(st, key, job_id, asked))


async def _cancel(st: GatewayState, key: KeyRoute | None, job_id: str, asked: str | None) -> dict[str, object]:
    jkey = _job_key(key, job_id, asked, write=True)
    while True:
        found = await st.dispatcher.job_entry(jkey)
        if found is None:
            raise ApiError("unknown_job", f"no job {job_id!r}")
        record, revision = found
        if record.final or _lapsed(record):
            body = record_view(record)
            body["cancelled"] = False
            body["message"] = f"job {job_id!r} already ended ({body['state']}); nothing to cancel"
            return body
        was = record.state
        record.state, record.updated_at = "cancelled", time.time()
        record.result = {"id": record.id, "ok": False, "state": "cancelled", "attempt": record.attempt,
                         "error": {"code": "cancelled", "message": f"cancelled through the API while {was}"}}
        if await st.dispatcher.update_job(jkey, record, revision):
            break  # else a worker moved it on meanwhile: look again
    if was != "queued" or record.kind == "plan":
        await st.dispatcher.cancel_job_signal(jkey)  # its worker (or Planner run) stops; a queued item is skipped
    body = record_view(record)
    body["cancelled"] = True
    body["message"] = ("the job will not run" if was == "queued"
                       else "the job's worker was told to stop; it ends cancelled")
    return body


async def delete(st: GatewayState, key: KeyRoute | None, job_id: str, asked: str | None) -> dict[str, object]:
    """Remove a final job's record and result; a job still queued or running is refused (cancel it first).

    Every protocol's delete (HTTP here, gRPC's DeleteJob, WebSocket's job.delete).
    """
    jkey = _job_key(key, job_id, asked, write=True)
    found = await st.dispatcher.job_entry(jkey)
    if found is None:
        raise ApiError("unknown_job", f"no job {job_id!r}")
    record, revision = found
    if not (record.final or _lapsed(record)):
        raise ApiError("job_not_finished", f"job {job_id!r} is {record.state}: cancel it first, then delete it")
    if not await st.dispatcher.purge_job(jkey, revision):
        raise ApiError("job_not_finished", f"job {job_id!r} changed while being deleted; try again")
    return {"id": job_id, "deleted": True}


def _job_key(key: KeyRoute | None, job_id: str, asked: str | None, write: bool = False) -> str:
    """The bucket key of the job this key may touch: its own tenant's; a key with readAllJobs names any
    to read, an admin key any to cancel or delete too."""
    tenant = tenant_of(key)
    if asked is not None and key is not None and (key.admin if write else key.can("readAllJobs")):
        tenant = asked
    if not REQUEST_ID.match(job_id) or not REQUEST_ID.match(tenant):
        raise ApiError("unknown_job", f"no job {job_id!r}")
    return job_key(tenant, job_id)


async def describe_job(st: GatewayState, key: KeyRoute | None, job_id: str, asked: str | None) -> dict[str, object]:
    """The job as every protocol reports it (HTTP here, gRPC's GetJob); unknown_job when not the key's to read."""
    jkey = _job_key(key, job_id, asked)
    record = await st.dispatcher.job(jkey) or await st.dispatcher.sync_result(jkey)  # a 200's answer, for a while
    if record is None:
        raise ApiError("unknown_job", f"no job {job_id!r} (results are kept for a limited time)")
    body = record_view(record)
    if body["state"] == "queued" and record.kind == "item":
        route = st.table().models.get(record.model)
        lane = Lane(record.model, record.bundle, record.machine_profile, record.pool)
        default_s = route.cold_start_s if route else DEFAULT_COLD_START_S  # a model since removed
        body["estimated_wait_s"] = await st.eta.for_job(lane, default_s, record.updated_at)
        position, beyond = await queue_position(st, lane, jkey)
        body["queue_position"] = position
        if beyond:  # counted only so deep: each item ahead is read (progress.py)
            body["queue_note"] = f"more than {POSITION_SCAN_MAX} items ahead"
    if record.kind == "plan" and run_steps_hook is not None:
        body["steps"] = await run_steps_hook(st, jkey)
    return body


def _lapsed(record: JobRecord) -> bool:
    return bool(record.deadline) and time.time() > record.deadline + EXPIRY_GRACE_S


def record_view(record: JobRecord) -> dict[str, object]:
    """A job record as GET /v1/jobs/{id} and GET /v1/jobs show it (without the queued ETA and position)."""
    state = record.state
    if not record.final and _lapsed(record):
        state = "expired"
    result = None
    attempts = record.attempt
    if record.result is not None:
        fields = {k: v for k, v in record.result.items() if k in Result.__slots__}
        result = result_body(Result(**fields), record.model)
        attempts = max(attempts, int(record.result.get("attempt") or 0))
    body: dict[str, object] = {
        "id": record.id, "kind": record.kind, "state": state, "result": result, "model": record.model,
        "op": record.op or None, "pool": record.pool, "machine_profile": record.machine_profile,
        "bundle": record.bundle, "attempts": attempts, "created_at": record.created_at or None,
        "started_at": record.started_at or None, "updated_at": record.updated_at,
        "deadline": record.deadline or None,
    }
    if record.history:
        body["history"] = record.history
    return body
