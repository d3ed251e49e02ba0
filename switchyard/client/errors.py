"""Typed exceptions for gateway errors.

The gateway answers every error as `{"error": {"code", "message"}}`; the class is
picked by code first (stable, specific), then by HTTP status (for codes this SDK
does not know yet, and for non-JSON bodies from proxies in front of the gateway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import STATUS

__all__ = [
    "SwitchyardError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "UnknownModel",
    "UnknownPool", "UnknownJob", "Conflict", "IncompatibleBundle", "DuplicateRequest",
    "PayloadTooLarge", "InvalidInput", "ServerError", "WorkerError", "Unavailable", "NoCapacity",
    "QueueUnavailable", "NotReady", "DeadlineExceeded", "CapacityTimeout", "TransportError",
    "RequestTimeout", "PoolExpired", "PoolExists", "PoolProtected", "TooManyPools", "PoolTooLarge",
    "JobNotFinished", "DeadlineUnreachable", "JobCancelled", "error_for", "error_from_response",
]


class SwitchyardError(Exception):
    """Any error from the gateway or the SDK.

    `status` is the HTTP status, or 0 when the error arose in the client (a lost
    connection, a timeout). `request_id` is the X-Request-ID the gateway echoed.
    """

    default_status = 0
    default_code = "error"

    def __init__(self, status: int | None = None, code: str | None = None, message: str = "",
                 request_id: str | None = None, *, retry_after: float | None = None,
                 error_id: str | None = None) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
        self.code = code or self.default_code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after  # seconds the gateway asked us to wait, if it said
        self.error_id = error_id  # a worker failure's id: its detail is in the worker's log

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status else ""
        return f"{status}{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(status={self.status}, code={self.code!r}, "
                f"message={self.message!r}, request_id={self.request_id!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive Exception's default pickling
        # (multiprocessing, concurrent.futures); rebuild from our own fields.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[SwitchyardError], state: dict[str, Any]) -> SwitchyardError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class BadRequest(SwitchyardError):
    default_status, default_code = 400, "bad_request"


class Unauthorized(SwitchyardError):
    default_status, default_code = 401, "unauthorized"


class Forbidden(SwitchyardError):
    default_status, default_code = 403, "forbidden"


class NotFound(SwitchyardError):
    default_status, default_code = 404, "not_found"


class UnknownModel(NotFound):
    default_code = "unknown_model"


class UnknownPool(NotFound):
    default_code = "unknown_pool"


class UnknownJob(NotFound):
    default_code = "unknown_job"


class Conflict(SwitchyardError):
    default_status, default_code = 409, "conflict"


class IncompatibleBundle(Conflict):
    default_code = "incompatible_bundle"


class DuplicateRequest(Conflict):
    default_code = "duplicate_request"


class PoolExists(Conflict):
    """create_pool: the name is taken (by any tenant) with another spec."""

    default_code = "pool_exists"


class PoolProtected(Conflict):
    """The default pool, or a pool declared in the gateway's manifests: not managed through the API."""

    default_code = "pool_protected"


class TooManyPools(Conflict):
    """The tenant holds as many pools as the gateway allows (spec.poolApi.maxPoolsPerTenant)."""

    default_code = "too_many_pools"


class JobNotFinished(Conflict):
    """delete_job: the job is still queued or running; cancel it first."""

    default_code = "job_not_finished"


class PoolExpired(SwitchyardError):
    """410: the pool's lease lapsed; a renewal cannot revive it. Delete it and create it again."""

    default_status, default_code = 410, "pool_expired"


class PoolTooLarge(SwitchyardError):
    """The pool reserves more workers than the gateway allows (spec.poolApi.maxWorkersPerPool)."""

    default_status, default_code = 422, "pool_too_large"


class PayloadTooLarge(SwitchyardError):
    default_status, default_code = 413, "payload_too_large"


class DeadlineUnreachable(SwitchyardError):
    """The job's deadline is shorter than the lane's learned ETA: refused, nothing was queued."""

    default_status, default_code = 422, "deadline_unreachable"


class JobCancelled(SwitchyardError):
    """The job was cancelled (cancel_job) before it finished."""

    default_status, default_code = 409, "cancelled"


