"""GET /v1/jobs/{id}: the state of an item accepted with 202, from the jobs bucket."""

from __future__ import annotations

from aiohttp import web

from ..errors import ApiError
from ..messages import Result
from .auth import authenticate
from .http import REQUEST_ID, json_response
from .inference import result_body
from .state import state_of


async def get_job(request: web.Request) -> web.Response:
    st = state_of(request)
    authenticate(st.table(), request.headers.get("Authorization"))
    job_id = request.match_info["id"]
    if not REQUEST_ID.match(job_id):
        raise ApiError("unknown_job", f"no job {job_id!r}")
    record = await st.dispatcher.job(job_id)
    if record is None:
        raise ApiError("unknown_job", f"no job {job_id!r} (results are kept for a limited time)")
    result = None
    if record.result is not None:
        result = result_body(Result(**{k: v for k, v in record.result.items() if k != "v"}), record.model)
    return json_response({
        "id": record.id, "state": record.state, "result": result, "model": record.model,
        "pool": record.pool, "machine_profile": record.machine_profile, "bundle": record.bundle,
        "updated_at": record.updated_at,
    })
