"""KEDA's external-push scaler (externalscaler.proto), served by every gateway replica.

KEDA reaches the gateways through their Service, one pod at a time, so each answer
is read from JetStream, never from this replica's memory: the demand of a target
is the number of items stored on its lanes. The work stream has work-queue
retention, so a stored item is one that is queued or in flight (delivered, not
yet acked) — exactly what the fleet has to absorb.

A target is named by the ScaledObject's trigger metadata: `model` (required) and
optionally `machineProfile`, `bundle` and `pool`, each narrowing the lanes counted.
`targetPendingPerReplica` is the metric target; `activationThreshold` is applied
here, because KEDA does not apply it to external scalers.

StreamIsActive: one poll loop per gateway (every `interval_s` while any stream is
open) re-reads the per-lane counts and pushes each stream's state when it changes,
so an item accepted by any replica reaches KEDA within about `interval_s`.

A stopping gateway ends its streams cleanly (status OK). KEDA v2.21 retries a stream
after a backoff that starts at 2 s and doubles up to 60 s, and resets it only when a
stream ends with EOF: a stream cut by an error (a gateway killed, or stopped without
this) makes every later reopen of that ScaledObject's stream wait twice as long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc
from google.protobuf.message import Message
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge

from ..subjects import WORK_PREFIX, WORK_STREAM, token
from .externalscaler import externalscaler_pb2 as pb
from .externalscaler import externalscaler_pb2_grpc as pb_grpc

log = logging.getLogger("switchyard.gateway.scaler")

METRIC = "switchyard-pending"  # KEDA shows it as s<i>-switchyard-pending
POLL_INTERVAL_S = 0.2

Counts = Mapping[str, int]  # work subject -> stored items
Context: TypeAlias = "grpc.aio.ServicerContext[Message, Message]"  # KEDA's calls: protobuf in, protobuf out


class Unavailable(Exception):
    """JetStream cannot be read: the demand is unknown, which is not the same as zero."""


@dataclass(frozen=True, slots=True)
class Target:
    """What one ScaledObject trigger scales on."""

    model: str
    machine_profile: str | None = None
    bundle: str | None = None
    pool: str | None = None
    per_replica: float = 4.0
    activation_threshold: float = 0.0

    @classmethod
    def from_metadata(cls, md: Mapping[str, str]) -> Target:
        if not md.get("model"):
            raise ValueError("trigger metadata has no `model`")
        per_replica = float(md.get("targetPendingPerReplica") or 4)
        threshold = float(md.get("activationThreshold") or 0)
        if per_replica <= 0 or threshold < 0:
            raise ValueError("targetPendingPerReplica must be > 0 and activationThreshold >= 0")
        return cls(model=md["model"], machine_profile=md.get("machineProfile") or None,
                   bundle=md.get("bundle") or None, pool=md.get("pool") or None,
                   per_replica=per_replica, activation_threshold=threshold)

    @property
    def subject_filter(self) -> str:
        """Work subjects of this target's lanes: sy.work.<pool>.<profile>.<bundle>.<model>."""
        parts = (self.pool, self.machine_profile, self.bundle)
        return ".".join([WORK_PREFIX, *(token(p) if p else "*" for p in parts), token(self.model)])

    def demand(self, counts: Counts) -> int:
        """Items stored on the target's lanes: their own subjects and their queues (a class and tenant each)."""
        want = self.subject_filter.split(".")
        return sum(n for subject, n in counts.items()
                   if _matches(want, subject.split(".")[:LANE_TOKENS]) and subject.count(".") in (5, 7))

    def active(self, demand: int) -> bool:
        return demand > self.activation_threshold


LANE_TOKENS = 6  # sy.work.<pool>.<profile>.<bundle>.<model>; a queue adds <class>.<tenant>


def _matches(pattern: list[str], subject: list[str]) -> bool:
    return len(pattern) == len(subject) and all(p in ("*", s) for p, s in zip(pattern, subject, strict=True))


async def read_counts(js: JetStreamContext, subject_filter: str = f"{WORK_PREFIX}.>") -> dict[str, int]:
    """Stored items per work subject, as JetStream has them now."""
    info = await js.stream_info(WORK_STREAM, subjects_filter=subject_filter)
    return dict(info.state.subjects or {})


@dataclass(eq=False)
class _Watcher:
    target: Target
    queue: asyncio.Queue[bool | None] = field(default_factory=asyncio.Queue)  # None: end the stream
    last: bool | None = None

    def offer(self, counts: Counts) -> None:
        state = self.target.active(self.target.demand(counts))
        if state != self.last:
            self.last = state
            self.queue.put_nowait(state)


