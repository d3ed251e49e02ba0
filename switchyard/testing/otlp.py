"""A minimal OTLP/HTTP trace receiver, for tests and the tracing bench: what a collector would get.

POST /v1/traces takes an ExportTraceServiceRequest (protobuf, gzip or not) and answers as a
collector does. `keep=True` keeps every span (service, trace id, span id, parent, name,
attributes) for assertions; the bench's sink only counts them and drops them.

    python -m switchyard.testing.otlp --port 4318      # the bench's sink, counting only
"""

from __future__ import annotations

import argparse
import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..runtime import StopSignals, run

PATH = "/v1/traces"
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict[str, Any]


@dataclass
class OtlpSink:
    keep: bool = True
    spans: list[ReceivedSpan] = field(default_factory=list)
    count: int = 0
    requests: int = 0
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> OtlpSink:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"  # the base URL: exporters append /v1/traces
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        msg = ExportTraceServiceRequest()
        try:
            msg.ParseFromString(body)
        except Exception:  # noqa: BLE001 - as a collector: 400 for a body that is not OTLP
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        self.requests += 1
        for rs in msg.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            for ss in rs.scope_spans:
                self.count += len(ss.spans)
                if self.keep:
                    self.spans += [ReceivedSpan(service, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                                s.name, s.kind, {a.key: _value(a.value) for a in s.attributes})
                                   for s in ss.spans]
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else str(v)


async def _serve(port: int) -> None:
    sink = await OtlpSink(keep=False).start(port=port)
    with StopSignals() as signals:
        print(f"ready {sink.url}", flush=True)
        await signals.stopping.wait()
    print(f"received {sink.count} spans in {sink.requests} requests", flush=True)
    await sink.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="OTLP/HTTP trace sink that counts and drops spans")
    p.add_argument("--port", type=int, required=True)
    port = p.parse_args().port
    run(lambda: _serve(port), uvloop=False)
