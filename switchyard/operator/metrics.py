"""Prometheus metrics of the operator process, served on --metrics-port (off when unset).

Every replica serves its own: `switchyard_operator_leader` is 1 on the one that holds
the Lease, so the sum over replicas is 1 in a healthy install and 0 with no leader.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

T = TypeVar("T")
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.leader = Gauge(
            "switchyard_operator_leader", "1 while this replica holds the leader Lease and reconciles", registry=r)
        self.reconciles = Counter(
            "switchyard_operator_reconciles", "Namespace passes by outcome (ok, error: retried with backoff)",
            ["outcome"], registry=r)
        self.reconcile_latency = Histogram(
            "switchyard_operator_reconcile_duration_seconds", "Duration of one namespace pass",
            buckets=RECONCILE_BUCKETS, registry=r)
        self.relists = Counter(
            "switchyard_operator_watch_relists", "Full lists of a watched kind by the cache: the first, one after "
            "a watch fell out of etcd's window (410) or the API server was away, and the --relist-seconds repair",
            ["kind"], registry=r)
        for outcome in ("ok", "error"):  # both series exist from the start: a rate of errors is 0, not absent
            self.reconciles.labels(outcome)

    def counted(self, reconcile: Callable[[str], Awaitable[T]]) -> Callable[[str], Awaitable[T]]:
        """`reconcile`, counting each pass and its outcome."""
        async def run(namespace: str) -> T:
            started = time.perf_counter()
            try:
                outcome = await reconcile(namespace)
            except Exception:
                self.reconciles.labels("error").inc()
                raise
            finally:
                self.reconcile_latency.observe(time.perf_counter() - started)
            self.reconciles.labels("ok").inc()
            return outcome
        return run


async def serve(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
