"""The gateway's spans: one SERVER span per inference request and its PRODUCER span for the publish.

Configured by the Gateway's spec.tracing through the routing table, so a reload turns
tracing on, off or elsewhere without a restart; with it off the request path checks one
attribute (`table.tracing is None`) and imports nothing from OpenTelemetry.

The publish span's W3C context goes into the work item (WorkItem.trace_context): the
worker's spans are its children, in the same trace, however long the item waits.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..api.table import TracingRoute
from ..messages import WorkItem
from ..subjects import queue_subject

if TYPE_CHECKING:
    from nats.js.api import PubAck
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("switchyard.gateway.tracing")

SERVICE = "switchyard-gateway"
ROUTE = "/v1/{op}/{model}"

# (route, provider, (tracer, sampler)): one per process
_current: tuple[TracingRoute, Any, tuple[Tracer, TraceIdRatioBased]] | None = None
_unavailable = False  # the tracing extra is missing: said once, then requests run untraced


def tracer_for(route: TracingRoute) -> tuple[Tracer, TraceIdRatioBased] | None:
    """The tracer and sampler for this spec.tracing; a changed one replaces (and flushes) the previous provider."""
    global _current, _unavailable
    current = _current
    if current is not None and current[0] == route:
        return current[2]
    if _unavailable:
        return None
    try:
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, TraceIdRatioBased

        from .. import tracing
    except ImportError as exc:
        _unavailable = True
        log.error("spec.tracing is set but tracing cannot start; requests run untraced", extra={"error": str(exc)})
        return None
    # traced() decides by the ratio before any span exists (an unsampled request makes none), so the
    # provider records whatever it is given.
    provider = tracing.new_provider(SERVICE, route.endpoint, ALWAYS_ON)
    _current = (route, provider, (provider.get_tracer(tracing.SCOPE), TraceIdRatioBased(route.sample_ratio)))
    if current is not None:
        tracing.shutdown_later(current[1])
    log.info("tracing on", extra={"endpoint": route.endpoint, "sample_ratio": route.sample_ratio})
    return _current[2]


def reset() -> None:
    """Forget the provider (tests: the next request makes one with the exporter then in use)."""
    global _current, _unavailable
    if _current is not None:
        _current[1].shutdown()
    _current, _unavailable = None, False


async def traced(route: TracingRoute, request: web.Request,
                 handle: Callable[[Trace | None], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Run `handle` inside the request's SERVER span (untraced when the tracer cannot start).

    The gateway is where traces start: it samples by its own ratio, on the caller's trace id
    when a valid traceparent names one (joining the caller's trace), and a caller's sampled
    flag neither forces nor refuses a trace. A request left out makes no span at all; its item
    still carries a "not sampled" traceparent, so workers record nothing for it either.
    """
    found = tracer_for(route)
    if found is None:
        return await handle(None)
    tracer, sampler = found
    from opentelemetry.trace import get_current_span

    from .. import tracing

    h = request.headers
    parent = tracing.extract({"traceparent": h.get("traceparent"), "tracestate": h.get("tracestate")})
    trace_id = get_current_span(parent).get_span_context().trace_id if parent is not None else _random_id(128)
    if trace_id & sampler.TRACE_ID_LIMIT >= sampler.bound:  # TraceIdRatioBased's rule, without its result object
        return await handle(UnsampledTrace(trace_id))
    rt = RequestTrace(tracer, request, parent)
    try:
        resp = await handle(rt)
    except BaseException as exc:
        rt.failed(exc)
        raise
    rt.answered(resp.status)
    return resp


def _random_id(bits: int) -> int:
    return random.getrandbits(bits) or 1  # 0 is the invalid id


class UnsampledTrace:
    """A request the ratio left out: no spans; the item says "not sampled" under a fresh span id."""

    __slots__ = ("trace_id",)

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id

    def resolved(self, item: WorkItem) -> None:
        pass

    def begin_publish(self, item: WorkItem, subject: str) -> None:
        item.trace_context = {"traceparent": f"00-{self.trace_id:032x}-{_random_id(64):016x}-00"}

    def published(self, ack: PubAck, size: int | None = None) -> None:
        pass

    def not_published(self, why: str) -> None:
        pass


