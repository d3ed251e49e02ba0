"""A learned cold-start ETA: how long a lane at zero takes to get a live worker.

An episode starts with the first 202 on a lane that no worker serves: the gateway
creates `ep.<lane>` in the `sy_coldstart` bucket, create-only, so concurrent replicas
agree on one start. A replica that saw the episode watches the lane; when its registry
sees a live worker there, it deletes the key with a revision check, and only the
replica whose delete lands appends the sample to `h.<lane>` (the last HISTORY samples,
compare-and-set). Every replica reads the same two keys, so they give the same ETA.

A lane stands for its fleet: every lane is served by exactly one fleet, and a fleet's
lanes start their workers together. Start and end are wall-clock times, possibly of
two replicas: their clocks are assumed to agree to well under a cold start.

The episode also keeps the ETA its opener gave (`eta_s`), so the replica that
records the sample exports both: the cold start itself, and how far off its ETA was.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections.abc import Callable

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from ..jetstream import NATS_FAILURES, kv_get
from ..subjects import WORK_PREFIX, Lane
from ..tasks import expected
from .metrics import Metrics

log = logging.getLogger("switchyard.gateway.eta")
# What reading a lane's cold-start history raises: NATS away, or a record this version cannot read.
UNREADABLE: tuple[type[BaseException], ...] = (*NATS_FAILURES, ValueError, KeyError, TypeError)

HISTORY = 20  # samples kept per lane: recent enough to follow a new image or node type
WATCH_INTERVAL_S = 0.05  # the sample's end is when this loop notices the worker: keep that error small
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: the key moved on since we read it


def lane_key(lane: Lane) -> str:
    """<pool>.<machine_profile>.<bundle>.<model>, each a subject token (valid KV key characters)."""
    return lane.subject[len(WORK_PREFIX) + 1:]


def estimate(samples: list[float], default_s: float) -> float:
    """Seconds from demand at zero to a live worker: the median of recent samples, else the default."""
    return statistics.median(samples) if samples else default_s


ETA_STEP_S = 0.1  # estimated_wait_s resolution: whole seconds are >20 % off any cold start under 5 s


def remaining(total_s: float, waited_s: float) -> float:
    """Seconds still to wait, to a tenth, at least a tenth (an overdue cold start is still coming)."""
    return max(ETA_STEP_S, round(total_s - max(waited_s, 0.0), 1))


def retry_after(eta_s: float) -> int:
    """HTTP's Retry-After is whole seconds: the ETA rounded up, at least 1 (0 would invite a busy poll)."""
    return max(1, math.ceil(eta_s))


