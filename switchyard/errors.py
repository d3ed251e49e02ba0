"""Error codes shared by the gateway (which raises them) and the client (which types them).

Every error leaves the gateway as `{"error": {"code", "message"}}` with the status below.
"""

from __future__ import annotations

from typing import Mapping

# code -> HTTP status
STATUS: Mapping[str, int] = {
    "bad_request": 400,
    "invalid_json": 400,
    "invalid_request_id": 400,
    "too_deep": 400,  # arrays and objects nested past switchyard.jsondepth.MAX_JSON_DEPTH
    "unsupported_operation": 400,
    "unknown_machine_profile": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_model": 404,
    "unknown_pool": 404,
    "unknown_job": 404,
    "unknown_planner": 404,  # POST /v1/plans/{planner}: no such Planner on this Gateway
    "method_not_allowed": 405,
    "pool_expired": 410,  # its Lease was not renewed in time
    "incompatible_bundle": 409,
    "duplicate_request": 409,
    "job_not_finished": 409,  # DELETE /v1/jobs/{id} of a job still queued or running: cancel it first
    "cancelled": 409,  # the job was cancelled (POST /v1/jobs/{id}/cancel) while a request held it
    "pool_exists": 409,  # POST /v1/pools: the name is taken (by any tenant) with another spec
    "pool_protected": 409,  # the default pool, or one declared in manifests: not managed through /v1/pools
    "too_many_pools": 409,  # the tenant holds spec.poolApi.maxPoolsPerTenant pools already
    "request_timeout": 408,  # request line, headers or body not received in time (spec.listeners.http)
    "too_many_in_flight": 429,  # /v1/ws: the connection's requests in flight are at its cap
    "too_many_event_streams": 429,  # GET /v1/events: the tenant's open streams on this gateway are at the cap
    "payload_too_large": 413,
    "pool_too_large": 422,  # reserves more workers than spec.poolApi.maxWorkersPerPool
    "invalid_input": 422,  # the worker refused the items (a permanent error)
    "deadline_unreachable": 422,  # X-Job-Deadline shorter than the lane's learned ETA: refused at admission
    "internal": 500,
    "worker_error": 502,  # the worker failed on every attempt
    "worker_lost": 502,  # a streaming worker died after chunks were sent (gateway/streaming.py)
    "stream_gap": 502,  # a streamed chunk never arrived: the stream ends rather than skip it
    "no_capacity": 503,  # pinned pool without a live worker
    "queue_unavailable": 503,  # NATS unreachable: never bypassed
    "queue_full": 503,  # the work stream is at spec.queue limits: nothing accepted is dropped for it
    "pools_unavailable": 503,  # the pool store (NATS KV, or the Kubernetes API in cluster mode) cannot be reached now
    "not_ready": 503,  # no routing table loaded yet
    "too_many_connections": 503,  # spec.listeners.http.maxConnections reached; the connection is closed
    "deadline_exceeded": 504,
}


class ApiError(Exception):
    """An error answer: status, stable code, human message, optional headers."""

    def __init__(self, code: str, message: str, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None, error_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS.get(code, 500)
        self.headers = dict(headers or {})
        self.error_id = error_id  # names the log line that holds the detail

    def body(self) -> dict[str, dict[str, str]]:
        err = {"code": self.code, "message": self.message}
        if self.error_id:
            err["error_id"] = self.error_id
        return {"error": err}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"