class RequestTrace:
    """The spans of one request; inference.py calls it only where tracing is on."""

    __slots__ = ("_tracer", "span", "_publish")

    def __init__(self, tracer: Tracer, request: web.Request, parent: Context | None) -> None:
        from opentelemetry.trace import SpanKind

        self._tracer = tracer
        self._publish: Span | None = None
        # Named by the route until the request resolves: the operation and model in the path are the
        # caller's words, and an unknown one must not become a span name (one per made-up model).
        self.span = tracer.start_span(f"{request.method} {ROUTE}", context=parent, kind=SpanKind.SERVER,
                                      attributes={"http.request.method": request.method, "http.route": ROUTE,
                                                  "url.path": request.path})

    def resolved(self, item: WorkItem) -> None:
        """What the request resolved to: the GenAI name, the model and lane, the request id and the tenant."""
        from .. import tracing

        if self.span.is_recording():
            self.span.update_name(tracing.span_name(item.op, item.model))
            self.span.set_attributes({
                **tracing.genai_attributes(item.op, item.model),
                "switchyard.request_id": item.id, "switchyard.tenant": item.tenant,
                "switchyard.pool": item.pool, "switchyard.machine_profile": item.machine_profile,
                "switchyard.bundle": item.bundle, **({"switchyard.profile": item.profile} if item.profile else {}),
            })

    def begin_publish(self, item: WorkItem, subject: str) -> None:
        """Start the PRODUCER span and put its context into the item (before the item is packed)."""
        from opentelemetry.trace import SpanKind, set_span_in_context

        from .. import tracing

        subject = queue_subject(subject, item.priority, item.tenant)  # where dispatch.publish puts it

        span = self._tracer.start_span(f"send {subject}", context=set_span_in_context(self.span),
                                       kind=SpanKind.PRODUCER, attributes={
                                           "messaging.system": tracing.MESSAGING_SYSTEM,
                                           "messaging.operation.type": "send",
                                           "messaging.operation.name": "publish",
                                           "messaging.destination.name": subject,
                                           "messaging.message.id": item.key,
                                           "switchyard.keep_result": item.keep_result})
        self._publish = span
        item.trace_context = tracing.inject(span)

    def published(self, ack: PubAck, size: int | None = None) -> None:
        span, self._publish = self._publish, None
        if span is None:
            return
        if span.is_recording():
            span.set_attributes({"switchyard.jetstream.sequence": ack.seq, "switchyard.duplicate": bool(ack.duplicate),
                                 **({"messaging.message.body.size": size} if size is not None else {})})
        span.end()

    def not_published(self, why: str) -> None:
        """The item was not sent after all (a 202 whose job already runs or ended)."""
        span, self._publish = self._publish, None
        if span is not None:
            span.add_event("not published", {"reason": why})
            span.end()

    def answered(self, status: int) -> None:
        self._end_publish("no acknowledgement")
        self.span.set_attribute("http.response.status_code", status)
        self.span.end()

    def failed(self, exc: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        from .. import tracing

        kind = tracing.error_type(exc)
        self._end_publish(kind)
        status = getattr(exc, "status", 500)
        attrs: dict[str, Any] = {"http.response.status_code": status if isinstance(status, int) else 500}
        if attrs["http.response.status_code"] >= 500 or kind == "deadline_exceeded":
            attrs["error.type"] = kind
            self.span.set_status(Status(StatusCode.ERROR, kind))
        else:
            attrs["switchyard.error.code"] = kind  # a client error is not the server span's error (HTTP semconv)
        self.span.set_attributes(attrs)
        self.span.end()

    def _end_publish(self, why: str) -> None:
        span, self._publish = self._publish, None
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", why)
            span.set_status(Status(StatusCode.ERROR, why))
            span.end()


Trace = RequestTrace | UnsampledTrace
