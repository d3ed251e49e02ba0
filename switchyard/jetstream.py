"""Create (idempotently) the stream and KV buckets that gateways and workers share.

Gateways own their configuration: `apply_queue_limits` makes the work stream and the
KV buckets what the Gateway spec says (spec.queue), creating or updating them. Workers
only create what is missing (at R1 and default limits) and never change what exists,
so a worker can neither lower the replicas nor undo the limits a gateway applied.
"""

from __future__ import annotations

import asyncio
import dataclasses

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from .api.table import QueueLimits
from .deadletters import dead_stream_config, ensure_dead_stream
from .subjects import (
    COLDSTART_BUCKET,
    DEDUPE_WINDOW_S,
    EVENTS_PREFIX,
    EVENTS_STREAM,
    JOBS_BUCKET,
    LIMITS_BUCKET,
    PLANSTATS_BUCKET,
    POOLS_BUCKET,
    RESULTS_BUCKET,
    RUNS_BUCKET,
    USAGE_PREFIX,
    USAGE_STREAM,
    WORK_PREFIX,
    WORK_STREAM,
    WORKERS_BUCKET,
    Lane,
    consumer_name,
)

HEARTBEAT_TTL_S = 10.0
# What a NATS call raises when the server is away, restarting or refuses: the failures a background
# loop expects, logs and retries (anything else is a bug, and is logged with its traceback).
NATS_FAILURES: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError, OSError)
RESULTS_MAX_BYTES = 256 * 1024 * 1024  # sy_results: synchronous answers kept to re-fetch (memory storage)


# Every item's deadline is at most max(jobs TTL, an Upstream's timeoutSeconds, which is <= 3600 s)
# after it was queued: an item older than TTL + 1 h is past every deadline and would only be skipped.
MAX_AGE_MARGIN_S = 3600.0


MAX_LANES = 200_000  # e.g. 10,000 models x 2 profiles x 10 pools; see docs/performance.md for what that costs