class ColdStarts:
    def __init__(self, bucket: Callable[[], KeyValue | None], serving: Callable[[Lane], int],
                 clock: Callable[[], float] = time.time, metrics: Metrics | None = None) -> None:
        self._bucket = bucket
        self._serving = serving
        self._clock = clock
        self.metrics = metrics
        self._watched: dict[Lane, float] = {}  # lane -> age past which its episode is stale

    async def on_accept(self, lane: Lane, default_s: float, stale_after_s: float) -> float:
        """A 202 on `lane`: open (or join) its episode; the seconds left to a live worker."""
        kv = self._bucket()
        now = self._clock()
        if kv is None:
            return remaining(default_s, 0)
        try:
            samples = await self._samples(kv, lane)
            # The ETA the opener answers (estimated_wait_s): what the accuracy is judged against.
            started = await self._open(kv, lane, now, stale_after_s, remaining(estimate(samples, default_s), 0))
        except Exception as exc:  # the item is queued: an ETA must never fail its 202
            log.warning("cold-start history unavailable; using the default ETA",
                        exc_info=None if expected(exc) else exc,
                        extra={"lane": lane.subject, "error": str(exc) or type(exc).__name__})
            return remaining(default_s, 0)
        self._watched[lane] = stale_after_s
        return remaining(estimate(samples, default_s), now - started)

    async def for_job(self, lane: Lane, default_s: float, queued_at: float) -> float:
        """The ETA of a job still queued on `lane` (its episode's start, else the job's own)."""
        return (await self.for_jobs(lane, default_s, [queued_at]))[0]

    async def for_jobs(self, lane: Lane, default_s: float, queued_at: list[float]) -> list[float]:
        """for_job of several jobs of one lane, reading its episode and history once (progress.py)."""
        if self._serving(lane) > 0:
            return [1.0] * len(queued_at)  # a worker is live: the jobs are in line, not waiting for a cold start
        kv = self._bucket()
        started: float | None = None
        samples: list[float] = []
        if kv is not None:
            try:
                episode = await kv_get(kv, f"ep.{lane_key(lane)}")
                started = float(orjson.loads(episode.value)["started_at"]) if episode else None
                samples = await self._samples(kv, lane)
            except UNREADABLE as exc:  # an unreadable history is no history
                log.debug("cold-start history unreadable; the default ETA", extra={
                    "lane": lane.subject, "error": str(exc) or type(exc).__name__})
                started, samples = None, []
        total, now = estimate(samples, default_s), self._clock()
        return [remaining(total, now - (started if started is not None else q)) for q in queued_at]

    async def _open(self, kv: KeyValue, lane: Lane, now: float, stale_after_s: float, eta_s: float) -> float:
        key = f"ep.{lane_key(lane)}"
        value = orjson.dumps({"started_at": now, "eta_s": eta_s})  # the ETA given at the start, for its accuracy
        try:
            await kv.create(key, value)
            return now
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # an episode is open: join it
        entry = await kv_get(kv, key)
        if entry is None:  # recorded in between: this 202 opens the next one
            await kv.create(key, value)
            return now
        started = float(orjson.loads(entry.value)["started_at"])
        if now - started > stale_after_s:  # its items expired unserved: not a cold start to learn from
            await kv.update(key, value, last=entry.revision)
            return now
        return started

    async def _samples(self, kv: KeyValue, lane: Lane) -> list[float]:
        entry = await kv_get(kv, f"h.{lane_key(lane)}")
        return [float(s) for s in orjson.loads(entry.value)] if entry else []

    # -- recording ---------------------------------------------------------------

    async def watch(self) -> None:
        """Record the episodes this replica saw once a worker is live on their lane."""
        resumed = False
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            kv = self._bucket()
            if kv is None:
                continue
            if not resumed:  # episodes opened before this replica started (or by another) still count
                resumed = await self._resume(kv)
            for lane in [lane for lane in self._watched if self._serving(lane) > 0]:
                stale_after_s = self._watched.pop(lane)
                try:
                    await self.record(kv, lane, stale_after_s)
                except Exception as exc:  # keep watching the other lanes
                    log.warning("could not record a cold start", exc_info=None if expected(exc) else exc,
                                extra={"lane": lane.subject, "error": str(exc) or type(exc).__name__})

    async def _resume(self, kv: KeyValue) -> bool:
        try:
            keys = [k for k in await kv.keys() if k.startswith("ep.")]
        except nats.js.errors.NoKeysError:
            return True
        except (TimeoutError, nats.errors.Error):
            return False
        for key in keys:
            try:
                lane = Lane.from_subject(f"{WORK_PREFIX}.{key[3:]}")
            except (ValueError, UnicodeDecodeError):
                continue
            self._watched.setdefault(lane, 3600.0)
        return True

    async def record(self, kv: KeyValue, lane: Lane, stale_after_s: float) -> float | None:
        """Close the lane's episode; the sample when this replica recorded it, None when another did."""
        now = self._clock()
        key = f"ep.{lane_key(lane)}"
        entry = await kv_get(kv, key)
        if entry is None:
            return None  # another replica recorded it
        try:
            await kv.delete(key, last=entry.revision)
        except nats.js.errors.APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                return None  # another replica's delete (or a new episode) landed first
            raise
        episode = orjson.loads(entry.value)
        sample = now - float(episode["started_at"])
        if not 0 <= sample <= stale_after_s:
            return None
        await self._append(kv, lane, sample)
        log.info("cold start measured", extra={"lane": lane.subject, "seconds": round(sample, 3)})
        self._observe(lane, sample, episode.get("eta_s"))
        return sample

    def _observe(self, lane: Lane, sample: float, eta_s: object) -> None:
        """Export the sample once, by the replica that recorded it (a sum over replicas is then right)."""
        if self.metrics is None:
            return
        labels = (lane.pool, lane.machine_profile, lane.bundle, lane.model)
        self.metrics.cold_starts.labels(*labels).observe(sample)
        if isinstance(eta_s, (int, float)) and eta_s > 0:  # episodes opened before eta_s was kept have none
            self.metrics.eta_ratio.labels(*labels).observe(sample / eta_s)

    async def _append(self, kv: KeyValue, lane: Lane, sample: float) -> None:
        key = f"h.{lane_key(lane)}"
        for _ in range(5):  # compare-and-set: replicas recording other lanes never collide here
            entry = await kv_get(kv, key)
            samples = (orjson.loads(entry.value) if entry else []) + [round(sample, 3)]
            value = orjson.dumps(samples[-HISTORY:])
            try:
                if entry is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=entry.revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue

