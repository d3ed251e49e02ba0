"""GET /v1/jobs/{id}: the state of an item accepted with 202, from the jobs bucket.

A job belongs to the tenant whose request made it. Another tenant gets the same
404 as for a job that never existed, so ids cannot be probed; an admin key reads
any tenant's job by naming the tenant (`?tenant=`).
"""

from __future__ import annotations

import time

from aiohttp import web

from ..api.table import DEFAULT_COLD_START_S, KeyRoute
from ..errors import ApiError
from ..messages import JobRecord, Result
from ..subjects import Lane, job_key
from .auth import authenticate, tenant_of
from .http import REQUEST_ID, json_response
from .inference import result_body
from .state import GatewayState, state_of

# A record still open this long past its item's deadline was lost with a gateway that
# died between recording and queueing it: report it expired rather than queued forever.
EXPIRY_GRACE_S = 60.0


async def get_job(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate(st.table(), request.headers.get("Authorization"))
    return json_response(await describe_job(st, key, request.match_info["id"], request.query.get("tenant")))


async def describe_job(st: GatewayState, key: KeyRoute | None, job_id: str, asked: str | None) -> dict[str, object]:
    """The job as every protocol reports it (HTTP here, gRPC's GetJob); unknown_job when not the key's to read."""
    tenant = tenant_of(key)
    if asked is not None and key is not None and key.admin:
        tenant = asked
    if not REQUEST_ID.match(job_id) or not REQUEST_ID.match(tenant):
        raise ApiError("unknown_job", f"no job {job_id!r}")
    record = await st.dispatcher.job(job_key(tenant, job_id))
    if record is None:
        raise ApiError("unknown_job", f"no job {job_id!r} (results are kept for a limited time)")
    body = record_view(record)
    if body["state"] == "queued":
        route = st.table().models.get(record.model)
        lane = Lane(record.model, record.bundle, record.machine_profile, record.pool)
        default_s = route.cold_start_s if route else DEFAULT_COLD_START_S  # a model since removed
        body["estimated_wait_s"] = await st.eta.for_job(lane, default_s, record.updated_at)
    return body


def record_view(record: JobRecord) -> dict[str, object]:
    """A job record as GET /v1/jobs/{id} shows it (without the queued ETA)."""
    state = record.state
    if not record.final and record.deadline and time.time() > record.deadline + EXPIRY_GRACE_S:
        state = "expired"
    result = None
    if record.result is not None:
        result = result_body(Result(**{k: v for k, v in record.result.items() if k != "v"}), record.model)
    return {
        "id": record.id, "state": state, "result": result, "model": record.model,
        "pool": record.pool, "machine_profile": record.machine_profile, "bundle": record.bundle,
        "updated_at": record.updated_at,
    }
