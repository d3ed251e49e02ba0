"""Pending demand: queued items per lane, read from the stream, exported for KEDA.

Work-queue retention means a stored message is an item no worker has finished,
so per-subject counts of the work stream are exactly the backlog of each lane.
The same read gives the stream's usage against the limits JetStream enforces, and
one more request per lane group with items gives the age of its oldest item.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from ..jetstream import NATS_FAILURES
from ..logs import Repeats
from ..subjects import WORK_PREFIX, WORK_STREAM, Lane, token
from .metrics import Metrics

log = logging.getLogger("switchyard.gateway.demand")

GroupKey = tuple[str, str, str]  # pool, machine_profile, bundle


def group_filter(key: GroupKey) -> str:
    """The work subjects of one lane group: sy.work.<pool>.<profile>.<bundle>.> (its lanes and their queues)"""
    return ".".join([WORK_PREFIX, *(token(part) for part in key), ">"])


class Demand:
    def __init__(self, metrics: Metrics, interval_s: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self.by_lane: dict[Lane, int] = {}
        self.oldest: dict[GroupKey, float] = {}  # lane group -> when its oldest stored item was stored
        self._clock = clock
        self._exported: set[GroupKey] = set()
        self._failures = Repeats(log)

    async def refresh(self, js: JetStreamContext) -> None:
        """One poll for the gateway's observe loop, which must go on whatever happens: a failure leaves
        the last figures exported (KEDA reads them: stale beats absent) and is logged, once a minute
        while it repeats."""
        try:
            await self.poll(js)
        except NATS_FAILURES as exc:  # NATS away or restarting, the stream not there yet
            self._failures.failed("demand poll", exc, stream=WORK_STREAM)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not end the loop that exports every gauge
            self._failures.failed("demand poll", exc, level=logging.ERROR, exc_info=True, stream=WORK_STREAM)
            return
        self._failures.recovered("demand poll")

    async def poll(self, js: JetStreamContext) -> None:
        info = await js.stream_info(WORK_STREAM, subjects_filter=f"{WORK_PREFIX}.>")
        lanes: dict[Lane, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            try:
                lane = Lane.from_subject(subject)  # a lane's items wait on a queue per class and tenant
            except ValueError:
                continue
            lanes[lane] = lanes.get(lane, 0) + count
        self.by_lane = lanes
        self._export_usage(info)
        await self._read_oldest(js)
        self._export()

    def _export_usage(self, info: StreamInfo) -> None:
        used, limit = self.metrics.stream_used, self.metrics.stream_limit
        used.labels("bytes").set(info.state.bytes or 0)
        # Per-subject counts: max_msgs_per_subject is a limit per queue (a lane's class and tenant), so its
        # usage is the fullest queue.
        used.labels("messages_per_lane").set(max((info.state.subjects or {}).values(), default=0))
        for resource, value in (("bytes", info.config.max_bytes), ("messages_per_lane",
                                                                      info.config.max_msgs_per_subject)):
            if value is not None and value > 0:
                limit.labels(resource).set(value)
            else:  # -1: no limit, so nothing to be near
                with suppress(KeyError):
                    limit.remove(resource)

    async def _read_oldest(self, js: JetStreamContext) -> None:
        """The first stored message of each group with items: lowest sequence, so the oldest."""
        oldest: dict[GroupKey, float] = {}
        for key in {_group(lane) for lane, n in self.by_lane.items() if n > 0}:
            try:
                msg = await js.get_msg(WORK_STREAM, seq=1, subject=group_filter(key), next=True)
            except (nats.errors.Error, TimeoutError) as exc:  # acked meanwhile (not found), or NATS away
                log.debug("no oldest item", extra={"group": key, "error": str(exc) or type(exc).__name__})
                continue
            if msg.time is not None:
                oldest[key] = msg.time.timestamp()
        self.oldest = oldest

    def _export(self) -> None:
        groups: Counter[GroupKey] = Counter()
        for lane, count in self.by_lane.items():
            groups[_group(lane)] += count
        now = self._clock()
        for key in self._exported - set(groups):
            self.metrics.pending_demand.labels(*key).set(0)  # drained: report zero, not stale
            self.metrics.queue_oldest_age.labels(*key).set(0)
        for key, count in groups.items():
            self.metrics.pending_demand.labels(*key).set(count)
            stored_at = self.oldest.get(key)
            self.metrics.queue_oldest_age.labels(*key).set(max(0.0, now - stored_at) if stored_at else 0)
        self._exported |= set(groups)


def _group(lane: Lane) -> GroupKey:
    return (lane.pool, lane.machine_profile, lane.bundle)
