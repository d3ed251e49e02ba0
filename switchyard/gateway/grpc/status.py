"""An ApiError as a gRPC status: the code mapped from its HTTP status, the Switchyard code in the trailers."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from ...errors import ApiError

# HTTP status -> gRPC code. 409/410 (duplicate request, pool exists or expired) are a state the
# caller must change first: FAILED_PRECONDITION. 422 (the worker refused the items) is bad input.
BY_STATUS: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    410: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Where the code says more than its status: a full queue is space exhausted, not a server away.
BY_CODE: Mapping[str, grpc.StatusCode] = {"queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED}

ERROR_CODE = "switchyard-error-code"
ERROR_ID = "switchyard-error-id"


def grpc_code(err: ApiError) -> grpc.StatusCode:
    # 500 (internal) and 502 (worker_error: the worker failed on every attempt, retrying is no use): INTERNAL.
    return BY_CODE.get(err.code) or BY_STATUS.get(err.status, grpc.StatusCode.INTERNAL)


def trailers(err: ApiError) -> tuple[tuple[str, str], ...]:
    """switchyard-error-code always; the error id and Retry-After (as `retry-after`) when the error has them."""
    out: list[tuple[str, str]] = [(ERROR_CODE, err.code)]
    if err.error_id:
        out.append((ERROR_ID, err.error_id))
    retry = err.headers.get("Retry-After")
    if retry:
        out.append(("retry-after", retry))
    return tuple(out)
