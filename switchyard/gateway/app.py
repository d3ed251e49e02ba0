"""Assemble and run one gateway process: HTTP app, metrics port, NATS, config."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..api.table import HttpLimits
from ..jetstream import NATS_FAILURES
from ..logs import Repeats
from ..runtime import StopSignals
from ..tasks import Background
from . import (
    auth,
    capacity,
    configs,
    deadletter_api,
    events,
    health,
    inference,
    joblist,
    jobs,
    openapi,
    plans,
    pools,
    usage,
    websocket,
)
from .advisories import DeadLetters
from .config import TableHolder
from .configsource import Manual, SourceFactory, SourceParts
from .demand import Demand
from .dispatch import Dispatcher
from .grpc.server import GrpcServer
from .grpc.server import serve as serve_grpc
from .http import make_middleware
from .listener import GuardedAppRunner
from .metrics import Metrics
from .openai_api import discovery
from .openai_api import routes as openai_routes
from .openai_api.errors import openai_error_response
from .policy import headers as policy_headers
from .registry import Registry
from .scaler import ScalerServer
from .scaler import serve as serve_scaler
from .state import STATE, GatewayState
from .tls import ReloadingTls, TlsFiles, TlsSite

log = logging.getLogger("switchyard.gateway")


def build_app(st: GatewayState, *, access_log: bool = True) -> web.Application:
    # The OpenAI paths answer errors in OpenAI's shape, from the middleware's own (405, bad X-Request-ID) on.
    openai_shape = {path: openai_error_response for path in openai_routes.OPENAI_PATHS}
    app = web.Application(middlewares=[make_middleware(lambda: st.holder.table, st.metrics, access_log,
                                                       error_shapes=openai_shape)])
    # read_json counts decoded bytes against maxRequestBodyBytes itself; aiohttp's own check (request.read,
    # post) follows the same limit. It has no setter, and the table changes at runtime: set the attribute.
    st.holder.on_change(lambda t: setattr(app, "_client_max_size", t.max_request_body_bytes))
    app[STATE] = st
    auth.setup(app)  # a rotating key's Deprecation and Sunset on every answer
    r = app.router
    r.add_get("/healthz", health.healthz)
    r.add_get("/readyz", health.readyz)
    r.add_get("/health", health.health)
    r.add_get("/", discovery.root)
    r.add_get("/status", discovery.status)
    r.add_get("/v1/metadata", discovery.metadata)
    r.add_get("/v1/models", discovery.list_models)  # OpenAI's list; Switchyard's view is /v1/configs/models
    r.add_get("/v1/models/{id:.+}", discovery.get_model)
    for path, handler in openai_routes.ROUTES:  # before /v1/{op}/{model}, which would match them too
        r.add_post(path, handler)
    r.add_get("/v1/configs/models", configs.list_models)
    r.add_get("/v1/configs/models/{id:.+}", configs.get_model)
    r.add_get("/v1/configs/bundles", configs.list_bundles)
    r.add_get("/v1/configs/bundles/{id}", configs.get_bundle)
    r.add_post("/v1/configs/resolve", configs.dry_run)
    r.add_get("/v1/jobs", joblist.list_jobs)
    r.add_get("/v1/jobs/{id}", jobs.get_job)
    r.add_post("/v1/jobs/{id}/cancel", jobs.cancel_job)
    r.add_delete("/v1/jobs/{id}", jobs.delete_job)
    r.add_get("/v1/capacity", capacity.get_capacity)
    r.add_get("/v1/deadletters", deadletter_api.list_dead_letters)
    r.add_post("/v1/deadletters/requeue", deadletter_api.requeue_dead_letters)
    r.add_get("/v1/deadletters/{seq}", deadletter_api.get_dead_letter)
    r.add_post("/v1/pools", pools.create_pool)
    r.add_get("/v1/pools", pools.list_pools)
    r.add_get("/v1/pools/{name}", pools.get_pool)
    r.add_post("/v1/pools/{name}/renew", pools.renew_pool)
    r.add_delete("/v1/pools/{name}", pools.delete_pool)
    plans.setup(app)  # GET /v1/plans, POST /v1/plans/{planner}: before the route below would take them
    r.add_post("/v1/{op}/{model:.+}", inference.infer)
    events.setup(app, st)  # GET /v1/events, and the bridges that feed it
    usage.setup(app, st)  # GET /v1/usage, the usage counters and the anomaly watch
    websocket.setup(app)  # GET /v1/ws
    policy_headers.setup(app)  # RateLimit-Policy / RateLimit on admitted requests
    openapi.setup(app)  # GET /openapi.json, GET /docs: every route above, described
    return app


def build_metrics_app(metrics: Metrics) -> web.Application:
    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    return app


def new_state(nats_url: str, source: SourceFactory = Manual, instance: str | None = None) -> GatewayState:
    """A gateway's state, complete: its config source (configsource.py) is built here with the parts it
    uses, and decides which heartbeats the registry counts."""
    instance = instance or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    metrics = Metrics()
    holder = TableHolder()
    holder.on_change(lambda t: metrics.config_epoch.set(t.epoch))
    registry: Registry  # made below, once the source is; the dispatcher calls it only after connecting

    async def resync() -> None:
        await registry.resync()

    dispatcher = Dispatcher(nats_url, instance, on_state=lambda up: metrics.nats_connected.set(1 if up else 0),
                            on_reconnect=resync,
                            jobs_ttl_s=lambda: holder.table.result_ttl_seconds if holder.table else 3600.0,
                            sync_ttl_s=lambda: holder.table.sync_result_ttl_seconds if holder.table else 0.0,
                            queue_limits=lambda: holder.table.queue if holder.table else None)
    holder.on_change(lambda t: dispatcher.queue_changed())  # hot reload of spec.queue
    config = source(SourceParts(holder, dispatcher, metrics))
    registry = Registry(admit=config.admits)
    return GatewayState(instance, holder, dispatcher, registry, Demand(metrics), metrics, config)


@dataclass
class Listen:
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int | None = 9090
    scaler_port: int | None = None  # KEDA external scaler (gRPC); None: not served, 0: any free port
    tls: TlsFiles | None = None  # HTTPS on the HTTP and metrics listeners, reloaded when the files change
    grpc_port: int | None = None  # switchyard.v1.Inference (gRPC); None: not served, 0: any free port


class Running:
    """A started gateway: HTTP sites plus background tasks; `stop()` undoes it all."""

    def __init__(self, st: GatewayState, runners: list[web.AppRunner], tasks: Background,
                 scaler: ScalerServer | None = None) -> None:
        self.state, self._runners, self._tasks, self.scaler = st, runners, tasks, scaler
        self.tls: ReloadingTls | None = None  # the listeners' certificate, when TLS is on
        self.grpc: GrpcServer | None = None  # the gRPC listener, once started

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        if self.scaler is not None:
            await self.scaler.stop()
        for runner in self._runners:
            await runner.cleanup()  # stops accepting, lets in-flight requests finish
        await self._tasks.stop()
        await self.state.dispatcher.close()


async def start(st: GatewayState, listen: Listen, *, access_log: bool = True,
                background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()) -> Running:
    # Loaded first: a certificate that does not load fails startup before anything listens.
    tls = None
    if listen.tls is not None:
        cert = str(listen.tls.cert)
        tls = ReloadingTls(listen.tls, on_reload=lambda outcome, expiry: _tls_metrics(st, cert, outcome, expiry))
    scaler = None
    if listen.scaler_port is not None:  # first: a taken port then fails before anything else listens
        scaler = await serve_scaler(lambda: st.dispatcher.js if st.dispatcher.connected else None,
                                    listen.host, listen.scaler_port, registry=st.metrics.registry)
    grpc_server = None
    if listen.grpc_port is not None and st.holder.table is not None:  # a taken port fails before HTTP listens
        grpc_server = await serve_grpc(st, listen.host, listen.grpc_port, tls)
    runners = []
    for app, port, guarded in [(build_app(st, access_log=access_log), listen.port, True),
                               (build_metrics_app(st.metrics), listen.metrics_port, False)]:
        if port is None:
            continue
        if guarded:  # the API: header/body/idle timeouts and the connection cap of spec.listeners.http
            runner: web.AppRunner = GuardedAppRunner(
                app, limits=lambda: st.holder.table.http if st.holder.table else HttpLimits(),
                metrics=st.metrics, access_log=None, shutdown_timeout=30)
        else:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=30)
        await runner.setup()
        if tls is None:
            await web.TCPSite(runner, listen.host, port, reuse_address=True).start()
        else:  # the handshake gets the same deadline as the request line and headers after it
            limits = st.holder.table.http if st.holder.table else HttpLimits()
            await TlsSite(runner, listen.host, port, reuse_address=True, ssl_context=tls.context,
                          handshake_timeout_s=limits.header_timeout_s).start()
        runners.append(runner)

    async def connect_then_watch() -> None:
        await st.dispatcher.connect()
        assert st.dispatcher.nc is not None and st.dispatcher.workers is not None
        await st.registry.start(st.dispatcher.nc, st.dispatcher.workers)
        await _observe(st)

    tasks = Background()
    tasks.start(connect_then_watch(), name="nats")
    tasks.start(st.eta.watch(), name="eta")
    tasks.start(st.policy.tend_forever(), name="policy")
    tasks.start(st.source.run(), name="config")  # the table (reloads), pools, ready endpoints
    if tls is not None:
        tasks.start(tls.watch(), name="tls")
    for fn in background:
        tasks.start(fn())
    log.info("gateway listening", extra={"host": listen.host, "port": listen.port,
                                         "metrics_port": listen.metrics_port, "instance": st.instance,
                                         "tls": tls is not None})
    running = Running(st, runners, tasks, scaler)
    running.tls = tls
    running.grpc = grpc_server
    if listen.grpc_port is not None and grpc_server is None:  # cluster mode: its options come with the table
        tasks.start(_grpc_once_loaded(running, listen.host, listen.grpc_port, tls), name="grpc")
    return running


async def _grpc_once_loaded(running: Running, host: str, port: int, tls: ReloadingTls | None) -> None:
    st = running.state
    loaded = asyncio.Event()
    st.holder.on_change(lambda table: loaded.set())
    await loaded.wait()
    try:
        running.grpc = await serve_grpc(st, host, port, tls)
    except OSError:
        log.exception("the gRPC listener could not start")  # HTTP keeps serving; /readyz is unaffected
        raise


def _tls_metrics(st: GatewayState, cert: str, outcome: str, expiry: float | None) -> None:
    if outcome != "started":
        st.metrics.tls_reloads.labels(outcome).inc()
    if expiry is not None:
        st.metrics.tls_expiry.labels(cert).set(expiry)


async def _observe(st: GatewayState) -> None:
    """Refresh demand, readiness and per-worker gauges; count dead letters from JetStream's advisories."""
    # Read at scrape time, as /readyz decides: NATS connected and a routing table loaded.
    st.metrics.ready.set_function(lambda: float(st.dispatcher.connected and st.holder.table is not None))
    dead_letters = DeadLetters(st.metrics)
    failures = Repeats(log)
    subscribed = False
    exported: set[tuple[str, str, str, str]] = set()
    while True:
        connected = st.dispatcher.connected and st.dispatcher.js is not None
        if connected and not subscribed and st.dispatcher.nc is not None and st.dispatcher.js is not None:
            try:  # retried on the next round; the subscription survives reconnects
                await dead_letters.subscribe(st.dispatcher.nc, st.dispatcher.js)
                subscribed = True
            except NATS_FAILURES as exc:
                failures.failed("dead-letter advisory subscription", exc)
        if connected and st.dispatcher.js is not None:
            await st.demand.refresh(st.dispatcher.js)  # logs its own failures
        live = st.registry.live()
        st.metrics.worker_in_flight.clear()
        fleets: Counter[tuple[str, str, str, str]] = Counter()
        for b in live:
            st.metrics.worker_in_flight.labels(b.worker_id, b.machine_profile, b.pool).set(b.in_flight)
            for model in set(b.models):  # a worker pulls every lane of its models: it serves each fleet
                fleets[(b.pool, b.machine_profile, b.bundle, model)] += 1
        for key in exported - set(fleets):
            st.metrics.workers_live.labels(*key).set(0)  # scaled to zero: report zero, not a stale count
        for key, n in fleets.items():
            st.metrics.workers_live.labels(*key).set(n)
        exported |= set(fleets)
        await asyncio.sleep(st.demand.interval_s)


async def serve_forever(running: Running) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    with StopSignals() as signals:
        await signals.stopping.wait()
        log.info("shutting down")
        await running.stop()
