"""switchyard.v1.Inference over gRPC with grpcio's own client: the HTTP API's semantics, tried as a hostile tenant.

Real nats-server, the production gateway (its gRPC listener from Listen.grpc_port) and
worker runtime. Keys come from tests/integration/manifests/gateway.yaml (maxRequestBodyBytes 4096).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from dataplane import MANIFESTS, GatewayUnderTest, copy_manifests, until, worker
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchyard.gateway.app import Listen, new_state, start
from switchyard.gateway.config import DirectoryConfig, directory
from switchyard.gateway.grpc import inference_pb2 as pb
from switchyard.gateway.grpc import inference_pb2_grpc as pb_grpc
from switchyard.gateway.tls import TlsFiles
from switchyard.natsserver import NatsServer, free_port
from switchyard.worker import PermanentError

ADMIN = (("authorization", "Bearer admin-key-0123456789abcdef"),)
ECHO_ONLY = (("authorization", "Bearer echo-only-key-0123456789ab"),)
OTHER = (("authorization", "Bearer other-key-0123456789abcdef"),)


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


def refuse(items: list[Any], ctx: Any) -> list[Any]:
    raise PermanentError("items must not be 'bad'")


class GrpcGateway:
    def __init__(self, gw: GatewayUnderTest, target: str, creds: grpc.ChannelCredentials | None = None) -> None:
        self.gw, self.target = gw, target
        self.channel = grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.InferenceStub(self.channel)

    async def infer(self, metadata: Any = ADMIN, timeout: float = 30, **fields: Any) -> pb.InferResponse:
        fields.setdefault("op", "encode")
        fields.setdefault("model", "test/echo")
        items = fields.pop("items", [{"text": "hi"}])
        req = pb.InferRequest(**fields, items=[_value(i) for i in items])
        return await self.stub.Infer(req, metadata=metadata, timeout=timeout)

    async def refused(self, call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
        """The status, details and trailers of a call that must fail."""
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        err = info.value
        return err.code(), err.details() or "", {k: v for k, v in (err.trailing_metadata() or ())}


def _value(x: Any) -> struct_pb2.Value:
    from google.protobuf import json_format

    return json_format.ParseDict(x, struct_pb2.Value())


@asynccontextmanager
async def grpc_gateway(nats_url: str, config_dir: Path = MANIFESTS, tls: TlsFiles | None = None,
                       channel_credentials: grpc.ChannelCredentials | None = None) -> AsyncIterator[GrpcGateway]:
    st = new_state(nats_url, directory(config_dir))
    st.source.load()
    port, gport = free_port(), free_port()
    running = await start(st, Listen("127.0.0.1", port, None, grpc_port=gport, tls=tls), access_log=False)
    gw = GatewayUnderTest(running, f"http://127.0.0.1:{port}", "", st.source)
    g = GrpcGateway(gw, f"127.0.0.1:{gport}", channel_credentials)
    try:
        await until(lambda: st.dispatcher.connected, 15, "gateway connected to NATS")
        yield g
    finally:
        await g.channel.close()
        await gw.close()


async def test_infer_answers_the_workers_result(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, echo):
        await g.gw.wait_for_workers(_echo_lane())
        items = [{"n": 1, "x": 2.5, "s": "é", "l": [True, None]}]
        resp = await g.infer(items=items, request_id="grpc-one")
        assert resp.WhichOneof("outcome") == "result"
        assert resp.request_id == "grpc-one" and resp.result.id == "grpc-one"
        assert [_plain(v) for v in resp.result.items] == items  # 1 stays an int through the worker
        assert resp.result.model == "test/echo" and resp.result.worker
        assert resp.result.timing.fields["attempt"].number_value == 1


async def test_no_worker_gives_the_job_and_getjob_follows_it_for_its_tenant_only(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        resp = await g.infer(ECHO_ONLY, items=["mine"], request_id="grpc-job")
        assert resp.WhichOneof("outcome") == "accepted"
        acc = resp.accepted
        assert acc.job_id == "grpc-job" and acc.status == "provisioning" and acc.pool == "default"
        assert acc.estimated_wait_s > 0 and acc.retry_after_s >= 1
        job = await g.stub.GetJob(pb.GetJobRequest(job_id="grpc-job"), metadata=ECHO_ONLY)
        assert job.state == "queued" and job.HasField("estimated_wait_s")
        # Another tenant: NOT_FOUND, the same answer as a job that never existed; `tenant` is admin-only.
        other = await g.refused(g.stub.GetJob(pb.GetJobRequest(job_id="grpc-job"), metadata=OTHER))
        never = await g.refused(g.stub.GetJob(pb.GetJobRequest(job_id="no-such-job"), metadata=OTHER))
        borrowed = await g.refused(g.stub.GetJob(pb.GetJobRequest(job_id="grpc-job", tenant="echo-only"),
                                                 metadata=OTHER))
        for code, _, trailers in (other, never, borrowed):
            assert code == grpc.StatusCode.NOT_FOUND and trailers["switchyard-error-code"] == "unknown_job"
        admin = await g.stub.GetJob(pb.GetJobRequest(job_id="grpc-job", tenant="echo-only"), metadata=ADMIN)
        assert admin.state == "queued"
        async with worker(nats_server.url, echo):
            await _until_final(g, "grpc-job", ECHO_ONLY)
        done = await g.stub.GetJob(pb.GetJobRequest(job_id="grpc-job"), metadata=ECHO_ONLY)
        assert done.state == "succeeded" and [_plain(v) for v in done.result.items] == ["mine"]


async def test_a_client_that_gives_up_never_loses_the_accepted_item(nats_server: NatsServer) -> None:
    """The client's deadline passes while its request is held through a cold start: the job stays and runs."""
    async with grpc_gateway(nats_server.url) as g:
        code, _, _ = await g.refused(g.infer(ECHO_ONLY, request_id="impatient", wait_seconds=10, timeout=1))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        async with worker(nats_server.url, echo):
            done = await _until_final(g, "impatient", ECHO_ONLY)
        assert done.state == "succeeded"


@pytest.mark.parametrize(("metadata", "why"), [
    ((), "missing API key"),
    ((("authorization", "Basic YWRtaW46eA=="),), "must be 'Bearer <key>'"),
    ((("authorization", "Bearer "),), "must be 'Bearer <key>'"),
    ((("authorization", "Bearer not-a-key"),), "unknown API key"),
])
async def test_missing_or_invalid_metadata_is_unauthenticated(nats_server: NatsServer, metadata: Any,
                                                              why: str) -> None:
    async with grpc_gateway(nats_server.url) as g:
        for call in (g.infer(metadata), g.stub.GetJob(pb.GetJobRequest(job_id="x"), metadata=metadata)):
            code, details, trailers = await g.refused(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED and why in details
            assert trailers["switchyard-error-code"] == "unauthorized"


async def test_errors_map_to_grpc_codes_with_the_switchyard_code(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        cases: list[tuple[Any, grpc.StatusCode, str]] = [
            (g.infer(model="no/such"), grpc.StatusCode.NOT_FOUND, "unknown_model"),
            (g.infer(op="fly"), grpc.StatusCode.NOT_FOUND, "not_found"),
            (g.infer(ECHO_ONLY, model="test/gpu"), grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
            (g.infer(items=[]), grpc.StatusCode.INVALID_ARGUMENT, "bad_request"),
            (g.infer(items=[math.nan]), grpc.StatusCode.INVALID_ARGUMENT, "bad_request"),
            (g.infer(request_id="bad id!"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request_id"),
            (g.infer(machine_profile="h100"), grpc.StatusCode.INVALID_ARGUMENT, "unknown_machine_profile"),
            (g.infer(pool="no-such-pool"), grpc.StatusCode.NOT_FOUND, "unknown_pool"),
        ]
        for call, want, code in cases:
            got, details, trailers = await g.refused(call)
            assert (got, trailers.get("switchyard-error-code")) == (want, code), details
        # A pinned pool without a live worker: UNAVAILABLE, with Retry-After as trailing metadata.
        got, _, trailers = await g.refused(g.infer(pool="tenant"))
        assert got == grpc.StatusCode.UNAVAILABLE and trailers["switchyard-error-code"] == "no_capacity"
        assert int(trailers["retry-after"]) > 0


async def test_worker_refusal_and_deadline(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        async with worker(nats_server.url, refuse):
            await g.gw.wait_for_workers(_echo_lane())
            got, details, trailers = await g.refused(g.infer(items=["bad"]))
            assert got == grpc.StatusCode.INVALID_ARGUMENT and trailers["switchyard-error-code"] == "invalid_input"
            assert details == "items must not be 'bad'"
        from handlers_for_tests import slow_echo

        async with worker(nats_server.url, slow_echo, model="test/slow"):
            await g.gw.wait_for_workers(_lane("test/slow"))
            got, _, trailers = await g.refused(g.infer(model="test/slow", params=_struct({"sleep": 3})))
            assert got == grpc.StatusCode.DEADLINE_EXCEEDED
            assert trailers["switchyard-error-code"] == "deadline_exceeded"


async def test_messages_past_the_body_limit_are_refused_and_the_server_goes_on(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        # Just past maxRequestBodyBytes (4096): refused by the gateway, with its code.
        got, details, trailers = await g.refused(g.infer(items=["x" * 5000]))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and trailers["switchyard-error-code"] == "payload_too_large"
        assert "limit is 4096" in details
        # Far past it: grpcio refuses it by its length prefix, before reading it.
        got, _, _ = await g.refused(g.infer(items=["x" * 4_000_000]))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Bytes that are no InferRequest: INVALID_ARGUMENT, not grpcio's INTERNAL.
        raw = g.channel.unary_unary("/switchyard.v1.Inference/Infer")
        got, _, trailers = await g.refused(raw(b"\xff\xff\xff", metadata=ADMIN))
        assert got == grpc.StatusCode.INVALID_ARGUMENT and trailers["switchyard-error-code"] == "bad_request"
        # Nested past protobuf's recursion limit: refused the same way.
        # By hand: protobuf's own encoder refuses this depth. Value.list_value is field 6, ListValue.values 1.
        deep = _field(3, b"x")  # Value.string_value
        for _ in range(80):
            deep = _field(6, _field(1, deep))
        request = _field(1, b"encode") + _field(2, b"test/echo") + _field(3, deep)
        got, _, trailers = await g.refused(raw(request, metadata=ADMIN))
        assert got == grpc.StatusCode.INVALID_ARGUMENT and trailers["switchyard-error-code"] == "bad_request"
        # The listener still serves.
        resp = await g.infer(ECHO_ONLY, items=["after"])
        assert resp.WhichOneof("outcome") == "accepted"


async def test_the_gateway_specs_grpc_limit_applies(nats_server: NatsServer, tmp_path: Path) -> None:
    """spec.listeners.grpc.maxReceiveMessageBytes below maxRequestBodyBytes: gRPC refuses what HTTP takes."""
    config = copy_manifests(tmp_path / "config")
    gw_yaml = config / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text().replace(
        "  maxRequestBodyBytes: 4096\n",
        "  maxRequestBodyBytes: 4096\n  listeners: {grpc: {maxReceiveMessageBytes: 2048, keepaliveTimeSeconds: 5}}\n"))
    async with grpc_gateway(nats_server.url, config) as g:
        assert g.gw.state.holder.table.grpc.max_receive_bytes == 2048
        got, details, _trailers = await g.refused(g.infer(ECHO_ONLY, items=["x" * 3000]))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit is 2048" in details
        r = await g.gw.call("POST", "/v1/encode/test/echo", headers={"Authorization": ECHO_ONLY[0][1]},
                            json={"items": ["x" * 3000]})
        assert r.status == 202, r.body


@pytest.mark.parametrize(("min_ping_s", "refused"), [(1, False), (30, True)])
async def test_the_client_ping_floor_comes_from_the_spec(nats_server: NatsServer, tmp_path: Path,
                                                         min_ping_s: int, refused: bool) -> None:
    """A client pinging every 1.5 s through a 10 s hold: allowed with a 1 s floor, GOAWAY (too_many_pings) with 30 s."""
    config = copy_manifests(tmp_path / "config")
    gw_yaml = config / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text().replace(
        "  maxRequestBodyBytes: 4096\n",
        f"  maxRequestBodyBytes: 4096\n  listeners: {{grpc: {{minClientPingIntervalSeconds: {min_ping_s}}}}}\n"))
    pinging = [("grpc.keepalive_time_ms", 1500), ("grpc.keepalive_permit_without_calls", 1),
               ("grpc.http2.max_pings_without_data", 0)]
    async with grpc_gateway(nats_server.url, config) as g:
        async with grpc.aio.insecure_channel(g.target, options=pinging) as channel:
            held = pb_grpc.InferenceStub(channel).Infer(
                pb.InferRequest(op="encode", model="test/echo", items=[_value("x")], wait_seconds=10),
                metadata=ECHO_ONLY, timeout=30)
            if refused:
                got, details, _ = await g.refused(held)
                assert got == grpc.StatusCode.UNAVAILABLE and "Too many pings" in details
            else:
                assert (await held).accepted.job_id


async def test_health_follows_readiness(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        health = health_pb2_grpc.HealthStub(g.channel)

        async def status(service: str = "") -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

        serving = health_pb2.HealthCheckResponse.SERVING
        for _ in range(100):
            if await status() == serving:
                break
            await asyncio.sleep(0.1)
        assert await status() == serving and await status("switchyard.v1.Inference") == serving
        nats_server.stop()  # NATS gone: not ready, as /readyz says
        for _ in range(200):
            if await status() != serving:
                break
            await asyncio.sleep(0.1)
        assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert (await g.gw.call("GET", "/readyz")).status == 503
        await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
        for _ in range(300):
            if await status() == serving:
                break
            await asyncio.sleep(0.1)
        assert await status() == serving


async def test_calls_are_counted_in_the_request_metrics(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        await g.infer(ECHO_ONLY, items=["counted"])
        await g.refused(g.infer(()))
        m = g.gw.state.metrics
        infer = "/switchyard.v1.Inference/Infer"
        assert m.requests.labels(infer, "202", "cpu")._value.get() == 1
        assert m.requests.labels(infer, "401", "")._value.get() == 1
        assert m.errors.labels(infer, "unauthorized")._value.get() == 1


async def test_without_a_table_at_start_the_listener_comes_with_the_first_one(nats_server: NatsServer) -> None:
    """Cluster mode: the table arrives after start (from the ConfigMap); gRPC's options come with it."""
    st = new_state(nats_server.url)
    gport = free_port()
    running = await start(st, Listen("127.0.0.1", free_port(), None, grpc_port=gport), access_log=False)
    try:
        assert running.grpc is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gport}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.InferenceStub(channel).Infer(pb.InferRequest(), metadata=ADMIN, timeout=2)
            assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        DirectoryConfig(MANIFESTS, st.holder).load()  # as cluster mode's ConfigMap would bring it
        await until(lambda: running.grpc is not None, 10, "the gRPC listener started with the table")
        assert running.grpc.port == gport
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gport}") as channel:
            # wait_for_ready: grpcio shares the refused subchannel across channels and backs off its reconnects.
            resp = await pb_grpc.InferenceStub(channel).Infer(
                pb.InferRequest(op="encode", model="test/echo", items=[_value("x")]), metadata=ECHO_ONLY,
                timeout=30, wait_for_ready=True)
            assert resp.WhichOneof("outcome") == "accepted"
    finally:
        await running.stop()


async def test_with_tls_the_grpc_port_serves_tls_only(nats_server: NatsServer, tmp_path: Path) -> None:
    from tlscerts import TestCA

    ca = TestCA()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue().write(cert, key)
    creds = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    async with grpc_gateway(nats_server.url, tls=TlsFiles(cert, key), channel_credentials=creds) as g:
        resp = await g.infer(ECHO_ONLY, items=["over tls"])
        assert resp.WhichOneof("outcome") == "accepted"
        async with grpc.aio.insecure_channel(g.target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.InferenceStub(plain).Infer(pb.InferRequest(), metadata=ECHO_ONLY, timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def _echo_lane() -> Any:
    return _lane("test/echo")


def _lane(model: str) -> Any:
    from switchyard.subjects import Lane

    return Lane(model, "default", "cpu", "default")


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: tag, varint length, payload."""
    out, n = bytearray([number << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def _struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def _plain(v: struct_pb2.Value) -> Any:
    from switchyard.gateway.grpc.values import to_python

    return to_python(v)


async def _until_final(g: GrpcGateway, job_id: str, metadata: Any, timeout: float = 20) -> pb.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await g.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata)
        if job.state in ("succeeded", "failed", "expired"):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s: {job}")
        await asyncio.sleep(0.1)


# -- InferStream ---------------------------------------------------------------------------------

STOPPED: list[int] = []  # attempts whose streaming handler was closed (its finally ran)


async def words(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    for i, word in enumerate(str(items[0]).split()):
        yield {"i": i, "text": word}
    ctx.usage = {"input_tokens": 7, "output_tokens": 3}


async def ticks(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    try:
        i = 0
        while True:
            yield {"i": i}
            i += 1
            await asyncio.sleep(0.02)
    finally:
        STOPPED.append(ctx.attempt)


async def test_infer_stream_forwards_chunks_in_order_then_the_end(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, words, model="test/echo"):
        await g.gw.wait_for_workers(_echo_lane())
        req = pb.InferRequest(op="generate", model="test/echo", items=[_value("one two three")], request_id="s-1")
        events = [e async for e in g.stub.InferStream(req, metadata=ADMIN)]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["chunk", "chunk", "chunk", "end"] and {e.request_id for e in events} == {"s-1"}
        assert [(e.chunk.seq, _plain(e.chunk.payload)) for e in events[:3]] == [
            (0, {"i": 0, "text": "one"}), (1, {"i": 1, "text": "two"}), (2, {"i": 2, "text": "three"})]
        assert events[-1].end.chunks == 3 and dict(events[-1].end.usage) == {"input_tokens": 7, "output_tokens": 3}


async def test_infer_stream_without_a_worker_answers_the_job(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        req = pb.InferRequest(op="generate", model="test/echo", items=[_value("a b")], request_id="s-cold")
        events = [e async for e in g.stub.InferStream(req, metadata=ECHO_ONLY)]
        assert [e.WhichOneof("event") for e in events] == ["accepted"] and events[0].accepted.job_id == "s-cold"
        async with worker(nats_server.url, words, model="test/echo"):
            done = await _until_final(g, "s-cold", ECHO_ONLY)
        assert done.state == "succeeded"
        assert [_plain(v) for v in done.result.items] == [{"i": 0, "text": "a"}, {"i": 1, "text": "b"}]


async def test_infer_stream_refuses_before_streaming_with_the_same_codes(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:
        async def first(req: pb.InferRequest, metadata: Any) -> None:
            async for _ in g.stub.InferStream(req, metadata=metadata):
                pass
        ok = pb.InferRequest(op="generate", model="test/echo", items=[_value("x")])
        for req, metadata, want, code in [
            (ok, (), grpc.StatusCode.UNAUTHENTICATED, "unauthorized"),
            (pb.InferRequest(op="generate", model="no/such", items=[_value("x")]), ADMIN,
             grpc.StatusCode.NOT_FOUND, "unknown_model"),
            (pb.InferRequest(op="generate", model="test/echo", items=[_value("x" * 5000)]), ADMIN,
             grpc.StatusCode.RESOURCE_EXHAUSTED, "payload_too_large"),
        ]:
            got, _, trailers = await g.refused(first(req, metadata))
            assert (got, trailers.get("switchyard-error-code")) == (want, code)


async def test_a_client_leaving_mid_stream_stops_the_worker(nats_server: NatsServer) -> None:
    STOPPED.clear()
    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, ticks, model="test/echo"):
        await g.gw.wait_for_workers(_echo_lane())
        call = g.stub.InferStream(pb.InferRequest(op="generate", model="test/echo", items=[_value("x")]),
                                  metadata=ADMIN)
        seen = 0
        async for event in call:
            assert event.chunk.seq == seen
            seen += 1
            if seen == 5:
                break
        call.cancel()
        await until(lambda: STOPPED == [1], 10, "the worker closed the handler of a cancelled stream")


async def test_a_client_that_stalls_is_bounded_by_the_route_timeout(nats_server: NatsServer) -> None:
    """test/slow has timeoutSeconds 1: a reader that stops for 2 s gets DEADLINE_EXCEEDED, and the worker stops."""
    STOPPED.clear()
    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, ticks, model="test/slow"):
        await g.gw.wait_for_workers(_lane("test/slow"))
        call = g.stub.InferStream(pb.InferRequest(op="encode", model="test/slow", items=[_value("x")]),
                                  metadata=ADMIN)
        first = await call.read()
        assert first.chunk.seq == 0
        await asyncio.sleep(2)  # not reading: the stream's messages wait in gRPC's flow-control window

        async def drain() -> None:
            while (event := await call.read()) is not grpc.aio.EOF:
                assert event.WhichOneof("event") == "chunk"
        got, _, trailers = await g.refused(drain())
        assert got == grpc.StatusCode.DEADLINE_EXCEEDED and trailers["switchyard-error-code"] == "deadline_exceeded"
        await until(lambda: STOPPED == [1], 10, "the worker closed the handler of a timed-out stream")
