"""Create (idempotently) the stream and KV buckets that gateways and workers share."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy, ConsumerConfig, DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from .subjects import DEDUPE_WINDOW_S, JOBS_BUCKET, WORK_PREFIX, WORK_STREAM, WORKERS_BUCKET, Lane

HEARTBEAT_TTL_S = 10.0


def work_stream_config() -> StreamConfig:
    # Work-queue retention: an item leaves the stream only when a worker acks it,
    # and file storage keeps it across a NATS restart.
    return StreamConfig(
        name=WORK_STREAM,
        subjects=[f"{WORK_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,  # refuse new work rather than drop accepted work
        duplicate_window=DEDUPE_WINDOW_S,
        max_msg_size=64 * 1024 * 1024,
    )


async def ensure_work_stream(js: JetStreamContext) -> None:
    cfg = work_stream_config()
    try:
        await js.add_stream(cfg)
    except BadRequestError:
        await js.update_stream(cfg)  # exists with an older config


async def ensure_workers_bucket(js: JetStreamContext) -> KeyValue:
    return await _bucket(js, KeyValueConfig(bucket=WORKERS_BUCKET, ttl=HEARTBEAT_TTL_S,
                                            storage=StorageType.MEMORY, history=1))


async def ensure_jobs_bucket(js: JetStreamContext, ttl_s: float = 3600.0) -> KeyValue:
    return await _bucket(js, KeyValueConfig(bucket=JOBS_BUCKET, ttl=ttl_s,
                                            storage=StorageType.FILE, history=1))


async def _bucket(js: JetStreamContext, cfg: KeyValueConfig) -> KeyValue:
    try:
        return await js.key_value(cfg.bucket)
    except Exception:  # noqa: BLE001 - nats-py raises BucketNotFoundError or NotFoundError by version
        return await js.create_key_value(cfg)


def lane_consumer_config(lane: Lane, ack_wait_s: float = 30.0, max_ack_pending: int = 1024) -> ConsumerConfig:
    """One durable pull consumer per lane, shared by all of the lane's workers."""
    return ConsumerConfig(
        durable_name=lane.consumer,
        description=lane.subject,
        filter_subject=lane.subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,  # attempts are counted by the worker so the last one can report
        max_ack_pending=max_ack_pending,
    )
