"""Usage accounting in the gateway (docs/usage.md): GET /v1/usage, the counters and the anomaly watch.

Workers append one record per finished attempt to the usage ledger (worker/usage.py). The gateway
owns the ledger's configuration (spec.usage.retentionDays, spec.queue.replicas, applied whenever they
change), reads it by time range for GET /v1/usage (usage_api.py), counts it into metrics through a
consumer shared by the replicas (usage_metrics.py), and follows all of it for anomalies (usage_anomaly.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.js.errors
from aiohttp import web
from nats.js import JetStreamContext

from ..api.table import UsageRoute
from ..jetstream import apply_usage_stream, ensure_events_stream, usage_stream_config
from ..subjects import USAGE_STREAM
from ..tasks import cancel_all, forever
from . import usage_api
from .state import GatewayState
from .usage_anomaly import AnomalyRule, AnomalyWatch
from .usage_metrics import UsageMetrics, count_forever

log = logging.getLogger("switchyard.gateway.usage")

APPLY_EVERY_S = 2.0
USAGE = web.AppKey("switchyard_usage_metrics", UsageMetrics)


def settings(st: GatewayState) -> UsageRoute:
    return st.holder.table.usage if st.holder.table is not None else UsageRoute()


def rule_of(usage: UsageRoute) -> AnomalyRule:
    return AnomalyRule(usage.anomaly_window_s, usage.anomaly_baseline_s, usage.anomaly_factor,
                       usage.anomaly_min_requests)


async def apply_forever(st: GatewayState, ready: asyncio.Event) -> None:
    """Keep the ledger as spec.usage and spec.queue say; `ready` once it exists.

    Checked every APPLY_EVERY_S, not only when the table changes: a NATS server that lost its state,
    or a worker that made the ledger first (with the default retention), is put right within seconds.
    """

    async def apply() -> None:
        while True:
            js = st.dispatcher.js
            table = st.holder.table
            if st.dispatcher.connected and js is not None and table is not None:
                days, replicas = table.usage.retention_days, table.queue.replicas
                if not await _as_wanted(js, days, replicas):
                    await apply_usage_stream(js, days, replicas)
                    await ensure_events_stream(js, replicas)  # where anomalies go
                    log.info("usage ledger applied", extra={"retention_days": days, "replicas": replicas})
                ready.set()
            await asyncio.sleep(APPLY_EVERY_S if ready.is_set() else 0.2)

    await forever(apply, pause_s=1.0, what="usage ledger config", logger=log)


async def _as_wanted(js: JetStreamContext, days: int, replicas: int) -> bool:
    try:
        info = await js.stream_info(USAGE_STREAM)
    except nats.js.errors.NotFoundError:
        return False
    config = usage_stream_config(days, replicas)
    return (abs((info.config.max_age or 0.0) - (config.max_age or 0.0)) < 1.0
            and (info.config.num_replicas or 1) == replicas)


def setup(app: web.Application, st: GatewayState) -> None:
    metrics = app[USAGE] = UsageMetrics(st.metrics.registry)
    usage_api.setup(app)

    async def followers(_: web.Application) -> AsyncIterator[None]:
        started = dt.datetime.now(dt.UTC)
        ready = asyncio.Event()
        watch = AnomalyWatch(st, metrics, lambda: rule_of(settings(st)))

        async def once_ready(follow: Callable[[], Awaitable[None]]) -> None:
            await ready.wait()  # the ledger exists: the consumers can bind to it
            await follow()

        tasks = [asyncio.create_task(apply_forever(st, ready)),
                 asyncio.create_task(once_ready(lambda: count_forever(st, metrics, started))),
                 asyncio.create_task(once_ready(watch.run_forever))]
        yield
        await cancel_all(tasks)

    app.cleanup_ctx.append(followers)
