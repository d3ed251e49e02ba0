"""Errors on the OpenAI paths: `{"error": {"message", "type", "param", "code"}}`, native status codes.

OpenAI's SDKs pick their exception class from the status (401 AuthenticationError, 404
NotFoundError, ...), so the status stays the native one; `code` stays the native stable code
and `type` is OpenAI's family for that status.
"""

from __future__ import annotations

from aiohttp import web

from ...errors import ApiError
from ..http import json_response

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error", 409: "conflict_error",
          410: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error"}


class OpenAiError(ApiError):
    """An ApiError that names the offending body field (OpenAI's `param`)."""

    def __init__(self, code: str, message: str, *, param: str | None = None, **kw: object) -> None:
        super().__init__(code, message, **kw)  # type: ignore[arg-type]
        self.param = param


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error_response(exc: ApiError) -> web.Response:
    err: dict[str, object] = {"message": exc.message, "type": error_type(exc.status),
                              "param": getattr(exc, "param", None), "code": exc.code}
    if exc.error_id:
        err["error_id"] = exc.error_id
    return json_response({"error": err}, status=exc.status, headers=exc.headers or None)
