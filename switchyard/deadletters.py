"""Dead letters: items failed because they used up their attempts.

The worker counts attempts (consumers run with max_deliver=-1 so the last attempt can
report), so JetStream's MAX_DELIVERIES advisory never fires. Instead the worker
terminates such an item with a reason, `+TERM max_attempts`, and JetStream publishes
a MSG_TERMINATED advisory that carries it; gateways count those per lane. Other
terminations (a permanent handler error, an undecodable item) carry no reason and
are not dead letters: their failure is the handler's answer, not exhausted retries.

Before that term, the worker keeps the item in the SWITCHYARD_DEAD stream (`sy.dead.<lane tail>`)
with its error, attempts and worker: admin keys list, inspect and re-queue them
(gateway/deadletter_api.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgpack
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from .messages import VERSION, Result, WorkItem, as_dict
from .subjects import DEAD_PREFIX, DEAD_STREAM, DEDUPE_WINDOW_S, WORK_PREFIX, WORK_STREAM

REASON = "max_attempts"
# $JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.<stream>.<consumer>
ADVISORY_SUBJECT = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{WORK_STREAM}.*"


async def term_dead_letter(msg: Msg) -> None:
    """Terminate `msg` (no redelivery) with the dead-letter reason in JetStream's advisory."""
    await msg.respond(f"+TERM {REASON}".encode())


# What the dead-letter stream keeps: a week, 100,000 letters at most (the oldest go first: a
# dead letter is a record of a failure, and the job record holds the outcome anyway).
MAX_AGE_S = 7 * 86_400.0
MAX_LETTERS = 100_000


def dead_stream_config(replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=DEAD_STREAM, subjects=[f"{DEAD_PREFIX}.>"], num_replicas=replicas,
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, discard=DiscardPolicy.OLD,
        max_age=MAX_AGE_S, max_msgs=MAX_LETTERS, duplicate_window=DEDUPE_WINDOW_S, max_msg_size=64 * 1024 * 1024,
    )


def dead_subject(work_subject: str) -> str:
    """sy.work.<pool>.<mp>.<bundle>.<model>[.<class>.<tenant>] -> sy.dead.<pool>.<mp>.<bundle>.<model>: one
    subject per lane, whatever queue the item waited on (the letter keeps that in `lane`)."""
    if not work_subject.startswith(WORK_PREFIX + "."):
        raise ValueError(f"not a work subject: {work_subject!r}")
    lane_subject = ".".join(work_subject.split(".")[:6])
    return DEAD_PREFIX + lane_subject[len(WORK_PREFIX):]


@dataclass(slots=True)
class DeadLetter:
    """One item that failed after its last attempt, as its worker saw it."""

    item: WorkItem
    error: dict[str, str] | None
    attempt: int
    worker: str
    failed_at: float
    lane: str  # the work subject it came from (its queue: re-queued there, class and tenant kept)
    seq: int = 0  # its sequence in the dead-letter stream (its id in the API)

    def encode(self) -> bytes:
        item = as_dict(self.item)
        item.update(reply=None, stream=False, trace_context=None)  # whoever waited is long gone
        return msgpack.packb({"v": VERSION, "item": item, "error": self.error, "attempt": self.attempt,
                              "worker": self.worker, "failed_at": self.failed_at, "lane": self.lane},
                             use_bin_type=True)

    @classmethod
    def decode(cls, raw: bytes, seq: int) -> DeadLetter:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("item"), dict):
            raise ValueError("not a dead letter")
        names = set(WorkItem.__slots__)
        item = WorkItem(**{k: v for k, v in data["item"].items() if k in names})
        return cls(item=item, error=data.get("error"), attempt=int(data.get("attempt") or 0),
                   worker=str(data.get("worker") or ""), failed_at=float(data.get("failed_at") or 0.0),
                   lane=str(data.get("lane") or ""), seq=seq)


async def keep_dead_letter(js: JetStreamContext, lane_subject: str, item: WorkItem, result: Result) -> None:
    """The worker's side: keep the item, its error, attempts and worker, before it terminates it.

    Nats-Msg-Id is the item's key and queue time, so a worker killed between this and its term
    (the redelivery is failed at once, past max_attempts) keeps one letter, not two.
    """
    letter = DeadLetter(item=item, error=result.error, attempt=result.attempt, worker=result.worker,
                        failed_at=time.time(), lane=lane_subject)
    headers = {"Nats-Msg-Id": f"{item.key}@{item.enqueued_at!r}"}
    try:
        await js.publish(dead_subject(lane_subject), letter.encode(), headers=headers)
    except nats.js.errors.NoStreamResponseError:
        await ensure_dead_stream(js)  # the first dead letter on a fresh server (a gateway makes it at start)
        await js.publish(dead_subject(lane_subject), letter.encode(), headers=headers)


async def ensure_dead_stream(js: JetStreamContext) -> None:
    """Create the stream if it is missing (at R1); one that exists is left as the gateway made it."""
    try:
        await js.add_stream(dead_stream_config())
    except BadRequestError:
        pass