def work_stream_config(limits: QueueLimits = QueueLimits(), jobs_ttl_s: float = 3600.0) -> StreamConfig:
    # Work-queue retention: an item leaves the stream only when a worker acks it,
    # and file storage keeps it across a NATS restart.
    return StreamConfig(
        num_replicas=limits.replicas,
        name=WORK_STREAM,
        subjects=[f"{WORK_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        # Full means refuse new work, never drop accepted work; per lane too (without
        # discard_new_per_subject a lane over its limit would lose its oldest items).
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_bytes=limits.max_bytes,
        max_msgs_per_subject=limits.max_messages_per_lane,
        max_age=jobs_ttl_s + MAX_AGE_MARGIN_S,
        duplicate_window=DEDUPE_WINDOW_S,
        max_msg_size=64 * 1024 * 1024,
        # One durable consumer per lane. nats-server 2.15 caps a stream that names no limit at
        # 1,000 consumers (and reads -1 as "use that default"), so without this a catalog past
        # ~500 models x 2 profiles would leave lanes no worker can bind (issue 13).
        max_consumers=MAX_LANES,
    )


async def apply_queue_limits(js: JetStreamContext, limits: QueueLimits,
                             jobs_ttl_s: float = 3600.0) -> tuple[KeyValue, KeyValue]:
    """The gateway's side: stream and buckets as spec.queue says; returns (workers, jobs) buckets."""
    cfg = work_stream_config(limits, jobs_ttl_s)
    try:
        await js.add_stream(cfg)
    except BadRequestError:
        await js.update_stream(cfg)  # exists with another config: a worker's defaults, or an older spec
    workers = await ensure_workers_bucket(js, limits.replicas)
    jobs = await ensure_jobs_bucket(js, jobs_ttl_s, limits.replicas)
    await _set_max_age(js, f"KV_{JOBS_BUCKET}", jobs_ttl_s)  # a changed jobs.resultTtlSeconds applies at once
    await ensure_coldstart_bucket(js, limits.replicas)
    await ensure_pools_bucket(js, limits.replicas)
    dead = dead_stream_config(limits.replicas)
    try:
        await js.add_stream(dead)
    except BadRequestError:
        await js.update_stream(dead)
    for bucket in (WORKERS_BUCKET, JOBS_BUCKET, COLDSTART_BUCKET, POOLS_BUCKET):
        await _set_replicas(js, f"KV_{bucket}", limits.replicas)  # a KV bucket is the stream KV_<bucket>
    return workers, jobs


async def ensure_work_stream(js: JetStreamContext) -> None:
    """The worker's side: create the stream if it is missing; one that exists is left as it is."""
    try:
        await js.add_stream(work_stream_config())
    except BadRequestError:
        pass  # exists with the gateway's config (replicas, limits): not the worker's to change
    await ensure_dead_stream(js)


async def ensure_workers_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    return await _bucket(js, KeyValueConfig(bucket=WORKERS_BUCKET, ttl=HEARTBEAT_TTL_S,
                                            storage=StorageType.MEMORY, history=1, replicas=replicas))


async def ensure_jobs_bucket(js: JetStreamContext, ttl_s: float = 3600.0, replicas: int = 1) -> KeyValue:
    return await _bucket(js, KeyValueConfig(bucket=JOBS_BUCKET, ttl=ttl_s,
                                            storage=StorageType.FILE, history=1, replicas=replicas))


async def ensure_results_bucket(js: JetStreamContext, ttl_s: float, replicas: int = 1) -> KeyValue:
    """Results of requests answered at once (spec.jobs.syncResultTtlSeconds); the gateway's only.

    Memory storage: a short window to fetch an answer whose connection dropped, not a record to
    keep through a NATS restart. At most RESULTS_MAX_BYTES, the oldest dropped first, so a busy
    gateway cannot fill nats-server's memory with them. A changed TTL (and the replicas) apply
    to a bucket that exists.
    """
    kv = await _bucket(js, KeyValueConfig(bucket=RESULTS_BUCKET, ttl=ttl_s, storage=StorageType.MEMORY, history=1,
                                          replicas=replicas, max_bytes=RESULTS_MAX_BYTES))
    stream = f"KV_{RESULTS_BUCKET}"
    info = await js.stream_info(stream)
    if info.config.discard != DiscardPolicy.OLD or info.config.max_bytes != RESULTS_MAX_BYTES:
        await js.update_stream(dataclasses.replace(info.config, discard=DiscardPolicy.OLD,
                                                   max_bytes=RESULTS_MAX_BYTES))
    await _set_max_age(js, stream, ttl_s)
    await _set_replicas(js, stream, replicas)
    return kv


async def ensure_coldstart_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    # No TTL: the history is what makes the next ETA honest, and it is a few bytes per lane.
    return await _bucket(js, KeyValueConfig(bucket=COLDSTART_BUCKET, storage=StorageType.FILE, history=1,
                                            replicas=replicas))


async def ensure_pools_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    # Standalone pools: no TTL (a pool's expiry is its renewal time plus its own ttl, judged by the gateway).
    return await _bucket(js, KeyValueConfig(bucket=POOLS_BUCKET, storage=StorageType.FILE, history=1,
                                            replicas=replicas))


async def ensure_runs_bucket(js: JetStreamContext, ttl_s: float = 3600.0, replicas: int = 1) -> KeyValue:
    # Planner runs (gateway/planrun.py): kept as long as their job records, so a run's steps stay readable.
    return await _bucket(js, KeyValueConfig(bucket=RUNS_BUCKET, ttl=ttl_s, storage=StorageType.FILE, history=1,
                                            replicas=replicas))


PLANSTATS_HISTORY = 64  # the last writes of a counter stay in the store, so their message ids survive a NATS restart


async def ensure_planstats_bucket(js: JetStreamContext, dedupe_window_s: float = 3600.0,
                                  replicas: int = 1) -> KeyValue:
    """Planner run counts (gateway/planstats.py): no TTL, and a duplicate window as long as a run record can
    still be picked up again, so counting a run's start or end a second time is dropped by JetStream."""
    kv = await _bucket(js, KeyValueConfig(bucket=PLANSTATS_BUCKET, storage=StorageType.FILE,
                                          history=PLANSTATS_HISTORY, replicas=replicas))
    info = await js.stream_info(f"KV_{PLANSTATS_BUCKET}")
    if abs((info.config.duplicate_window or 0.0) - dedupe_window_s) > 0.5:
        await js.update_stream(dataclasses.replace(info.config, duplicate_window=dedupe_window_s))
    return kv


LIMITS_MAX_AGE_S = 32 * 86_400  # longer than any window (a month): a counter untouched this long counts nothing


async def ensure_limits_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """spec.policy counters (gateway/policy/ledger.py): file storage, so a NATS restart keeps every count."""
    return await _bucket(js, KeyValueConfig(bucket=LIMITS_BUCKET, ttl=LIMITS_MAX_AGE_S, storage=StorageType.FILE,
                                            history=1, replicas=replicas))


EVENTS_MAX_AGE_S = 3600.0  # how far back Last-Event-ID can resume (gateway/events.py)
EVENTS_MAX_BYTES = 256 * 1024**2


def events_stream_config(replicas: int = 1) -> StreamConfig:
    # Limits retention: every SSE connection reads it with its own consumer, and it forgets old events
    # by age and size. The duplicate window lets every gateway replica bridge the same KV update once.
    return StreamConfig(name=EVENTS_STREAM, subjects=[f"{EVENTS_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE, discard=DiscardPolicy.OLD, max_age=EVENTS_MAX_AGE_S,
                        max_bytes=EVENTS_MAX_BYTES, duplicate_window=DEDUPE_WINDOW_S, num_replicas=replicas)


async def ensure_events_stream(js: JetStreamContext, replicas: int = 1) -> None:
    try:
        await js.add_stream(events_stream_config(replicas))
    except BadRequestError:
        pass  # exists


USAGE_RETENTION_DAYS = 35  # a month's bill plus a few days to send it; spec.usage.retentionDays
USAGE_DEDUPE_WINDOW_S = DEDUPE_WINDOW_S  # a worker's retried publish of one attempt's record is stored once


def usage_stream_config(retention_days: int = USAGE_RETENTION_DAYS, replicas: int = 1) -> StreamConfig:
    # Limits retention, file storage: a ledger read by time range (GET /v1/usage), forgotten by age only.
    # Never discard new: a worker's record is refused only if the server's storage is full.
    return StreamConfig(name=USAGE_STREAM, subjects=[f"{USAGE_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE, discard=DiscardPolicy.OLD, max_age=retention_days * 86_400.0,
                        duplicate_window=USAGE_DEDUPE_WINDOW_S, num_replicas=replicas)


async def apply_usage_stream(js: JetStreamContext, retention_days: int, replicas: int = 1) -> None:
    """The gateway's side: the ledger as spec.usage says (a changed retention applies to what it holds)."""
    cfg = usage_stream_config(retention_days, replicas)
    try:
        await js.add_stream(cfg)
    except BadRequestError:
        await js.update_stream(cfg)


async def ensure_usage_stream(js: JetStreamContext) -> None:
    """The worker's side: create the ledger if it is missing, with the default retention; never change it."""
    try:
        await js.add_stream(usage_stream_config())
    except BadRequestError:
        pass  # exists with the gateway's config


@dataclasses.dataclass(frozen=True, slots=True)
class LiveEntry:
    """A KV entry that holds a value (nats-py's Entry has value None on delete and purge markers)."""

    key: str
    value: bytes
    revision: int | None


async def kv_get(kv: KeyValue, key: str) -> LiveEntry | None:
    """The key's live entry; None when it is absent, deleted or purged (those read as not found or empty)."""
    try:
        entry = await kv.get(key)
    except nats.js.errors.NotFoundError:  # KeyNotFoundError and KeyDeletedError
        return None
    return LiveEntry(entry.key, entry.value, entry.revision) if entry.value else None


async def _bucket(js: JetStreamContext, cfg: KeyValueConfig) -> KeyValue:
    """Bind to the bucket, else create it (`cfg.replicas` applies only to a new bucket)."""
    try:
        return await js.key_value(cfg.bucket)
    except nats.js.errors.NotFoundError:  # BucketNotFoundError (a NotFoundError) or NotFoundError, by version
        pass
    try:
        return await js.create_key_value(cfg)
    except BadRequestError:
        return await js.key_value(cfg.bucket)  # another process made it in between


async def _set_max_age(js: JetStreamContext, stream: str, max_age_s: float) -> None:
    info = await js.stream_info(stream)
    if abs((info.config.max_age or 0.0) - max_age_s) > 0.5:
        # JetStream refuses a duplicate window longer than max_age (a KV bucket's is min(ttl, 2 min)).
        window = min(info.config.duplicate_window or max_age_s, max_age_s)
        await js.update_stream(dataclasses.replace(info.config, max_age=max_age_s, duplicate_window=window))


async def _set_replicas(js: JetStreamContext, stream: str, replicas: int) -> None:
    info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) != replicas:
        await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))


