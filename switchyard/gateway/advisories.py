"""Dead letters per lane, counted from JetStream's MSG_TERMINATED advisories.

Every gateway replica subscribes in one queue group, so each advisory is counted by
exactly one replica: the sum over replicas is the number of dead letters. The
advisory names the lane's consumer, not its subject; the consumer's description is
the subject it pulls (jetstream.work_consumer_config: a lane's own, or one of its queues of a class
and tenant), read once per consumer.
"""

from __future__ import annotations

import logging

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from ..deadletters import ADVISORY_SUBJECT, REASON
from ..jetstream import NATS_FAILURES
from ..subjects import WORK_STREAM, Lane, consumer_name
from .metrics import Metrics

log = logging.getLogger("switchyard.gateway.advisories")

QUEUE_GROUP = "sy_gateways_deadletters"
# The consumer deleted meanwhile, NATS away, or not a lane's consumer (its description is no lane subject).
NO_LANE: tuple[type[BaseException], ...] = (*NATS_FAILURES, ValueError)


class DeadLetters:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._lanes: dict[str, Lane] = {}  # consumer name -> its lane
        self._js: JetStreamContext | None = None

    async def subscribe(self, nc: NATS, js: JetStreamContext) -> Subscription:
        self._js = js
        return await nc.subscribe(ADVISORY_SUBJECT, queue=QUEUE_GROUP, cb=self._on_advisory)

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(advisory, dict) or advisory.get("reason") != REASON:
            return  # terminated for another reason (permanent error, undecodable): not a dead letter
        consumer = advisory.get("consumer")
        lane = await self._lane(consumer) if isinstance(consumer, str) else None
        if lane is None:
            log.warning("dead letter on an unknown consumer", extra={"consumer": consumer})
            return
        self.metrics.dead_letters.labels(lane.pool, lane.machine_profile, lane.bundle, lane.model).inc()
        log.info("dead letter", extra={"lane": lane.subject, "stream_seq": advisory.get("stream_seq"),
                                       "deliveries": advisory.get("deliveries")})

    async def _lane(self, consumer: str) -> Lane | None:
        lane = self._lanes.get(consumer)
        if lane is None and self._js is not None:
            try:
                info = await self._js.consumer_info(WORK_STREAM, consumer)
                subject = info.config.description or info.config.filter_subject or ""
                lane = Lane.from_subject(subject)  # a lane's own consumer, or one of its queues'
            except NO_LANE as exc:
                log.debug("no lane for a consumer", extra={"consumer": consumer,
                                                           "error": str(exc) or type(exc).__name__})
                return None
            if consumer_name(subject) != consumer:
                return None  # a consumer whose description claims another subject
            self._lanes[consumer] = lane
        return lane
