"""Reading the usage ledger (SWITCHYARD_USAGE) by time range, for GET /v1/usage.

A record's time is when JetStream stored it (the server's clock, moments after its attempt ended),
so the range is the stream's own order: an ephemeral consumer from `start` (DeliverPolicy
BY_START_TIME) reads every record of the range in sequence. Before reading, the records the range
holds are counted, without reading them, from the `num_pending` of a consumer at `start` minus one
at `end`: a range holding more than `limit` is refused before anything is scanned.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ..jetstream import NATS_FAILURES
from ..logs import swallowed
from ..messages import UsageRecord
from ..subjects import USAGE_PREFIX, USAGE_STREAM, usage_subject
from .dispatch import unavailable

log = logging.getLogger("switchyard.gateway.usage")

BATCH = 4096  # records per fetch
FETCH_TIMEOUT_S = 10.0


class TooManyRecords(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def _config(start: dt.datetime, subject: str) -> ConsumerConfig:
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start, filter_subject=subject,
                          ack_policy=AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True, max_deliver=1)


async def _pending(js: JetStreamContext, start: dt.datetime, subject: str) -> tuple[str, int]:
    info = await js.add_consumer(USAGE_STREAM, _config(start, subject))
    return info.name, int(info.num_pending or 0)


async def scan(js: JetStreamContext, start: dt.datetime, end: dt.datetime, tenant: str | None,
               limit: int, feed: Callable[[UsageRecord], None]) -> int:
    """Feed every record stored in [start, end) (of `tenant` only, when given) to `feed`; how many.

    TooManyRecords (before reading any) when the range holds more than `limit`.
    """
    subject = usage_subject(tenant) if tenant is not None else f"{USAGE_PREFIX}.>"
    made: list[str] = []
    try:
        try:
            name, count = await _pending(js, start, subject)
            made.append(name)
            if end <= dt.datetime.now(dt.UTC):
                after, later = await _pending(js, end, subject)
                made.append(after)
                count -= later
        except nats.js.errors.NotFoundError:
            return 0  # no ledger yet: no worker or gateway made it, nothing ran
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None
        if count > limit:
            raise TooManyRecords(count)
        if count <= 0:
            return 0
        return await _read(js, name, end, count, feed)
    finally:
        for consumer in made:  # ephemeral: they would go after inactive_threshold anyway
            with swallowed(log, "delete a usage scan consumer", NATS_FAILURES):
                await js.delete_consumer(USAGE_STREAM, consumer)


async def _read(js: JetStreamContext, consumer: str, end: dt.datetime, count: int,
                feed: Callable[[UsageRecord], None]) -> int:
    sub = await js.pull_subscribe_bind(consumer=consumer, stream=USAGE_STREAM, pending_msgs_limit=4 * BATCH)
    read = 0
    try:
        while read < count:
            try:
                msgs = await sub.fetch(batch=min(BATCH, count - read), timeout=FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                break  # the range's last records aged out meanwhile
            except nats.errors.Error as exc:
                raise unavailable(str(exc) or type(exc).__name__) from None
            # Stream order is time order: when a batch's last record is inside the range, all of it is
            # (parsing each message's metadata would cost more than summing it).
            whole = bool(msgs) and msgs[-1].metadata.timestamp < end
            for msg in msgs:
                if not whole and msg.metadata.timestamp >= end:
                    return read
                read += 1
                try:
                    record = UsageRecord.decode(msg.data)
                except (ValueError, TypeError):
                    continue  # not a record this gateway can read: counted as scanned, not summed
                feed(record)
    finally:
        with swallowed(log, "unsubscribe a usage scan", NATS_FAILURES):
            await sub.unsubscribe()
    return read