class Activity:
    """Pushes each open stream's active state when it changes; polls only while streams are open."""

    def __init__(self, reader: Callable[[], Awaitable[Counts]], interval_s: float = POLL_INTERVAL_S,
                 registry: CollectorRegistry | None = None) -> None:
        self._read = reader
        self.interval_s = interval_s
        self._watchers: set[_Watcher] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        registry = registry or CollectorRegistry()  # a private one when the caller exports none
        self.streams = Gauge("switchyard_gateway_scaler_streams", "Open KEDA StreamIsActive streams",
                             registry=registry)
        self.pushes = Counter("switchyard_gateway_scaler_pushes", "States pushed to KEDA on StreamIsActive",
                              ["active"], registry=registry)

    async def changes(self, target: Target) -> AsyncIterator[bool]:
        if self._closed:
            return  # stopping: a stream opened now ends at once, cleanly
        w = _Watcher(target)
        self._watchers.add(w)
        self.streams.inc()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        try:
            while (state := await w.queue.get()) is not None:
                self.pushes.labels(str(state).lower()).inc()
                yield state
        finally:
            self._watchers.discard(w)
            self.streams.dec()

    async def _loop(self) -> None:
        while True:
            if not self._watchers:
                self._wake.clear()
                await self._wake.wait()
            try:
                counts = await self._read()
            except Unavailable:
                pass  # unknown is not idle: push nothing until JetStream answers again
            except Exception as exc:  # noqa: BLE001 - the loop outlives any failure: logged, the next tick retries
                log.warning("reading the work stream failed", extra={"error": repr(exc)})
            else:
                for w in list(self._watchers):
                    w.offer(counts)
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """End every open stream (KEDA sees EOF, which resets its retry backoff) and stop polling."""
        self._closed = True
        for w in self._watchers:
            w.queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    def __init__(self, js: Callable[[], JetStreamContext | None], interval_s: float = POLL_INTERVAL_S,
                 registry: CollectorRegistry | None = None) -> None:
        self._js = js
        self.activity = Activity(self._all_counts, interval_s, registry)
        # "namespace/name" -> when each of its open streams opened (monotonic): the Nudger checks its touches by it.
        self.open_streams: dict[str, list[float]] = {}

    async def _counts(self, subject_filter: str) -> dict[str, int]:
        js = self._js()
        if js is None:
            raise Unavailable("not connected to NATS")
        try:
            return await read_counts(js, subject_filter)
        except Exception as exc:
            raise Unavailable(f"reading the work stream failed: {exc!r}") from exc

    async def _all_counts(self) -> dict[str, int]:
        return await self._counts(f"{WORK_PREFIX}.>")

    async def _demand(self, ref: pb.ScaledObjectRef, context: Context) -> tuple[Target, int]:
        target = await _target(ref, context)
        try:
            counts = {**await self._counts(target.subject_filter), **await self._counts(target.subject_filter + ".>")}
            return target, target.demand(counts)
        except Unavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # unreachable: abort raises

    async def IsActive(self, request: pb.ScaledObjectRef,  # the methods' names are the proto's
                       context: Context) -> pb.IsActiveResponse:
        target, demand = await self._demand(request, context)
        return pb.IsActiveResponse(result=target.active(demand))

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: Context) -> AsyncIterator[pb.IsActiveResponse]:
        target = await _target(request, context)
        key, opened = f"{request.namespace}/{request.name}", time.monotonic()
        self.open_streams.setdefault(key, []).append(opened)
        log.info("KEDA opened an activity stream", extra={"scaled_object": key, "model": target.model})
        try:
            async for active in self.activity.changes(target):
                yield pb.IsActiveResponse(result=active)
        finally:
            self.open_streams[key].remove(opened)
            if not self.open_streams[key]:
                del self.open_streams[key]

    async def GetMetricSpec(self, request: pb.ScaledObjectRef,
                            context: Context) -> pb.GetMetricSpecResponse:
        # Answered without NATS: KEDA needs it to make the HPA, whatever the queue's state.
        target = await _target(request, context)
        return pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(metricName=METRIC,
                                                                   targetSizeFloat=target.per_replica)])

    async def GetMetrics(self, request: pb.GetMetricsRequest,
                         context: Context) -> pb.GetMetricsResponse:
        _, demand = await self._demand(request.scaledObjectRef, context)
        return pb.GetMetricsResponse(metricValues=[pb.MetricValue(
            metricName=request.metricName or METRIC, metricValue=demand, metricValueFloat=float(demand))])

    async def StreamMetricSpec(self, request: pb.ScaledObjectRef,
                               context: Context) -> AsyncIterator[pb.GetMetricSpecResponse]:
        # Optional in the protocol: KEDA falls back to GetMetricSpec, whose answer never changes.
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "metric specs are static; use GetMetricSpec")
        yield pb.GetMetricSpecResponse()  # unreachable; makes this an async generator


async def _target(ref: pb.ScaledObjectRef, context: Context) -> Target:
    try:
        return Target.from_metadata(ref.scalerMetadata)
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"ScaledObject {ref.namespace}/{ref.name}: {exc}")
        raise  # unreachable: abort raises


class ScalerServer:
    """The gRPC server on the scaler port; `port` is the bound one (0 picks a free port)."""

    def __init__(self, servicer: ExternalScaler, server: grpc.aio.Server, port: int) -> None:
        self.servicer, self._server, self.port = servicer, server, port

    async def stop(self, grace: float = 1.0) -> None:
        await self.servicer.activity.close()  # the streams end with OK within the grace
        await self._server.stop(grace)


async def serve(js: Callable[[], JetStreamContext | None], host: str, port: int,
                interval_s: float = POLL_INTERVAL_S, registry: CollectorRegistry | None = None) -> ScalerServer:
    servicer = ExternalScaler(js, interval_s, registry)
    # No SO_REUSEPORT (gRPC's default): a second process on the port must fail, not share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port} for the KEDA scaler: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} for the KEDA scaler")
    await server.start()
    log.info("KEDA external scaler listening", extra={"host": host, "port": bound})
    return ScalerServer(servicer, server, bound)
