"""Usage as Prometheus counters, labelled by tenant (never by key: keys are many and come and go).

Per replica, sum them: the gateways share one durable consumer of the ledger (`sy_usage_metrics`),
so each record is counted by exactly one replica, the one it was handed to, and
`sum by (tenant, ...) (rate(switchyard_usage_..._total[5m]))` over the replicas is the fleet's usage.
A replica that dies with records unacknowledged leaves them to another after the ack wait (30 s).
The durable consumer starts when the first gateway that makes it started: the counters cover usage
from then on (a ledger's earlier months are not replayed into them); GET /v1/usage is the exact record
for billing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from contextlib import suppress
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import CollectorRegistry, Counter

from ..jetstream import NATS_FAILURES
from ..logs import swallowed
from ..messages import UsageRecord
from ..subjects import USAGE_PREFIX, USAGE_STREAM
from ..tasks import forever
from .state import GatewayState

log = logging.getLogger("switchyard.gateway.usage")

METRICS_CONSUMER = "sy_usage_metrics"  # durable, on SWITCHYARD_USAGE, shared by every gateway replica


@dataclass
class UsageMetrics:
    registry: CollectorRegistry

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "switchyard_usage_requests", "Work items that ended (any outcome), from the usage ledger; "
            "per replica, sum them", ["tenant", "model"], registry=r)
        self.items = Counter(
            "switchyard_usage_items", "Inputs of work items that succeeded, from the usage ledger; per replica, "
            "sum them", ["tenant", "model"], registry=r)
        self.tokens = Counter(
            "switchyard_usage_tokens", "Tokens handlers reported (direction=input|output), every attempt; "
            "per replica, sum them", ["tenant", "direction"], registry=r)
        self.gpu_seconds = Counter(
            "switchyard_usage_gpu_seconds", "Handler wall time times the worker's GPUs, every attempt; per "
            "replica, sum them", ["tenant", "machine_profile"], registry=r)
        self.anomalies = Counter(
            "switchyard_usage_anomalies", "Usage anomalies (a key's requests jumping past its baseline), each "
            "counted by the one replica that raised its event", ["tenant"], registry=r)

    def count(self, record: UsageRecord) -> None:
        if record.final:
            self.requests.labels(record.tenant, record.model).inc()
            if record.state == "succeeded" and record.items:
                self.items.labels(record.tenant, record.model).inc(record.items)
        if record.input_tokens:
            self.tokens.labels(record.tenant, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.tokens.labels(record.tenant, "output").inc(record.output_tokens)
        if record.gpu_seconds:
            self.gpu_seconds.labels(record.tenant, record.machine_profile).inc(record.gpu_seconds)


async def count_forever(st: GatewayState, metrics: UsageMetrics, started: dt.datetime) -> None:
    """`started`: when this gateway started (the consumer's start, if this gateway makes it)."""
    await forever(lambda: _count(st, metrics, started), pause_s=1.0, what="usage metrics", logger=log)


async def _count(st: GatewayState, metrics: UsageMetrics, started: dt.datetime) -> None:
    while not st.dispatcher.connected or st.dispatcher.js is None:
        await asyncio.sleep(0.2)
    js = st.dispatcher.js
    # From when this gateway started, not from when it made the consumer: what ran meanwhile counts too.
    config = ConsumerConfig(durable_name=METRICS_CONSUMER, deliver_policy=DeliverPolicy.BY_START_TIME,
                            opt_start_time=started,
                            ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=8192,
                            filter_subject=f"{USAGE_PREFIX}.>")
    with suppress(nats.js.errors.BadRequestError):  # exists: every replica binds the same one
        await js.add_consumer(USAGE_STREAM, config=config)
    sub = await js.pull_subscribe_bind(durable=METRICS_CONSUMER, stream=USAGE_STREAM)
    try:
        while True:
            try:
                msgs = await sub.fetch(batch=512, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                try:
                    metrics.count(UsageRecord.decode(msg.data))
                except (ValueError, TypeError):
                    pass  # not a record this gateway can read: nothing to count
                await msg.ack()
    finally:
        # As the events bridge: leave the subscription before a close would wait on its fetch.
        with swallowed(log, "unsubscribe the usage counter", NATS_FAILURES):
            await sub.unsubscribe()
