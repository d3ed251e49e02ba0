"""The worker's spans: the queue wait, the processing of one delivery, the handler's inference.

Each is a child of the gateway's publish span, whose W3C context the work item carries
(WorkItem.trace_context), so one request is one trace from the gateway's span to the
handler's, a 202 job that ran minutes later included:

    process <subject>  CONSUMER  one delivery: attempt, outcome, queue_wait_ms
      ├ queue wait     INTERNAL  from JetStream storing the item to this worker taking it
      └ <op> <model>   INTERNAL  the handler (GenAI: gen_ai.operation.name, gen_ai.request.model,
                                 gen_ai.usage.* when the handler reports token counts in ctx.usage)

On only with an OTLP endpoint (--otlp-endpoint, or the standard OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT);
OTEL_SDK_DISABLED=true turns it off. An item without a (valid) trace context starts a new trace.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.msg import Msg

from ..messages import Result, WorkItem
from .context import Context

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("switchyard.worker")

SERVICE = "switchyard-worker"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
USAGE_KEYS = ("input_tokens", "output_tokens")  # ctx.usage keys that become gen_ai.usage.*


def wanted(endpoint: str | None) -> bool:
    """Tracing is on with an endpoint (flag or the standard variables) unless OTEL_SDK_DISABLED says not."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(endpoint) or any(os.environ.get(v) for v in ENDPOINT_VARS)


class WorkerTracing:
    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.sdk.trace.sampling import ParentBased

        from .. import tracing

        self.provider = provider
        self._tracer: Tracer = provider.get_tracer(tracing.SCOPE)
        # The usual sampler (OTEL_TRACES_SAMPLER unset) follows the gateway's decision: an item it
        # left out is run without making a span.
        self._follows_parent = isinstance(provider.sampler, ParentBased)

    @classmethod
    def start(cls, endpoint: str | None = None) -> WorkerTracing:
        """endpoint: an OTLP/HTTP base URL; None reads the standard OTEL_EXPORTER_OTLP_* variables."""
        from .. import tracing

        return cls(tracing.new_provider(SERVICE, endpoint))

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is still batched

    @contextmanager
    def delivery(self, item: WorkItem, msg: Msg, worker_id: str) -> Iterator[Delivery | None]:
        """The CONSUMER span of one delivery, with the queue wait as its own span beside it;
        None when the item's trace is not sampled."""
        from opentelemetry.trace import SpanKind, Status, StatusCode, get_current_span, set_span_in_context

        from .. import tracing

        parent = tracing.extract(item.trace_context)
        if (parent is not None and self._follows_parent
                and not get_current_span(parent).get_span_context().trace_flags.sampled):
            yield None
            return
        taken = time.time_ns()
        stored = _stored_ns(msg, item, taken)
        attrs: dict[str, Any] = {
            "messaging.system": tracing.MESSAGING_SYSTEM, "messaging.operation.type": "process",
            "messaging.operation.name": "process", "messaging.destination.name": msg.subject,
            "messaging.message.id": item.key, "messaging.consumer.group.name": _consumer(msg),
            "switchyard.request_id": item.id, "switchyard.worker": worker_id,
            "switchyard.queue_wait_ms": round((taken - stored) / 1e6, 3),
        }
        span = self._tracer.start_span(f"process {msg.subject}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attrs, start_time=taken)
        if span.is_recording():
            # The wait is over before we know it began: a span with explicit times, from the stream's clock.
            wait = self._tracer.start_span("queue wait", context=set_span_in_context(span), start_time=stored,
                                           attributes={"messaging.destination.name": msg.subject})
            wait.end(end_time=taken)
        d = Delivery(self._tracer, span)
        try:
            yield d
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            span.end()


class Delivery:
    """One delivery's spans; the Processor calls it only where tracing is on."""

    __slots__ = ("_tracer", "span")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self._tracer, self.span = tracer, span

    def attempt(self, attempt: int, max_attempts: int) -> None:
        self.span.set_attributes({"switchyard.attempt": attempt, "switchyard.max_attempts": max_attempts})

    async def handler(self, invoke: Callable[[list[Any], Context], Awaitable[list[Any]]], items: list[Any],
                      ctx: Context) -> list[Any]:
        """Run the handler inside its GenAI span; token counts it put in ctx.usage go on the span."""
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        from .. import tracing

        span = self._tracer.start_span(tracing.span_name(ctx.op, ctx.model), context=set_span_in_context(self.span),
                                       attributes={**tracing.genai_attributes(ctx.op, ctx.model),
                                                   "switchyard.items": len(items)})
        try:
            out = await invoke(items, ctx)
        except BaseException as exc:
            kind = tracing.error_type(exc)
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, kind))
            raise
        finally:
            usage = {f"gen_ai.usage.{k}": v for k, v in ctx.usage.items()
                     if k in USAGE_KEYS and isinstance(v, int) and not isinstance(v, bool) and v >= 0}
            if usage:
                span.set_attributes(usage)
            span.end()
        return out

    def outcome(self, res: Result) -> None:
        from opentelemetry.trace import Status, StatusCode

        attrs: dict[str, Any] = {"switchyard.state": res.state}
        if not res.ok:
            code = (res.error or {}).get("code", "worker_error")
            attrs["error.type"] = code
            self.span.set_status(Status(StatusCode.ERROR, code))
        self.span.set_attributes(attrs)

    def retry(self, delay_s: float) -> None:
        self.span.add_event("retry", {"switchyard.retry_in_s": delay_s})


def _stored_ns(msg: Msg, item: WorkItem, now_ns: int) -> int:
    """When JetStream stored the item (its timestamp, from the server's clock); never after now."""
    try:
        stored = int(msg.metadata.timestamp.timestamp() * 1e9)
    except nats.errors.NotJSMessageError:  # not a JetStream delivery: the gateway's enqueue time instead
        stored = int(float(item.enqueued_at) * 1e9) if isinstance(item.enqueued_at, (int, float)) else now_ns
    return min(stored, now_ns)


def _consumer(msg: Msg) -> str:
    try:
        return msg.metadata.consumer
    except nats.errors.NotJSMessageError:
        return ""
