"""Which item a worker takes next: priority classes in strict order, tenants in turn within a class.

A lane's items wait on one subject per class and tenant (subjects.Queue), each with its own durable
consumer, shared by the lane's workers. The scheduler of a lane keeps the queues it knows to have
items, and each time the worker has free slots it takes up to that many items (at most one batch)
from one queue: the next tenant, round robin, of the highest class with items. So a tenant's burst
of 10,000 items delays another tenant's single item by at most the batch the worker already holds,
and a high-class item waits only for the items in flight.

How it learns which queues have items, cheaply:

- a gateway rings `_sy.ring.<queue subject tail>` (core NATS, empty) once an item is stored there:
  the queue is marked as having items, and an idle worker wakes at once;
- items on the lane's own subject (from gateways older than the classes) wake it by arriving
  (a core subscription on that subject, the payload is ignored);
- a scan of the stream's per-subject counts (`stream_info` with the lane's subjects) at start,
  after a reconnect and every RESCAN_S: it finds what rang while the worker was away,
  redeliveries (a nak's delay, an ack_wait that ran out), old items, and the rest of a queue
  that another worker of the lane emptied only in part.

Each pull asks for at most the free slots. It is a `no_wait` request, answered at once with what
the queue has, so no credit is parked on one tenant's empty queue while another's wait; except when
no queue is in line: then the queue that just had items is asked with a request that waits
LINGER_S, so the next item of a steady stream needs no ring and no extra round trip (a ring
meanwhile waits at most that long).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX, ConsumerConfig, ConsumerInfo
from nats.js.errors import BadRequestError, NotFoundError

from ..jetstream import NATS_FAILURES, ensure_work_stream, lane_consumer_config, work_consumer_config
from ..logs import swallowed
from ..runtime import Backoff
from ..subjects import WORK_STREAM, Lane, Queue, ring_filter, work_subject_of_ring
from .pull import Slots

log = logging.getLogger("switchyard.worker")

RESCAN_S = 1.0  # a scan at least this often: redeliveries and anything whose ring was missed
# With nothing else to serve, the queue that just had items is asked with a pull request that waits
# this long: a steady stream's next item needs no ring and no round trip. A ring meanwhile waits at
# most this long (and for what the request brings: at most the free slots, one batch).
LINGER_S = 0.02
REQUEST_TIMEOUT_S = 5.0  # a no_wait pull answers at once; this long without an end means it was lost


class Turns:
    """The queues known to have items, and whose turn is next: strict class order, round robin in a class."""

    def __init__(self) -> None:
        self._ready: dict[int, deque[Queue]] = {}  # rank -> queues with items, next first

    def add(self, queue: Queue) -> None:
        ring = self._ready.setdefault(queue.rank, deque())
        if queue not in ring:
            ring.append(queue)  # a newcomer waits for the tenants already in line, one batch each

    def discard(self, queue: Queue) -> None:
        ring = self._ready.get(queue.rank)
        if ring is not None and queue in ring:
            ring.remove(queue)

    def next(self) -> Queue | None:
        """The queue to serve now; it goes to the back of its class's line."""
        for rank in sorted(self._ready):
            ring = self._ready[rank]
            if ring:
                queue = ring.popleft()
                ring.append(queue)
                return queue
        return None

    def __len__(self) -> int:
        return sum(len(r) for r in self._ready.values())

    def __contains__(self, queue: Queue) -> bool:
        return queue in self._ready.get(queue.rank, ())


