"""The HTTP listener's guard against slow and too many clients.

aiohttp has no header read timeout and keeps a connection that trickles bytes for as
long as its keep-alive timeout (an hour by default). Each connection here runs a
watchdog with one deadline for the phase it is in:

- headers: from the connection's start, or from the first byte of a later request, until
  the request line and headers are parsed (`header_timeout_s`); then a 408 and close
  (a new connection that sent nothing at all is just closed);
- body: from the headers until the body is complete (`body_timeout_s`); the handler's read
  fails, it answers 408 and the connection closes;
- idle: between requests on a keep-alive connection (`keep_alive_timeout_s`); then close;
- none while the handler works on a complete request (the Upstream's timeout bounds that).

Past `max_connections` open connections a new one gets a 503 and is closed at once.
Limits are read from the current routing table when a connection opens, so a reload
applies to new connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..api.table import HttpLimits
from ..errors import ApiError
from .metrics import Metrics

log = logging.getLogger("switchyard.gateway.listener")

CAP_RETRY_AFTER_S = 1


class BodyTimeout(TimeoutError):
    """Set on a request's body stream when the client took too long to send it.

    A TimeoutError, so aiohttp's lingering read after the answer stops quietly."""


def raw_error(err: ApiError, extra_headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error answer that closes the connection, for when no handler runs."""
    body = orjson.dumps(err.body())
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close",
               **err.headers, **(extra_headers or {})}
    head = f"HTTP/1.1 {err.status} {_REASONS.get(err.status, 'Error')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large", 503: "Service Unavailable"}


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the watchdog and the connection cap."""

    def __init__(self, manager: GuardedServer, *, limits: HttpLimits, **kwargs: Any) -> None:
        # aiohttp's own keep-alive timer also runs from the connection's start; the watchdog below
        # owns every phase, so aiohttp's is only a backstop that must not fire first.
        backstop = limits.header_timeout_s + limits.body_timeout_s + limits.keep_alive_timeout_s
        super().__init__(manager, **{**kwargs, "keepalive_timeout": backstop})
        self._limits = limits
        self._guard = manager
        self._phase = "idle"  # until the first byte of a request
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time the current phase ends; None: no deadline
        self._body: Any = None  # the body stream of the request being received
        self._counted = False

    # -- connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard.open >= self._limits.max_connections:
            self._guard.metrics.http_refused.inc()
            err = ApiError("too_many_connections",
                           f"this gateway holds its limit of {self._limits.max_connections} open connections; "
                           "retry shortly", headers={"Retry-After": str(CAP_RETRY_AFTER_S)})
            transport.write(raw_error(err))  # type: ignore[attr-defined]
            transport.close()
            self._phase = "refused"
            return
        self._counted = True
        self._guard.opened()
        super().connection_made(transport)
        self._arm(self._limits.header_timeout_s)  # a new connection owes a request within this

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._phase == "refused":
            return  # never handed to aiohttp
        if self._counted:
            self._counted = False
            self._guard.closed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle" and data:
            self._phase = "headers"  # the first byte of a request
            if self._request_count:  # after keep-alive idling; a new connection keeps its first deadline
                self._arm(self._limits.header_timeout_s)
        count = self._request_count
        super().data_received(data)
        if self._request_count != count and self._phase == "headers":
            # Headers parsed: the newest message's body is what we wait for now, unless it came whole.
            body = self._messages[-1][1] if self._messages else None
            if body is not None and not body.is_eof():
                self._body, self._phase = body, "body"
                self._arm(self._limits.body_timeout_s)
            else:
                self._phase = "busy"
                self._disarm()
        elif self._phase == "body" and (self._body is None or self._body.is_eof()):
            self._phase = "busy"
            self._body = None
            self._disarm()

    async def finish_response(self, request: Any, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        out = await super().finish_response(request, resp, start_time)
        if self._phase == "busy":
            if self._messages:  # a pipelined request is already parsed: its handler runs next
                body = self._messages[0][1]
                if not body.is_eof():
                    self._body, self._phase = body, "body"
                    self._arm(self._limits.body_timeout_s)
                return out
            self._phase = "idle"
            self._arm(self._limits.keep_alive_timeout_s)
        return out

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Requests aiohttp could not parse (request line, headers, an encoding it cannot decode) get
        our error format; a 500 is aiohttp's own (the middleware answers handler errors before this)."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        detail = (message or str(exc) or "malformed request")[:200]
        log.info("malformed HTTP request", extra={"status": status, "error": detail})
        err = ApiError("bad_request", f"malformed HTTP request: {detail}", status=status)
        resp = web.Response(body=orjson.dumps(err.body()), status=status, content_type="application/json")
        resp.force_close()
        return resp

    # -- the watchdog ------------------------------------------------------------

    # One timer per connection, moved lazily: arming only records the deadline unless the timer
    # would fire too late, so a busy keep-alive connection makes no timer per request.

    def _arm(self, seconds: float) -> None:
        when = self._loop.time() + seconds
        self._deadline = when
        if self._timer is None or self._timer.when() > when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(when, self._expired)

    def _disarm(self) -> None:
        self._deadline = None  # a pending timer wakes up, finds no deadline, and stops

    def _expired(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expired)
            return
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        phase = self._phase
        if phase == "headers":
            self._guard.metrics.http_timeouts.labels("headers").inc()
            log.info("client too slow sending headers; closing", extra={"timeout_s": self._limits.header_timeout_s})
            transport.write(raw_error(ApiError(
                "request_timeout", f"request line and headers not received within "
                                   f"{self._limits.header_timeout_s:g}s")))
            self.force_close()
        elif phase == "body":
            self._guard.metrics.http_timeouts.labels("body").inc()
            log.info("client too slow sending the body; closing", extra={"timeout_s": self._limits.body_timeout_s})
            self._phase = "late"
            self._lingering_time = 0.0  # nothing more to read from this client
            if self._body is not None:
                self._body.set_exception(BodyTimeout(
                    f"request body not received within {self._limits.body_timeout_s:g}s"))
            # The handler answers 408; a handler that never reads the body is cut off after a grace.
            self._arm(min(5.0, self._limits.header_timeout_s))
        elif phase == "idle":
            # No byte of a request yet: close without an answer, which the client could mistake
            # for the answer to a request it sends just then.
            self._guard.metrics.http_timeouts.labels("idle").inc()
            self.force_close()
        elif phase == "late":
            self.force_close()


class GuardedServer(web.Server):
    """Makes GuardedHandlers, counting the open connections against the cap."""

    def __init__(self, *args: Any, limits: Callable[[], HttpLimits], metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self.metrics = metrics
        self.open = 0

    def opened(self) -> None:
        self.open += 1
        self.metrics.http_connections.set(self.open)

    def closed(self) -> None:
        self.open -= 1
        self.metrics.http_connections.set(self.open)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, limits=self._limits(), **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server guards every connection (see the module docstring)."""

    def __init__(self, app: web.Application, *, limits: Callable[[], HttpLimits], metrics: Metrics,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard_limits = limits
        self._guard_metrics = metrics

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                             limits=self._guard_limits, metrics=self._guard_metrics, **plain._kwargs)
