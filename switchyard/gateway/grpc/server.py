"""The gRPC listener: switchyard.v1.Inference, grpc.health.v1 and server reflection on one port.

Its options come from spec.listeners.grpc (GrpcLimits in the table) and are read when the
server starts: grpcio cannot change them on a running server. The message limit is also
checked per request against the current table (service.py), so a reload can lower it.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ...api.table import GrpcLimits, RoutingTable
from ..state import GatewayState
from ..tls import ReloadingTls, grpc_server_credentials
from .service import SERVICE, InferenceService

log = logging.getLogger("switchyard.gateway.grpc")

# Past the receive limit, grpcio refuses a message by its length prefix alone, before reading it.
# The slack lets a message just over the limit reach service.py, which says payload_too_large.
SIZE_SLACK_BYTES = 64 * 1024
MAX_CONCURRENT_STREAMS = 128  # per connection, like a browser's cap: a client wanting more opens another
HEALTH_INTERVAL_S = 0.5
SERVICES = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)


def limits_of(table: RoutingTable) -> GrpcLimits:
    """spec.listeners.grpc, or its defaults when the Gateway has none (standalone with --grpc-port)."""
    return table.grpc or GrpcLimits(max_receive_bytes=table.max_request_body_bytes)


def server_options(limits: GrpcLimits) -> list[tuple[str, int]]:
    return [
        ("grpc.so_reuseport", 0),  # a second process on the port must fail, not share it
        ("grpc.max_receive_message_length", limits.max_receive_bytes + SIZE_SLACK_BYTES),
        ("grpc.max_send_message_length", limits.max_send_bytes),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
        # Ping idle connections, with or without calls, and drop those that do not answer.
        ("grpc.keepalive_time_ms", int(limits.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(limits.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # The other way: a client pinging more often than this gets GOAWAY (too_many_pings).
        ("grpc.http2.min_ping_interval_without_data_ms", int(limits.min_ping_interval_s * 1000)),
    ]


class GrpcServer:
    """A started gRPC listener; `port` is the bound one (0 picks a free port)."""

    def __init__(self, server: grpc.aio.Server, health: health_aio.HealthServicer, port: int,
                 watcher: asyncio.Task[None]) -> None:
        self._server, self._health, self.port, self._watcher = server, health, port, watcher

    async def stop(self, grace: float = 5.0) -> None:
        await self._health.enter_graceful_shutdown()  # Check answers NOT_SERVING from now on
        self._watcher.cancel()
        with suppress(asyncio.CancelledError):
            await self._watcher
        await self._server.stop(grace)  # no new calls; calls in flight get `grace` seconds


async def serve(st: GatewayState, host: str, port: int, tls: ReloadingTls | None = None) -> GrpcServer:
    """Serve on host:port with the current table's options; the table must be loaded."""
    table = st.holder.table
    assert table is not None, "the gRPC server's options come from the routing table"
    server = grpc.aio.server(options=server_options(limits_of(table)))
    server.add_generic_rpc_handlers((InferenceService(st).handler(),))
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(SERVICES, server)
    address = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, grpc_server_credentials(tls)) if tls is not None
                 else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address} for gRPC: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {address} for gRPC")
    await server.start()
    watcher = asyncio.create_task(_report_health(st, health))
    log.info("gRPC listening", extra={"host": host, "port": bound, "tls": tls is not None})
    return GrpcServer(server, health, bound, watcher)


async def _report_health(st: GatewayState, health: health_aio.HealthServicer) -> None:
    """SERVING exactly when /readyz says ready: NATS connected and a routing table loaded."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    last = None
    while True:
        now = serving if st.dispatcher.connected and st.holder.table is not None else not_serving
        if now != last:
            for name in ("", SERVICE):  # "": the server as a whole, what grpcurl and probes ask by default
                await health.set(name, now)
            last = now
        await asyncio.sleep(HEALTH_INTERVAL_S)