class FairPuller:
    """Pulls one lane's items for a worker, a batch from one queue at a time (see the module's doc)."""

    def __init__(self, nc: NATS, js: JetStreamContext, lane: Lane, slots: Slots,
                 dispatch: Callable[[Msg], None], *, ack_wait_s: float, max_batch: int,
                 api_prefix: str = DEFAULT_PREFIX) -> None:
        self.lane = lane
        self._api_prefix = api_prefix  # `js`'s (the default unless made for a domain); nats-py keeps it private
        self._nc = nc
        self._js = js
        self._slots = slots
        self._dispatch = dispatch
        self._ack_wait_s = ack_wait_s
        self._max_batch = max_batch
        self._own = Queue.from_subject(lane.subject)  # the lane's own subject: older gateways' items
        self.turns = Turns()
        self._consumers: set[str] = set()  # queue consumers known to exist
        self._subs: list[Subscription] = []
        self._inbox = ""
        self._credits = 0  # messages the open request may still bring
        self._ended = asyncio.Event()
        self._error = ""
        self._wake = asyncio.Event()
        self._pulling: Queue | None = None  # the queue of the request in flight
        self._linger: Queue | None = None  # the queue the last pull took items from (see _lingering)
        self._rang = False  # it rang while that request was in flight
        self._last_scan = 0.0
        self._stopping = False
        self.ack_wait_s = ack_wait_s  # the lane consumer's, once bound
        self.scans = 0

    async def ensure_consumer(self) -> None:
        """Create the stream and the lane's own consumer, or bind to the existing ones."""
        await ensure_work_stream(self._js)
        info = await self._bind(self._own, lane_consumer_config(self.lane, ack_wait_s=self._ack_wait_s))
        if info.config.ack_wait:
            self.ack_wait_s = float(info.config.ack_wait)

    async def _ensure_queue(self, queue: Queue) -> None:
        if queue.consumer in self._consumers:
            return
        if queue == self._own:
            await self.ensure_consumer()
            return
        await self._bind(queue, work_consumer_config(queue.subject, ack_wait_s=self.ack_wait_s))

    async def _bind(self, queue: Queue, cfg: ConsumerConfig) -> ConsumerInfo:
        """The queue's consumer as it exists (made by another worker, maybe with another ack_wait), else ours."""
        info: ConsumerInfo
        try:
            info = await self._js.consumer_info(WORK_STREAM, queue.consumer)
        except NotFoundError:
            try:
                info = await self._js.add_consumer(WORK_STREAM, cfg)
            except BadRequestError:  # another worker of the lane made it in between
                info = await self._js.consumer_info(WORK_STREAM, queue.consumer)
        self._consumers.add(queue.consumer)
        return info

    async def open(self) -> None:
        await self.ensure_consumer()
        self._inbox = self._nc.new_inbox()
        self._subs = [await self._nc.subscribe(self._inbox, cb=self._on_msg),
                      await self._nc.subscribe(ring_filter(self.lane), cb=self._on_ring),
                      await self._nc.subscribe(self.lane.subject, cb=self._on_own)]

    def reset(self) -> None:
        """The server may have lost our request (reconnect): stop waiting for it, and scan again."""
        self._last_scan = 0.0
        if self._credits or not self._ended.is_set():
            self._error = "reset"
            self._end()
        self._wake.set()

    async def _on_ring(self, msg: Msg) -> None:
        try:
            queue = Queue.from_subject(work_subject_of_ring(msg.subject))
        except ValueError:
            return
        self.turns.add(queue)
        if queue == self._pulling:
            self._rang = True  # stored after our pull looked: keep it in line
        self._wake.set()

    async def _on_own(self, msg: Msg) -> None:
        self.turns.add(self._own)
        if self._own == self._pulling:
            self._rang = True
        self._wake.set()

    async def scan(self) -> None:
        """The lane's queues with stored items, from the stream's per-subject counts (unacked ones
        included: a queue whose items are all in flight comes back empty from its pull, and waits
        for the next scan)."""
        self.scans += 1
        self._last_scan = time.monotonic()
        for filt in (self.lane.subject, self.lane.queues):
            info = await self._js.stream_info(WORK_STREAM, subjects_filter=filt)
            for subject, count in (info.state.subjects or {}).items():
                if count > 0:
                    try:
                        self.turns.add(Queue.from_subject(subject))
                    except ValueError:
                        continue

    async def run(self) -> None:
        backoff = Backoff(0.1, 2.0)
        while not self._stopping:
            linger = self._lingering()
            if linger is None and (time.monotonic() - self._last_scan >= RESCAN_S or not self.turns) \
                    and not await self._scan_or_wait():
                continue
            # Slots first, then the pick: a class or tenant that rang while every slot was busy is seen.
            n = await self._slots.reserve(self._max_batch)
            queue = None if self._stopping else self.turns.next() if self.turns else linger
            if queue is None:
                self._slots.release(n)
                continue
            self._pulling, self._rang = queue, False
            got = await self._pull(queue, n, LINGER_S if queue is linger and queue not in self.turns else 0.0)
            self._pulling = None
            self._linger = queue if got and not self._error else None
            if got < n and not self._error and not self._rang:
                self.turns.discard(queue)  # drained (or its items are in flight): until it rings or a scan
            if self._error.startswith("503") and queue.consumer in self._consumers:
                # No consumer: the server removed it after an hour without a pull. Made again at once.
                self._consumers.discard(queue.consumer)
            elif self._error and self._error != "reset" and not self._stopping:
                log.warning("pull request ended", extra={"lane": queue.subject, "reason": self._error})
                self._consumers.discard(queue.consumer)  # made again (or bound) before the next pull
                await backoff.sleep()
            elif not self._error:
                backoff.reset()

    def _lingering(self) -> Queue | None:
        """The queue to wait on a little with an open pull request when no other has items: the one that
        just had some (the next item of a steady stream then comes with no ring and no round trip)."""
        if self.turns or self._linger is None or time.monotonic() - self._last_scan >= RESCAN_S:
            return None
        return self._linger

    async def _scan_or_wait(self) -> bool:
        """Scan when due; with nothing to serve, wait for a ring or the next scan. True: go on serving.
        A ring names its queue, so it needs no scan: an idle worker pulls at once."""
        if time.monotonic() - self._last_scan >= RESCAN_S:
            try:
                await self.scan()
            except NATS_FAILURES as exc:
                log.debug("lane scan failed",
                          extra={"lane": self.lane.subject, "error": str(exc) or type(exc).__name__})
                self._last_scan = time.monotonic()  # try again at the next RESCAN_S
        self._wake.clear()  # before the look at the turns: a ring from now on wakes the wait below
        if self.turns:
            return True
        wait = max(0.0, self._last_scan + RESCAN_S - time.monotonic())
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=wait)
        except TimeoutError:
            pass
        return bool(self.turns)

    async def _pull(self, queue: Queue, n: int, linger_s: float = 0.0) -> int:
        """Ask `queue` for up to n items, at once (no_wait) or waiting up to linger_s: how many came."""
        self._credits, self._error = n, ""
        self._ended.clear()
        try:
            await self._ensure_queue(queue)
            req: dict[str, object] = {"batch": n, "expires": int(linger_s * 1e9)} if linger_s else \
                {"batch": n, "no_wait": True}
            await self._nc.publish(f"{self._api_prefix}.CONSUMER.MSG.NEXT.{WORK_STREAM}.{queue.consumer}",
                                   json.dumps(req).encode(), reply=self._inbox)
            await asyncio.wait_for(self._ended.wait(), timeout=REQUEST_TIMEOUT_S)
        except asyncio.CancelledError:
            self._end()
            raise
        except TimeoutError:
            self._error = "no answer"
        except NATS_FAILURES as exc:  # disconnected: the reconnect resets us
            self._error = f"request failed: {exc or type(exc).__name__}"
        got = n - self._credits
        self._end()
        return got

    def _end(self) -> None:
        self._slots.release(self._credits)
        self._credits = 0
        self._ended.set()

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            if self._credits > 0:
                self._credits -= 1  # the credit becomes an in-flight slot
                if self._credits == 0:
                    self._ended.set()
            else:
                self._slots.take()  # a late answer to a request we gave up on
            self._dispatch(msg)
            return
        if status in ("404", "408"):  # no (more) items: the normal end of a no_wait request
            self._ended.set()
            return
        if status == "100":
            return
        # 503: no consumer (the server removed it, inactive); 409: a limit of the consumer
        self._error = f"{status} {msg.headers.get('Description', '') if msg.headers else ''}".strip()
        self._ended.set()

    async def close(self) -> None:
        """Stop pulling; messages already on their way still reach the callback (and `dispatch`)."""
        self._stopping = True
        self._wake.set()
        subs, self._subs = self._subs, []
        for sub in subs:
            # Disconnected or closing: the server drops the interest anyway.
            with swallowed(log, "drain a lane's subscriptions", NATS_FAILURES, lane=self.lane.subject):
                await asyncio.wait_for(sub.drain(), 3.0)
        self._end()
