"""Pending demand: queued items per lane, read from the stream, exported for KEDA.

Work-queue retention means a stored message is an item no worker has finished,
so per-subject counts of the work stream are exactly the backlog of each lane.
"""

from __future__ import annotations

import logging
from collections import Counter

from nats.js import JetStreamContext

from ..subjects import WORK_PREFIX, WORK_STREAM, Lane
from .metrics import Metrics

log = logging.getLogger("switchyard.gateway.demand")

GroupKey = tuple[str, str, str]  # pool, machine_profile, bundle


class Demand:
    def __init__(self, metrics: Metrics, interval_s: float = 2.0) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.by_lane: dict[Lane, int] = {}
        self._exported: set[GroupKey] = set()

    async def poll(self, js: JetStreamContext) -> None:
        info = await js.stream_info(WORK_STREAM, subjects_filter=f"{WORK_PREFIX}.>")
        lanes = {}
        for subject, count in (info.state.subjects or {}).items():
            try:
                lanes[Lane.from_subject(subject)] = count
            except ValueError:
                continue
        self.by_lane = lanes
        self._export()

    def _export(self) -> None:
        groups: Counter[GroupKey] = Counter()
        for lane, count in self.by_lane.items():
            groups[(lane.pool, lane.machine_profile, lane.bundle)] += count
        for key in self._exported - set(groups):
            self.metrics.pending_demand.labels(*key).set(0)  # drained: report zero, not stale
        for key, count in groups.items():
            self.metrics.pending_demand.labels(*key).set(count)
        self._exported |= set(groups)
