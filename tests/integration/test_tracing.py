"""OpenTelemetry traces end to end: real nats-server, the production gateway and worker runtime.

The gateway and the worker run in this process so that both export to one SDK
InMemorySpanExporter (switchyard.tracing.use_exporter); every span comes from the real code
path: the gateway's request handler and publish, JetStream, the worker's pull and handler.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import nats
import pytest
import yaml
from cli_processes import installed_script, start, stop, wait_for_heartbeat
from dataplane import ADMIN, ECHO, GatewayUnderTest, copy_manifests, gateway, job_final, kill, until, worker_process
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from switchyard import tracing
from switchyard.gateway import tracing as gateway_tracing
from switchyard.messages import Result, WorkItem
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.otlp import OtlpSink
from switchyard.worker import Worker, WorkerConfig
from switchyard.worker.context import Context
from switchyard.worker.tracing import WorkerTracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def usage_echo(items: list[Any], ctx: Context) -> list[Any]:
    """Echo, reporting token counts as a model server would."""
    ctx.usage.update(input_tokens=3 * len(items), output_tokens=0)
    return items


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    gateway_tracing.reset()
    tracing.use_exporter(exporter)
    try:
        yield exporter
    finally:
        tracing.use_exporter(None)
        gateway_tracing.reset()


def traced_manifests(tmp_path: Path, ratio: float | None = 1.0) -> Path:
    """The integration manifests, with spec.tracing on (ratio None: tracing off, as shipped)."""
    dest = copy_manifests(tmp_path / "manifests")
    if ratio is not None:
        set_tracing(dest, {"endpoint": "http://127.0.0.1:4318", "sampleRatio": ratio})
    return dest


def set_tracing(config_dir: Path, tracing_spec: dict[str, Any]) -> None:
    path = config_dir / "gateway.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["spec"]["tracing"] = tracing_spec
    path.write_text(yaml.safe_dump_all(docs))


@asynccontextmanager
async def traced_worker(nats_url: str, handler: Callable[..., Any] = usage_echo,
                        on: bool = True) -> AsyncIterator[Worker]:
    w = Worker(WorkerConfig(nats_url=nats_url, handler=handler, model="test/echo", heartbeat_interval_s=0.5),
               WorkerTracing.start() if on else None)
    await w.start()
    try:
        yield w
    finally:
        await w.stop()
        if w.tracing is not None:
            w.tracing.shutdown()


def by_name(found: list[ReadableSpan], prefix: str, kind: SpanKind | None = None) -> ReadableSpan:
    matches = [s for s in found if s.name.startswith(prefix) and kind in (None, s.kind)]
    assert len(matches) == 1, f"{len(matches)} spans named {prefix}*: {[s.name for s in found]}"
    return matches[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def wait_spans(exporter: InMemorySpanExporter, cond: Callable[[list[ReadableSpan]], bool]) -> list[ReadableSpan]:
    await until(lambda: cond(list(exporter.get_finished_spans())), 15, "the expected spans")
    return list(exporter.get_finished_spans())


def has_worker_spans(found: list[ReadableSpan]) -> bool:
    return any(s.name.startswith("process ") for s in found) and any(s.kind == SpanKind.SERVER for s in found)


def assert_one_trace(found: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    """gateway SERVER span -> publish PRODUCER -> worker CONSUMER -> (queue wait, handler)."""
    assert len({s.context.trace_id for s in found}) == 1, "the request's spans are in more than one trace"
    server = next(s for s in found if s.kind == SpanKind.SERVER)
    publish = by_name(found, "send sy.work.")
    process = by_name(found, "process sy.work.")
    wait = by_name(found, "queue wait")
    handler = by_name(found, "embeddings test/echo", SpanKind.INTERNAL)  # the SERVER span has the GenAI name too
    assert server.name == "embeddings test/echo"
    assert publish.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    assert parent_of(publish) == server.context.span_id
    assert parent_of(process) == publish.context.span_id
    assert parent_of(wait) == process.context.span_id and parent_of(handler) == process.context.span_id
    assert wait.start_time <= wait.end_time <= handler.start_time
    assert process.attributes["switchyard.queue_wait_ms"] >= 0
    assert publish.attributes["messaging.system"] == "nats"
    assert publish.attributes["messaging.destination.name"] == process.attributes["messaging.destination.name"]
    assert handler.attributes["gen_ai.operation.name"] == "embeddings"
    assert handler.attributes["gen_ai.request.model"] == "test/echo"
    assert handler.attributes["gen_ai.usage.input_tokens"] == 3
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    return {"server": server, "publish": publish, "process": process, "wait": wait, "handler": handler}


async def test_one_request_is_one_trace_from_gateway_to_handler(nats_server: NatsServer, tmp_path: Path,
                                                                spans: InMemorySpanExporter) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw, traced_worker(nats_server.url):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(items=[{"text": "hi"}], headers={"X-Request-ID": "traced-1"})
        assert r.status == 200, r.body
        found = await wait_spans(spans, has_worker_spans)
    s = assert_one_trace(found)
    assert s["server"].parent is None  # no traceparent sent: the gateway starts the trace
    assert s["server"].attributes["http.response.status_code"] == 200
    assert s["server"].attributes["switchyard.request_id"] == "traced-1"
    assert s["process"].attributes["switchyard.state"] == "succeeded"


async def test_a_202_job_is_one_trace_through_a_worker_started_later(nats_server: NatsServer, tmp_path: Path,
                                                                     spans: InMemorySpanExporter) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw:
        r = await gw.infer(items=[{"text": "later"}], headers={"X-Request-ID": "traced-job"})
        assert r.status == 202, r.body
        server = next(s for s in await wait_spans(spans, lambda f: any(s.kind == SpanKind.SERVER for s in f))
                      if s.kind == SpanKind.SERVER)
        assert server.attributes["http.response.status_code"] == 202
        worker_started = time.time_ns()
        async with traced_worker(nats_server.url):
            assert (await job_final(gw, "traced-job")).body["state"] == "succeeded"
            found = await wait_spans(spans, has_worker_spans)
    s = assert_one_trace(found)
    # The queue wait runs from JetStream storing the item to the worker that started after it.
    assert s["wait"].start_time < worker_started < s["wait"].end_time
    assert s["publish"].attributes["switchyard.keep_result"] is True


async def test_a_caller_traceparent_joins_its_trace(nats_server: NatsServer, tmp_path: Path,
                                                    spans: InMemorySpanExporter) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw, traced_worker(nats_server.url):
        await gw.wait_for_workers(ECHO)
        # Sampled flag 00: the caller did not sample, but the gateway's own ratio (1.0) decides.
        r = await gw.infer(headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00", "tracestate": "vendor=x"})
        assert r.status == 200
        found = await wait_spans(spans, has_worker_spans)
    s = assert_one_trace(found)
    assert format(s["server"].context.trace_id, "032x") == TRACE_ID
    assert format(parent_of(s["server"]) or 0, "016x") == PARENT_ID


@pytest.mark.parametrize("header", [
    "garbage", f"00-{TRACE_ID}-{PARENT_ID}", f"00-{'0' * 32}-{PARENT_ID}-01", f"ff-{TRACE_ID}-{PARENT_ID}-01",
    f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", f"00-{TRACE_ID}-{PARENT_ID}-01" + "x" * 5000,
])
async def test_a_malformed_traceparent_header_starts_a_new_trace(nats_server: NatsServer, tmp_path: Path,
                                                                 spans: InMemorySpanExporter, header: str) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw, traced_worker(nats_server.url):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(headers={"traceparent": header, "tracestate": "=,=" * 2000})
        assert r.status == 200, r.body
        found = await wait_spans(spans, has_worker_spans)
    s = assert_one_trace(found)
    assert s["server"].parent is None
    assert format(s["server"].context.trace_id, "032x") != TRACE_ID


async def test_ratio_zero_records_nothing_even_for_a_sampled_caller(nats_server: NatsServer, tmp_path: Path,
                                                                    spans: InMemorySpanExporter) -> None:
    """A caller's sampled flag cannot force traces on; and spec.tracing is applied without a restart."""
    config = traced_manifests(tmp_path, ratio=0.0)
    async with gateway(nats_server.url, config) as gw, traced_worker(nats_server.url):
        await gw.wait_for_workers(ECHO)
        for _ in range(3):
            r = await gw.infer(headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert r.status == 200
        assert spans.get_finished_spans() == ()
        # Hot reload: ratio 1 takes effect on the next request, same process.
        before = gw.state.holder.table.hash
        set_tracing(config, {"endpoint": "http://127.0.0.1:4318", "sampleRatio": 1.0})
        await until(lambda: gw.state.holder.table.hash != before, 15, "the reloaded table")
        assert (await gw.infer()).status == 200
        assert_one_trace(await wait_spans(spans, has_worker_spans))


async def test_tracing_off_makes_no_spans_and_adds_no_field(nats_server: NatsServer, tmp_path: Path,
                                                            spans: InMemorySpanExporter) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path, ratio=None)) as gw:
        r = await gw.infer(headers={"X-Request-ID": "untraced", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert r.status == 202
        raw = await queued_item(gw, "untraced")
        assert "trace_context" not in msgpack.unpackb(raw)  # as on the wire before tracing existed
        async with traced_worker(nats_server.url, on=False):
            assert (await job_final(gw, "untraced")).body["state"] == "succeeded"
    assert spans.get_finished_spans() == ()


async def test_tracing_on_puts_the_publish_context_in_the_item(nats_server: NatsServer, tmp_path: Path,
                                                               spans: InMemorySpanExporter) -> None:
    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw:
        assert (await gw.infer(headers={"X-Request-ID": "carried"})).status == 202
        item = WorkItem.decode(await queued_item(gw, "carried"))
        publish = by_name(list(spans.get_finished_spans()), "send ")
    assert item.trace_context is not None and set(item.trace_context) == {"traceparent"}
    version, trace_id, parent, flags = item.trace_context["traceparent"].split("-")
    assert (version, trace_id, parent) == ("00", f"{publish.context.trace_id:032x}", f"{publish.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


async def queued_item(gw: GatewayUnderTest, rid: str) -> bytes:
    js = gw.state.dispatcher.js
    assert js is not None
    msg = await js.get_last_msg("SWITCHYARD_WORK", ECHO.queue("normal", "admin"))  # its class and tenant
    assert WorkItem.decode(msg.data).id == rid
    return msg.data


@pytest.mark.parametrize("context", [
    "not a map", 7, [1, 2], {"traceparent": 5}, {"traceparent": None}, {"traceparent": "00-zz-zz-01"},
    {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01" + " " * 100}, {"traceparent": "x" * 100_000},
    {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": {"a": "b"}},
])
async def test_a_hostile_trace_context_in_a_work_item_is_ignored(nats_server: NatsServer,
                                                                 spans: InMemorySpanExporter, context: Any) -> None:
    """Anyone who can publish to the stream can put anything there: the item still runs, in a new trace
    (or, with a valid traceparent and a bad tracestate, the traceparent's)."""
    nc = await nats.connect(nats_server.url)
    try:
        async with traced_worker(nats_server.url):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            item = WorkItem(id="hostile", op="encode", model="test/echo", bundle="default", machine_profile="cpu",
                            pool="default", items=[{"text": "x"}], reply=inbox, deadline=time.time() + 30)
            data = {"v": 1, **{k: getattr(item, k) for k in item.__slots__}, "trace_context": context}
            await nc.jetstream().publish(ECHO.subject, msgpack.packb(data, use_bin_type=True))
            result = Result.decode((await sub.next_msg(timeout=15)).data)
            assert result.ok and result.items == [{"text": "x"}]
            found = await wait_spans(spans, lambda f: any(s.name.startswith("process ") for s in f))
    finally:
        await nc.close()
    process = by_name(found, "process ")
    valid_parent = isinstance(context, dict) and context.get("traceparent") == f"00-{TRACE_ID}-{PARENT_ID}-01"
    if valid_parent:
        assert format(process.context.trace_id, "032x") == TRACE_ID
    else:
        assert process.parent is None


async def test_an_old_item_without_trace_context_runs_in_a_new_trace(nats_server: NatsServer,
                                                                     spans: InMemorySpanExporter) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        async with traced_worker(nats_server.url):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            item = WorkItem(id="old", op="encode", model="test/echo", bundle="default", machine_profile="cpu",
                            pool="default", items=[1], reply=inbox, deadline=time.time() + 30)
            await nc.jetstream().publish(ECHO.subject, item.encode())
            assert Result.decode((await sub.next_msg(timeout=15)).data).ok
            found = await wait_spans(spans, lambda f: any(s.name.startswith("process ") for s in f))
    finally:
        await nc.close()
    assert by_name(found, "process ").parent is None
    assert by_name(found, "embeddings test/echo", SpanKind.INTERNAL).attributes["gen_ai.usage.input_tokens"] == 3


async def test_spans_reach_the_configured_otlp_endpoint_from_gateway_and_worker_process(
        nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No in-memory exporter: the real OTLP/HTTP exporters post to spec.tracing.endpoint (the gateway)
    and to --otlp-endpoint (a worker process started as production starts it)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export within 0.1 s instead of 5 s
    gateway_tracing.reset()
    sink = await OtlpSink().start()
    config = traced_manifests(tmp_path, ratio=None)
    set_tracing(config, {"endpoint": sink.url})
    proc = worker_process(nats_server.url, "switchyard.worker.handlers:echo", "test/echo", "--otlp-endpoint", sink.url)
    try:
        async with gateway(nats_server.url, config) as gw:
            await gw.wait_for_workers(ECHO)
            assert (await gw.infer(headers={"X-Request-ID": "over-otlp"})).status == 200
            await until(lambda: {"switchyard-gateway", "switchyard-worker"} <= {s.service for s in sink.spans}
                        and any(s.name.startswith("process ") for s in sink.spans), 20, "spans at the sink")
    finally:
        kill(proc, signal.SIGTERM)
        gateway_tracing.reset()
        await sink.stop()
    server = next(s for s in sink.spans if s.service == "switchyard-gateway" and s.name == "embeddings test/echo"
                  and s.attributes.get("switchyard.request_id") == "over-otlp")
    mine = [s for s in sink.spans if s.trace_id == server.trace_id]
    assert {s.service for s in mine} == {"switchyard-gateway", "switchyard-worker"}
    publish = next(s for s in mine if s.name.startswith("send "))
    process = next(s for s in mine if s.name.startswith("process "))
    assert publish.parent_id == server.span_id and process.parent_id == publish.span_id
    assert {s.name for s in mine if s.parent_id == process.span_id} == {"queue wait", "embeddings test/echo"}


async def test_refused_requests_record_their_status_and_queue_nothing(nats_server: NatsServer, tmp_path: Path,
                                                                       spans: InMemorySpanExporter) -> None:
    from opentelemetry.trace import StatusCode

    async with gateway(nats_server.url, traced_manifests(tmp_path)) as gw:
        big = await gw.infer(items=[{"text": "x" * 5000}])  # over the test Gateway's 4096-byte body limit
        assert big.status == 413
        pinned = await gw.infer(headers={"X-Pool": "tenant"})  # a pinned pool with no worker: 503, nothing queued
        assert pinned.status == 503 and pinned.body["error"]["code"] == "no_capacity"
        unknown = await gw.infer(model="made-up/" + "m" * 200)
        assert unknown.status == 404
        found = list(spans.get_finished_spans())
    assert [s.kind for s in found] == [SpanKind.SERVER] * 3  # no publish span: nothing was sent
    client, server, made_up = found
    # Named by the route until resolved: a caller's made-up model never becomes a span name.
    assert client.name == made_up.name == "POST /v1/{op}/{model}"
    assert "gen_ai.request.model" not in made_up.attributes
    assert server.name == "embeddings test/echo"
    assert client.attributes["http.response.status_code"] == 413
    assert client.attributes["switchyard.error.code"] == "payload_too_large"
    assert client.status.status_code == StatusCode.UNSET  # a client's error is not the server's (HTTP semconv)
    assert server.attributes["http.response.status_code"] == 503 and server.attributes["error.type"] == "no_capacity"
    assert server.status.status_code == StatusCode.ERROR


async def test_standalone_gateway_and_worker_processes_export_one_trace(nats_server: NatsServer,
                                                                         tmp_path: Path) -> None:
    """`switchyard gateway` and `switchyard worker` as a user starts them: the gateway's tracing from
    its manifests, the worker's from the standard OTEL_EXPORTER_OTLP_ENDPOINT variable."""
    sink = await OtlpSink().start()
    config = traced_manifests(tmp_path, ratio=None)
    set_tracing(config, {"endpoint": sink.url})
    port, mport = free_port(), free_port()
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
    gw = start([installed_script(), "gateway", "--config-dir", str(config), "--nats", nats_server.url,
                "--port", str(port), "--metrics-port", str(mport)], tmp_path / "gateway.log", env)
    wk = start([installed_script(), "worker", "--nats", nats_server.url, "--model", "test/echo",
                "--handler", "switchyard.worker.handlers:echo", "--heartbeat-interval", "0.5"], tmp_path / "worker.log",
               {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url})
    try:
        await wait_for_heartbeat(nats_server.url, "test/echo", wk, tmp_path / "worker.log")
        async with aiohttp.ClientSession() as http:
            rid = ""
            deadline = time.monotonic() + 30
            while not rid:  # until the gateway listens and has read the heartbeat (202 before that)
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
                try:
                    async with http.post(f"http://127.0.0.1:{port}/v1/encode/test/echo", headers=ADMIN,
                                         json={"items": [1]}) as resp:
                        rid = resp.headers["X-Request-ID"] if resp.status == 200 else ""
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        await until(lambda: any(s.name.startswith("process ") and s.attributes.get("switchyard.request_id") == rid
                                for s in sink.spans), 20, "the worker's spans at the sink")
        await until(lambda: any(s.service == "switchyard-gateway" and s.attributes.get("switchyard.request_id") == rid
                                and s.kind == 2 for s in sink.spans), 20, "the gateway's span at the sink")
    finally:
        stop(wk)
        stop(gw)
        await sink.stop()
    server = next(s for s in sink.spans if s.kind == 2 and s.attributes.get("switchyard.request_id") == rid)
    mine = [s for s in sink.spans if s.trace_id == server.trace_id]
    assert {(s.service, s.name.split(" ")[0]) for s in mine} == {
        ("switchyard-gateway", "embeddings"), ("switchyard-gateway", "send"), ("switchyard-worker", "process"),
        ("switchyard-worker", "queue"), ("switchyard-worker", "embeddings")}
