"""OpenTelemetry plumbing shared by the gateway and the worker: providers, W3C propagation, names.

Imported only once tracing is on (a Gateway's spec.tracing, a worker's --otlp-endpoint):
the `tracing` extra is optional, and with tracing off nothing here runs or is imported.
The gateway's spans are in gateway/tracing.py, the worker's in worker/tracing.py.

Spans follow the OpenTelemetry semantic conventions: GenAI (gen_ai.operation.name,
gen_ai.request.model, gen_ai.usage.*) for the inference, messaging (messaging.system,
messaging.destination.name, messaging.operation.*) for the publish and the queue.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Mapping
from typing import Any

from .extras import require

require("tracing", "tracing (spec.tracing, --otlp-endpoint)")

from opentelemetry import trace  # noqa: E402
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter  # noqa: E402
from opentelemetry.sdk.trace.sampling import Sampler  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

SCOPE = "switchyard"
TRACES_PATH = "/v1/traces"  # appended to a base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT is
# W3C: traceparent version 00 is 55 characters; tracestate should be cut at 512. A carrier
# (a request header, a work item from the queue) is untrusted: longer values are dropped whole.
MAX_TRACEPARENT = 55
MAX_TRACESTATE = 512
# A tracestate list member (W3C Trace Context): checked here so that a hostile one is dropped
# quietly; the SDK's parser would log each one, a log line per request an attacker controls.
_KEY = r"(?:[a-z0-9][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
_MEMBER = re.compile(_KEY + r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")

# gen_ai.operation.name: the well-known value where one fits, else the Switchyard operation.
GENAI_OPERATIONS = {"encode": "embeddings", "chat": "chat", "generate": "text_completion"}
GENAI_PROVIDER = "switchyard"
MESSAGING_SYSTEM = "nats"

_propagator = TraceContextTextMapPropagator()
_override: SpanExporter | None = None
_override_lock = threading.Lock()


def genai_operation(op: str) -> str:
    return GENAI_OPERATIONS.get(op, op)


def genai_attributes(op: str, model: str) -> dict[str, Any]:
    return {"gen_ai.operation.name": genai_operation(op), "gen_ai.request.model": model,
            "gen_ai.provider.name": GENAI_PROVIDER}


def span_name(op: str, model: str) -> str:
    """GenAI span name: '{gen_ai.operation.name} {gen_ai.request.model}'."""
    return f"{genai_operation(op)} {model}"


def use_exporter(exporter: SpanExporter | None) -> None:
    """Send the spans of providers made from now on to `exporter` instead of OTLP (tests: the SDK's
    InMemorySpanExporter), exported at once rather than batched; None restores OTLP."""
    global _override
    with _override_lock:
        _override = exporter


def new_provider(service: str, endpoint: str | None, sampler: Sampler | None = None) -> TracerProvider:
    """A provider exporting over OTLP/HTTP to `endpoint` (a base URL: /v1/traces is appended).

    endpoint None: the OTLP exporter reads the standard OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT.
    Headers, timeout, compression and certificates come from the standard OTEL_EXPORTER_OTLP_*
    variables too, and the resource from OTEL_RESOURCE_ATTRIBUTES. The sampler, when None, is
    the SDK's default (OTEL_TRACES_SAMPLER; parent-based always-on when unset).
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service),
                                "service.instance.id": f"{socket.gethostname()}-{os.getpid()}"})
    # shutdown_on_exit: the spans still batched go out when the process ends (the gateway has no hook of its own)
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=True)
    with _override_lock:
        override = _override
    processor: SpanProcessor
    if override is not None:
        processor = SimpleSpanProcessor(_Shared(override))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/") + TRACES_PATH if endpoint else None
        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=url))
    provider.add_span_processor(processor)
    return provider


class _Shared(SpanExporter):
    """The overriding exporter outlives each provider that uses it (a reload replaces the gateway's)."""

    def __init__(self, exporter: SpanExporter) -> None:
        self._exporter = exporter

    def export(self, spans: Any) -> Any:
        return self._exporter.export(spans)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        pass


def shutdown_later(provider: TracerProvider) -> None:
    """Flush and close a provider off the event loop (its exporter may block on HTTP)."""
    threading.Thread(target=provider.shutdown, name="sy-otel-shutdown", daemon=True).start()


def inject(span: trace.Span) -> dict[str, str]:
    """The W3C trace context naming `span` as the parent: {"traceparent", "tracestate"?}."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def extract(carrier: Mapping[str, Any] | Any) -> Context | None:
    """The remote parent a carrier names, or None when it names none validly.

    Hostile input is ignored, never an error: a carrier that is not a map, values that are not
    strings or are too long, a malformed or all-zero traceparent (the SDK's parser checks it).
    """
    if not isinstance(carrier, Mapping):
        return None
    parent = carrier.get("traceparent")
    if not isinstance(parent, str) or len(parent) > MAX_TRACEPARENT:
        return None
    clean = {"traceparent": parent}
    state = carrier.get("tracestate")
    if isinstance(state, str) and len(state) <= MAX_TRACESTATE and _valid_tracestate(state):
        clean["tracestate"] = state
    ctx = _propagator.extract(clean)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _valid_tracestate(state: str) -> bool:
    members = [m.strip(" \t") for m in state.split(",")]
    return all(not m or _MEMBER.fullmatch(m) for m in members)


def error_type(exc: BaseException) -> str:
    """error.type: the API error code where there is one, else the exception's class."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__qualname__
