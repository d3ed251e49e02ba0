"""Usage anomalies: a key whose request rate jumps by an order of magnitude over its recent baseline.

The rule (spec.usage.anomaly, AnomalyRule): a key's requests in the last `window_s` (5 min) reach
`factor` (10) times its average per window over the `baseline_s` (1 h) before that window, and at
least `min_requests` (100), so a quiet key's few requests are never flagged. Requests are the
ledger's final records (usage_totals.py), timed by JetStream (the stream's clock), counted in buckets
of window_s / 10: the detector's memory per key is bounded, and it depends on nothing but the
ledger's order, so every replica computes the same anomalies at the same record. A key seen for less
than two windows has no baseline yet and is not judged.

An anomaly opens an episode: one `usage.anomaly` event (SWITCHYARD_EVENTS, `sy.events.usage.<tenant
token>`, in the GET /v1/events of keys that read usage) and one count of
`switchyard_usage_anomalies_total{tenant}`. The episode closes when the window falls below half the
threshold (a rate hovering at the line is one anomaly). Every gateway replica follows the whole
ledger and evaluates; the event's Nats-Msg-Id (tenant, key, bucket of the record that tripped it)
makes it one event across replicas, and only the replica whose publish was not a duplicate counts it
and logs it. A replica starting up replays the last window + baseline to learn the baselines, and
raises nothing for records stored before it started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from ..jetstream import NATS_FAILURES
from ..logs import swallowed
from ..messages import UsageRecord
from ..subjects import EVENTS_PREFIX, USAGE_PREFIX, USAGE_STREAM, token
from ..tasks import forever
from .state import GatewayState
from .usage_metrics import UsageMetrics

log = logging.getLogger("switchyard.gateway.usage")

USAGE_EVENTS = f"{EVENTS_PREFIX}.usage"  # + .<tenant token>
BUCKETS_PER_WINDOW = 10
MAX_KEYS = 100_000  # keys tracked at once; a key silent for window + baseline is forgotten


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    window_s: float = 300.0
    baseline_s: float = 3600.0
    factor: float = 10.0
    min_requests: int = 100


@dataclass(frozen=True, slots=True)
class Anomaly:
    tenant: str
    key: str
    requests: int  # in the window that tripped it
    baseline: float  # average requests per window over the baseline before it
    at: float  # the stream time of the record that tripped it
    bucket: int  # which bucket: with tenant and key, the event's identity across replicas
    rule: AnomalyRule

    @property
    def msg_id(self) -> str:
        return f"usage.anomaly.{token(self.tenant)}.{token(self.key or '-')}.{self.bucket}"

    def event(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "key": self.key, "requests": self.requests,
                "baseline_per_window": round(self.baseline, 3), "window_s": self.rule.window_s,
                "baseline_s": self.rule.baseline_s, "factor": self.rule.factor,
                "min_requests": self.rule.min_requests, "at": self.at}


@dataclass(slots=True)
class _Key:
    first: int  # the bucket the key was first seen in (since it was last silent for window + baseline)
    buckets: deque[list[int]] = field(default_factory=deque)  # [bucket index, requests], oldest first
    flagged: bool = False


class Detector:
    """The rule applied to a stream of (tenant, key, time) requests, in the ledger's order.

    A key's baseline is its average per window over the part of the baseline it was seen in; a key
    seen for less than one window before its current window has no baseline yet and is not judged,
    so neither a new key's first traffic nor a gateway's first minutes raise anything.
    """

    def __init__(self, rule: AnomalyRule) -> None:
        self.rule = rule
        self._keys: dict[tuple[str, str], _Key] = {}

    def add(self, tenant: str, key: str, at: float) -> Anomaly | None:
        rule = self.rule
        bucket_s = rule.window_s / BUCKETS_PER_WINDOW
        now = int(at // bucket_s)
        base_span = int(rule.baseline_s // bucket_s)
        span = BUCKETS_PER_WINDOW + base_span  # buckets kept: window + baseline
        state = self._keys.get((tenant, key))
        if state is None or not state.buckets or state.buckets[-1][0] <= now - span:
            if state is None and len(self._keys) >= MAX_KEYS:
                self._forget(now, span)
            state = self._keys[(tenant, key)] = _Key(first=now)  # new, or silent long enough to be new again
        buckets = state.buckets
        if buckets and buckets[-1][0] >= now:
            buckets[-1][1] += 1  # the same bucket (or a record a shade older than the last: the stream's order)
        else:
            buckets.append([now, 1])
        while buckets[0][0] <= now - span:
            buckets.popleft()
        seen = min(base_span, now - BUCKETS_PER_WINDOW + 1 - state.first)  # baseline buckets the key existed in
        if seen < BUCKETS_PER_WINDOW:
            return None  # no baseline yet
        window = sum(n for b, n in buckets if b > now - BUCKETS_PER_WINDOW)
        baseline = sum(n for b, n in buckets if b <= now - BUCKETS_PER_WINDOW) * BUCKETS_PER_WINDOW / seen
        threshold = max(float(rule.min_requests), rule.factor * baseline)
        if state.flagged:
            # The episode ends once the window is well under the threshold, not at its first dip below:
            # a rate hovering at the line is one anomaly, not one per crossing.
            if window < threshold / 2:
                state.flagged = False
            return None
        if window < threshold:
            return None
        state.flagged = True
        return Anomaly(tenant, key, window, baseline, at, now, rule)

    def _forget(self, now: int, span: int) -> None:
        for name in [k for k, s in self._keys.items() if not s.buckets or s.buckets[-1][0] <= now - span]:
            del self._keys[name]


class AnomalyWatch:
    """One replica's follower of the whole ledger, raising each anomaly's event once across replicas."""

    def __init__(self, st: GatewayState, metrics: UsageMetrics, rule: Callable[[], AnomalyRule]) -> None:
        self.st, self.metrics, self.rule = st, metrics, rule
        self.raised = 0  # events this replica published (not duplicates)

    async def run_forever(self) -> None:
        await forever(self._follow, pause_s=1.0, what="usage anomalies", logger=log)

    async def _follow(self) -> None:
        while not self.st.dispatcher.connected or self.st.dispatcher.js is None:
            await asyncio.sleep(0.2)
        js = self.st.dispatcher.js
        rule = self.rule()
        detector = Detector(rule)
        started = time.time()
        since = dt.datetime.fromtimestamp(started - rule.window_s - rule.baseline_s, dt.UTC)
        # An ordered consumer: nats-py re-creates it from the last sequence seen after a gap or a reconnect.
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since,
                                inactive_threshold=60.0)
        sub = await js.subscribe(f"{USAGE_PREFIX}.>", stream=USAGE_STREAM, ordered_consumer=True, config=config)
        try:
            while self.rule() == rule:  # a changed rule starts over, replaying its own baseline
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    continue
                try:
                    record = UsageRecord.decode(msg.data)
                except (ValueError, TypeError):
                    continue
                if not record.final:
                    continue
                at = msg.metadata.timestamp.timestamp()
                anomaly = detector.add(record.tenant, record.key_name, at)
                if anomaly is not None and at >= started:
                    await self._raise(js, anomaly)
        finally:  # the connection may be gone already: the ephemeral consumer goes with it then
            with swallowed(log, "unsubscribe the usage anomaly follower", NATS_FAILURES):
                await sub.unsubscribe()

    async def _raise(self, js: JetStreamContext, anomaly: Anomaly) -> None:
        ack = await js.publish(f"{USAGE_EVENTS}.{token(anomaly.tenant)}", orjson.dumps(anomaly.event()),
                               headers={"Nats-Msg-Id": anomaly.msg_id})
        if ack.duplicate:
            return  # another replica raised it first
        self.raised += 1
        self.metrics.anomalies.labels(anomaly.tenant).inc()
        log.warning("usage anomaly", extra={"tenant": anomaly.tenant, "key": anomaly.key,
                                            "requests": anomaly.requests, "window_s": anomaly.rule.window_s,
                                            "baseline_per_window": round(anomaly.baseline, 3)})
