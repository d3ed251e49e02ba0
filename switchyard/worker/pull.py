"""Pulling work items from one lane's durable consumer.

nats-py's `fetch(batch=n)` holds the first message until the whole batch or the timeout
arrives, and its pull subscriptions stall after a server restart. So this keeps its own
pull request open (batch = free slots, idle heartbeats on) and hands each message over the
moment it lands; a reconnect or missed heartbeats mark the request lost and it is re-issued.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DEFAULT_PREFIX
from nats.js.errors import NotFoundError

from ..jetstream import NATS_FAILURES, ensure_work_stream, lane_consumer_config
from ..logs import swallowed
from ..subjects import WORK_STREAM, Lane

log = logging.getLogger("switchyard.worker")


class Slots:
    """Capacity shared by all lanes: in-flight items plus credits of open pull requests."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._freed = asyncio.Event()

    def free(self) -> int:
        return self.capacity - self.used

    async def reserve(self, most: int) -> int:
        while self.free() < 1:
            self._freed.clear()
            await self._freed.wait()
        n = min(self.free(), most)
        self.used += n
        return n

    def take(self) -> None:
        """An item that arrived without a credit (a stale delivery): counted all the same."""
        self.used += 1

    def release(self, n: int = 1) -> None:
        if n > 0:
            self.used -= n
            self._freed.set()


class LanePuller:
    def __init__(self, nc: NATS, js: JetStreamContext, lane: Lane, slots: Slots,
                 dispatch: Callable[[Msg], None], *, ack_wait_s: float, expires_s: float,
                 max_batch: int, api_prefix: str = DEFAULT_PREFIX) -> None:
        self.lane = lane
        self._nc = nc
        self._js = js
        self._slots = slots
        self._dispatch = dispatch
        self._ack_wait_s = ack_wait_s
        self._expires_s = max(1.0, expires_s)
        self._hb_s = max(0.5, min(5.0, self._expires_s / 3))
        self._max_batch = max_batch
        # `js`'s own API prefix (the default unless made for a domain); nats-py keeps it private.
        self._next_subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{WORK_STREAM}.{lane.consumer}"
        self._sub: Subscription | None = None
        self._inbox = ""
        self._credits = 0  # messages the open request may still bring
        self._ended = asyncio.Event()
        self._last_seen = 0.0
        self._error = ""  # set when the request ended on an error status
        self._stopping = False
        self.ack_wait_s = ack_wait_s  # the consumer's, once bound
        self.requests = 0
        self.resets = 0

    async def ensure_consumer(self) -> None:
        """Create the stream and the lane's durable consumer, or bind to the existing ones."""
        await ensure_work_stream(self._js)
        try:
            info = await self._js.consumer_info(WORK_STREAM, self.lane.consumer)
        except NotFoundError:
            cfg = lane_consumer_config(self.lane, ack_wait_s=self._ack_wait_s)
            info = await self._js.add_consumer(WORK_STREAM, cfg)
        if info.config.ack_wait:
            self.ack_wait_s = float(info.config.ack_wait)

    async def open(self) -> None:
        await self.ensure_consumer()
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    def reset(self) -> None:
        """The server lost our pull request (reconnect): stop waiting for it."""
        if self._credits or not self._ended.is_set():
            self.resets += 1
            self._error = "reset"
            self._end()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            n = await self._slots.reserve(self._max_batch)
            if self._stopping:
                self._slots.release(n)
                break
            self._credits, self._error = n, ""
            self._ended.clear()
            self._last_seen = time.monotonic()
            try:
                await self._request(n)
                await self._wait_end()
            except asyncio.CancelledError:
                self._end()
                raise
            except Exception as exc:  # noqa: BLE001 - disconnected: the reconnect resets us
                self._error = f"request failed: {exc}"
                self._end()
            if self._error and not self._stopping:
                # An error status (consumer gone, JetStream not ready) or a lost request: re-bind, back off.
                if self._error != "reset":  # a reconnect: the new server is ready, ask again at once
                    log.warning("pull request ended", extra={"lane": self.lane.subject, "reason": self._error})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                try:
                    await self.ensure_consumer()
                except Exception as exc:  # noqa: BLE001
                    log.warning("cannot bind lane consumer", extra={"lane": self.lane.subject, "error": str(exc)})
            elif not self._error:
                backoff = 0.1

    async def _request(self, n: int) -> None:
        self.requests += 1
        req = {"batch": n, "expires": int(self._expires_s * 1e9), "idle_heartbeat": int(self._hb_s * 1e9)}
        await self._nc.publish(self._next_subject, json.dumps(req).encode(), reply=self._inbox)

    async def _wait_end(self) -> None:
        # Missing idle heartbeats means the server no longer holds the request.
        limit = 2 * self._hb_s + 0.5
        while not self._ended.is_set():
            remaining = self._last_seen + limit - time.monotonic()
            if remaining <= 0:
                self._error = "missed heartbeats"
                self.resets += 1
                self._end()
                return
            try:
                await asyncio.wait_for(self._ended.wait(), timeout=remaining)
            except TimeoutError:
                pass

    def _end(self) -> None:
        self._slots.release(self._credits)
        self._credits = 0
        self._ended.set()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if not status:
            if self._credits > 0:
                self._credits -= 1  # the credit becomes an in-flight slot
                if self._credits == 0:
                    self._ended.set()
            else:
                self._slots.take()
            self._dispatch(msg)
            return
        if status == "100":  # idle heartbeat
            return
        if status not in ("404", "408"):  # 404/408: no messages / expired, the normal end
            self._error = f"{status} {(msg.headers or {}).get('Description', '')}".strip()
        self._end()

    async def close(self) -> None:
        """Stop pulling; messages already on their way still reach the callback (and `dispatch`)."""
        self._stopping = True
        if self._sub is not None:
            sub, self._sub = self._sub, None
            # Disconnected or closing: the server drops the interest anyway.
            with swallowed(log, "drain a lane's pull subscription", NATS_FAILURES, lane=self.lane.subject):
                await asyncio.wait_for(sub.drain(), 3.0)
        self._end()
