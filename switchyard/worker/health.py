"""Liveness and readiness over HTTP, for Kubernetes probes.

Readiness follows the worker's own health (connected to NATS, not draining), so a
worker that loses NATS or is shutting down leaves its Service's EndpointSlice, and
gateways stop counting it at once.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


async def start_health_server(port: int, ready: Callable[[], bool], host: str = "0.0.0.0") -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"status": "ready" if ok else "not ready"}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