# A lane consumer costs nats-server ~52 kB whatever its settings (memory storage saves ~10 %,
# docs/performance.md); what bounds the total is how many exist. One that no worker has pulled
# from for this long is removed by the server: the lane's items stay in the work-queue stream
# (unacknowledged ones included), and the next worker of the lane creates it again at start or
# on its next pull. So NATS holds consumers for lanes with a worker in the last hour, not for
# every lane that ever had one (thousands, in a catalog of 10,000 models scaled to zero).
LANE_INACTIVE_S = 3600.0


def lane_consumer_config(lane: Lane, ack_wait_s: float = 30.0, max_ack_pending: int = 1024,
                         inactive_s: float = LANE_INACTIVE_S) -> ConsumerConfig:
    """One durable pull consumer per lane, shared by all of the lane's workers."""
    return work_consumer_config(lane.subject, ack_wait_s, max_ack_pending, inactive_s)


def work_consumer_config(subject: str, ack_wait_s: float = 30.0, max_ack_pending: int = 1024,
                         inactive_s: float = LANE_INACTIVE_S) -> ConsumerConfig:
    """The durable pull consumer of one work subject (a lane's own, or one of its queues of a class and
    tenant), shared by every worker of the lane; made by a worker when it first pulls from it. Its
    description is the subject: gateways read a dead letter's lane from it. A queue's consumer leaves
    after the same hour without a pull as a lane's: not sooner, as a worker holding long items pulls
    nothing while it holds them."""
    return ConsumerConfig(
        durable_name=consumer_name(subject),
        description=subject,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,  # attempts are counted by the worker so the last one can report
        max_ack_pending=max_ack_pending,
        inactive_threshold=inactive_s,
    )
