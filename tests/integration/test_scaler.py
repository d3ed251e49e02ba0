"""The KEDA external scaler against a real nats-server, called over gRPC as KEDA calls it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from switchyard.gateway.externalscaler import externalscaler_pb2 as pb
from switchyard.gateway.externalscaler import externalscaler_pb2_grpc as pb_grpc
from switchyard.gateway.scaler import METRIC, ScalerServer, serve
from switchyard.jetstream import ensure_work_stream, lane_consumer_config
from switchyard.natsserver import NatsServer
from switchyard.subjects import WORK_STREAM, Lane

BGE = Lane(model="BAAI/bge-m3", bundle="default", machine_profile="l4", pool="default")
BGE_A100 = Lane(model="BAAI/bge-m3", bundle="default", machine_profile="a100-80gb", pool="default")
OTHER = Lane(model="other/model", bundle="default", machine_profile="l4", pool="default")


def ref(**metadata: str) -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="bge-m3", namespace="ns", scalerMetadata={"model": BGE.model, **metadata})


@pytest.fixture
async def scalers(nats_client: NATS) -> AsyncIterator[list[tuple[ScalerServer, pb_grpc.ExternalScalerStub]]]:
    """Two scalers, as two gateway replicas would serve them, on the same JetStream."""
    js = nats_client.jetstream()
    await ensure_work_stream(js)
    out, channels = [], []
    for _ in range(2):
        server = await serve(lambda: js, "127.0.0.1", 0, interval_s=0.1)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        out.append((server, pb_grpc.ExternalScalerStub(channel)))
    try:
        yield out
    finally:
        for channel in channels:
            await channel.close()
        for server, _ in out:
            await server.stop()


async def publish(nc: NATS, lane: Lane, n: int) -> None:
    js = nc.jetstream()
    for _ in range(n):
        await js.publish(lane.subject, b"item")


async def demand(stub: pb_grpc.ExternalScalerStub, **metadata: str) -> float:
    resp = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName=METRIC))
    assert [v.metricName for v in resp.metricValues] == [METRIC]
    return resp.metricValues[0].metricValueFloat


async def test_metric_spec_demand_and_activation_threshold(nats_client: NATS, scalers: list) -> None:
    (_, a), (_, b) = scalers
    spec = await a.GetMetricSpec(ref(targetPendingPerReplica="10"))
    assert [(s.metricName, s.targetSizeFloat) for s in spec.metricSpecs] == [(METRIC, 10.0)]
    assert not (await a.IsActive(ref())).result
    assert await demand(a) == 0

    await publish(nats_client, BGE, 2)
    await publish(nats_client, BGE_A100, 1)
    await publish(nats_client, OTHER, 5)  # another model's lanes never count
    # Every replica reads the same JetStream state, so every replica answers the same.
    assert [await demand(s) for s in (a, b)] == [3, 3]
    assert [await demand(s, machineProfile="l4") for s in (a, b)] == [2, 2]
    assert await demand(a, machineProfile="a100-80gb", bundle="default", pool="default") == 1
    # KEDA does not apply activationThreshold to external scalers; IsActive does.
    assert (await a.IsActive(ref(activationThreshold="2"))).result
    assert not (await b.IsActive(ref(activationThreshold="3"))).result
    assert not (await a.IsActive(ref(machineProfile="l4", activationThreshold="2"))).result


async def test_in_flight_items_count_until_acked(nats_client: NATS, scalers: list) -> None:
    (_, a), _ = scalers
    js = nats_client.jetstream()
    await js.add_consumer(WORK_STREAM, lane_consumer_config(BGE))
    await publish(nats_client, BGE, 2)
    sub = await js.pull_subscribe_bind(BGE.consumer, stream=WORK_STREAM)
    msgs = await sub.fetch(2, timeout=5)
    assert await demand(a) == 2  # delivered but not acked: still the fleet's work
    await msgs[0].ack_sync()
    assert await demand(a) == 1
    await msgs[1].ack_sync()
    assert await demand(a) == 0
    assert not (await a.IsActive(ref())).result


async def test_stream_pushes_the_first_item_whichever_replica_queued_it(nats_client: NATS, scalers: list) -> None:
    (_, a), _ = scalers
    call = a.StreamIsActive(ref())
    try:
        first = await asyncio.wait_for(call.read(), 10)
        assert first.result is False  # the current state at once
        await publish(nats_client, BGE, 1)  # another client: no gateway of this process accepted it
        pushed = await asyncio.wait_for(call.read(), 10)
        assert pushed.result is True
    finally:
        call.cancel()


async def test_stream_ignores_items_below_the_threshold_and_other_fleets(nats_client: NATS, scalers: list) -> None:
    (_, a), _ = scalers
    call = a.StreamIsActive(ref(machineProfile="a100-80gb", activationThreshold="1"))
    try:
        assert (await asyncio.wait_for(call.read(), 10)).result is False
        await publish(nats_client, BGE, 3)  # the l4 fleet's lane
        await publish(nats_client, BGE_A100, 1)  # not above the threshold
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(read := asyncio.ensure_future(call.read())), 1.0)
        await publish(nats_client, BGE_A100, 1)
        assert (await asyncio.wait_for(read, 10)).result is True
    finally:
        call.cancel()


async def test_bad_metadata_and_the_optional_rpc(scalers: list) -> None:
    (_, a), _ = scalers
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await a.IsActive(pb.ScaledObjectRef(name="x", namespace="ns", scalerMetadata={}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await a.GetMetricSpec(ref(targetPendingPerReplica="0"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    call = a.StreamMetricSpec(ref())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unknown_demand_is_an_error_not_zero() -> None:
    """NATS down: IsActive and GetMetrics fail (KEDA then keeps the replicas), GetMetricSpec still answers."""
    server = NatsServer().start()
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_work_stream(js)
    scaler = await serve(lambda: js if nc.is_connected else None, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{scaler.port}")
    stub = pb_grpc.ExternalScalerStub(channel)
    try:
        assert await demand(stub) == 0
        server.close()
        for rpc in (stub.IsActive(ref()),
                    stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName=METRIC))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await rpc
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (await stub.GetMetricSpec(ref())).metricSpecs[0].metricName == METRIC
    finally:
        await channel.close()
        await scaler.stop()
        await nc.close()
        server.close()


async def test_a_taken_port_fails_loudly(scalers: list) -> None:
    (taken, _), _ = scalers
    with pytest.raises(OSError):
        await serve(lambda: None, "127.0.0.1", taken.port)


async def test_a_stopping_scaler_ends_its_streams_cleanly(nats_client: NATS) -> None:
    """KEDA resets its stream retry backoff (2 s doubling to 60 s) only on EOF: a gateway that stops
    must end StreamIsActive with OK, not let the server cancel it."""
    js = nats_client.jetstream()
    await ensure_work_stream(js)
    registry = CollectorRegistry()
    server = await serve(lambda: js, "127.0.0.1", 0, interval_s=0.1, registry=registry)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        call = pb_grpc.ExternalScalerStub(channel).StreamIsActive(ref())
        assert (await asyncio.wait_for(call.read(), 10)).result is False
        await server.stop(grace=5)
        assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert registry.get_sample_value("switchyard_gateway_scaler_streams") == 0
    finally:
        await channel.close()
        await server.stop()
