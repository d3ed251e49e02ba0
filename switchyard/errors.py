"""Error codes shared by the gateway (which raises them) and the client (which types them).

Every error leaves the gateway as `{"error": {"code", "message"}}` with the status below.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

log = logging.getLogger("switchyard.errors")

ErrorCode = Literal[
    "bad_request", "invalid_json", "invalid_request_id", "too_deep", "unsupported_operation",
    "unknown_machine_profile", "api_key_in_url", "unauthorized", "key_expired", "key_not_yet_valid", "forbidden",
    "ip_not_allowed", "too_many_auth_failures", "not_found", "unknown_model", "unknown_pool",
    "unknown_job", "unknown_planner", "method_not_allowed", "pool_expired", "incompatible_bundle",
    "duplicate_request", "job_not_finished", "cancelled", "pool_exists", "pool_protected", "too_many_pools",
    "request_timeout", "too_many_in_flight", "too_many_event_streams", "payload_too_large", "pool_too_large",
    "invalid_input", "deadline_unreachable", "client_closed_request", "internal", "worker_error", "worker_lost",
    "stream_gap", "no_capacity", "queue_unavailable", "queue_full", "pools_unavailable", "not_ready",
    "too_many_connections", "worker_starting", "circuit_open", "deadline_exceeded", "usage_range_too_large",
    "rate_limited", "quota_exceeded", "concurrency_limited", "limits_unavailable", "policy_unavailable",
]

# code -> HTTP status; tests/unit/test_error_codes.py keeps it, ErrorCode and every ApiError("...") in step.
STATUS: Mapping[str, int] = {
    "bad_request": 400,
    "invalid_json": 400,
    "invalid_request_id": 400,
    "too_deep": 400,  # arrays and objects nested past switchyard.jsondepth.MAX_JSON_DEPTH
    "unsupported_operation": 400,
    "unknown_machine_profile": 400,
    "api_key_in_url": 400,  # a query parameter named like a key (api_key, token...): keys go in headers only
    "unauthorized": 401,
    "key_expired": 401,  # past the key's notAfter, or its rotation's sunsetAt
    "key_not_yet_valid": 401,  # before the key's notBefore
    "forbidden": 403,
    "ip_not_allowed": 403,  # the client IP is outside the key's allowedCidrs
    "too_many_auth_failures": 429,  # spec.auth.maxFailuresPerMinute unknown keys from this client IP (Retry-After)
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
    "rate_limited": 429,  # spec.policy: a requests, items or tokens limit of the window is used up (Retry-After)
    "quota_exceeded": 429,  # spec.policy: a daily or monthly quota is used up (Retry-After: the period's end)
    "concurrency_limited": 429,  # spec.policy: the concurrent-requests limit is reached, across every replica
    "payload_too_large": 413,
    "usage_range_too_large": 413,  # GET /v1/usage: the range holds more ledger records than one request may sum
    "pool_too_large": 422,  # reserves more workers than spec.poolApi.maxWorkersPerPool
    "invalid_input": 422,  # the worker refused the items (a permanent error)
    "deadline_unreachable": 422,  # X-Job-Deadline shorter than the lane's learned ETA: refused at admission
    "client_closed_request": 499,  # never sent (the client left); as nginx logs it, for counters and access logs
    "internal": 500,
    "worker_error": 502,  # the worker failed on every attempt
    "worker_lost": 502,  # a streaming worker died after chunks were sent (gateway/streaming.py)
    "stream_gap": 502,  # a streamed chunk never arrived: the stream ends rather than skip it
    "no_capacity": 503,  # pinned pool without a live worker
    "queue_unavailable": 503,  # NATS unreachable: never bypassed
    "queue_full": 503,  # the work stream is at spec.queue limits: nothing accepted is dropped for it
    "pools_unavailable": 503,  # the pool store (NATS KV, or the Kubernetes API in cluster mode) cannot be reached now
    "not_ready": 503,  # no routing table loaded yet
    "limits_unavailable": 503,  # spec.policy limits cannot be counted (NATS away): limited requests fail closed
    "policy_unavailable": 503,  # spec.policy names a stage this gateway does not have installed: nothing runs
    "too_many_connections": 503,  # spec.listeners.http.maxConnections reached; the connection is closed
    "worker_starting": 503,  # the OpenAI API's answer for a cold lane (its SDKs retry a 503 after Retry-After)
    "circuit_open": 503,  # the lane's workers failed spec.circuitBreaker.consecutiveFailures times in a row
    "deadline_exceeded": 504,
}


class ApiError(Exception):
    """An error answer: status, stable code, human message, optional headers."""

    def __init__(self, code: ErrorCode, message: str, *, status: int | None = None,
                 headers: Mapping[str, str] | None = None, error_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        if code not in STATUS:  # a code from outside (a worker's, a stored run's): say so, never silently
            log.error("an error code missing from the status table answers 500", extra={"code": code})
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