class InvalidInput(SwitchyardError):
    """The worker refused the items: permanent, do not resend them unchanged."""

    default_status, default_code = 422, "invalid_input"


class ServerError(SwitchyardError):
    """A 5xx with no more specific class (e.g. 500 internal)."""

    default_status, default_code = 500, "internal"


class WorkerError(ServerError):
    default_status, default_code = 502, "worker_error"


class Unavailable(ServerError):
    """503: try again later; `retry_after` is the gateway's hint in seconds."""

    default_status, default_code = 503, "unavailable"


class NoCapacity(Unavailable):
    """A pinned pool has no live worker (an unpinned request would get a 202 instead)."""

    default_code = "no_capacity"


class QueueUnavailable(Unavailable):
    default_code = "queue_unavailable"


class NotReady(Unavailable):
    default_code = "not_ready"


class DeadlineExceeded(ServerError):
    default_status, default_code = 504, "deadline_exceeded"


class CapacityTimeout(SwitchyardError):
    """wait_for_capacity gave up. The job is still queued server side: poll `job_id` later."""

    default_code = "capacity_timeout"

    def __init__(self, job_id: str, waited_s: float, state: str | None = None,
                 request_id: str | None = None) -> None:
        last = f"; last state {state!r}" if state else ""
        super().__init__(0, None, f"no result for job {job_id!r} after {waited_s:.1f}s{last}; "
                         "the job keeps running, poll it with job()/wait_for_job()", request_id)
        self.job_id = job_id
        self.waited_s = waited_s
        self.state = state


class TransportError(SwitchyardError):
    """The gateway could not be reached, or the connection broke (after retries)."""

    default_code = "connection_error"


class RequestTimeout(TransportError):
    """No complete answer within the client's `timeout`; the request may still run."""

    default_code = "timeout"


# Codes with a class narrower than their status's; every other code goes by status.
_BY_CODE: dict[str, type[SwitchyardError]] = {
    cls.default_code: cls
    for cls in (UnknownModel, UnknownPool, UnknownJob, IncompatibleBundle, DuplicateRequest,
                NoCapacity, QueueUnavailable, NotReady, PoolExists, PoolProtected, TooManyPools, PoolTooLarge,
                JobNotFinished, DeadlineUnreachable, JobCancelled)
}

_BY_STATUS: dict[int, type[SwitchyardError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: PoolExpired,
    413: PayloadTooLarge, 422: InvalidInput, 502: WorkerError, 503: Unavailable, 504: DeadlineExceeded,
}


def error_for(status: int | None, code: str, message: str, request_id: str | None = None, *,
              retry_after: float | None = None, error_id: str | None = None) -> SwitchyardError:
    """The typed error for a code; `status=None` takes the code's status (job results carry none)."""
    # "cancelled" is a job's outcome, not a gateway answer: its class says its status
    by_code = _BY_CODE.get(code)
    answered = status if status is not None else STATUS.get(code) or (by_code.default_status if by_code else 500)
    cls = by_code or _BY_STATUS.get(answered)
    if cls is None:
        cls = ServerError if answered >= 500 else SwitchyardError
    return cls(answered, code, message, request_id, retry_after=retry_after, error_id=error_id)


def error_from_response(status: int, body: bytes, headers: Mapping[str, str], *,
                        reason: str | None = None, retry_after: float | None = None) -> SwitchyardError:
    """Build the error for a non-2xx answer, JSON or not."""
    request_id = headers.get("X-Request-ID")
    parsed = _error_object(body)
    if parsed is not None:
        code, message, error_id = parsed
        return error_for(status, code, message, request_id, retry_after=retry_after, error_id=error_id)
    # Not our envelope: a proxy, a load balancer, or a crash. Keep a readable snippet.
    snippet = body[:300].decode("utf-8", "replace").strip() or "<empty body>"
    message = f"HTTP {status}{' ' + reason if reason else ''} without a Switchyard error body: {snippet}"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else SwitchyardError)
    return cls(status, f"http_{status}", message, request_id, retry_after=retry_after)


def _error_object(body: bytes) -> tuple[str, str, str | None] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        return None
    error_id = err.get("error_id")
    return err["code"], str(err.get("message", "")), error_id if isinstance(error_id, str) else None
