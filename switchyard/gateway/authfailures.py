"""Failed authentication counted per client IP, so keys cannot be guessed at speed: across every replica.

The count of a client IP's unknown keys in a minute (epoch-aligned, like spec.policy's windows) is an
entry of the policy chain's counter store, `sy_limits` (policy/ledger.py: compare-and-set, leased
blocks), key `f.auth.<ip>`: each failure takes one unit of `maxFailuresPerMinute`, so the failures all
replicas answer 401 never pass it. Once the window's units are gone, the replica that finds out
remembers the IP as blocked until the window ends and refuses its keys before hashing, with no NATS
round trip; successful requests never touch NATS for this.

The replica that finds an IP past its limit also says so on core NATS (AUTH_BLOCKS_SUBJECT), so the other
replicas refuse that IP's keys from memory too, without waiting for a failure of their own there: only
in the moment the notice takes to arrive could a right guess still show on a replica.

Each process also counts failures itself (a window from the first failure), an LRU of a bounded size:
a client cycling through addresses cannot grow memory, only push out the oldest entries. That count
is the floor: with NATS away (the ledger answers limits_unavailable) the limit is per process, logged,
never unlimited, and good keys are never refused for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from contextvars import ContextVar
from typing import Any

import orjson

from ..errors import ApiError
from ..jetstream import NATS_FAILURES
from ..subjects import AUTH_BLOCKS_SUBJECT, token
from .policy.ledger import Ledger

log = logging.getLogger("switchyard.gateway.auth")

WINDOW_S = 60.0
CAPACITY = 10_000  # client IPs remembered; the least recently failing is forgotten first
MAX_IP_CHARS = 64  # an IPv6 /64 in full is 43; a notice naming more is not ours
SHARED_WAIT_S = 2.0  # an HTTP failure's answer waits this long at most for the shared count

# Set by an HTTP request's auth middleware: the shared counts its failures started, awaited before the
# answer (gRPC and the WebSocket leave none: their counts finish in the background).
PENDING: ContextVar[list[asyncio.Future[float | None]] | None] = ContextVar("switchyard_auth_pending", default=None)


def too_many(limit: int, wait: float) -> ApiError:
    retry = max(1, math.ceil(wait))
    return ApiError("too_many_auth_failures", f"more than {limit} unknown API keys from this client IP in a minute; "
                                              f"retry in {retry} s", headers={"Retry-After": str(retry)})


class FailureLimiter:
    def __init__(self, capacity: int = CAPACITY, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.window_s, self.clock = capacity, window_s, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # ip -> (window start, failures)
        self._blocked: OrderedDict[str, float] = OrderedDict()  # ip -> until (clock), from the shared count
        self._shared_down = False  # NATS away: logged once per outage
        self._nc: Any = None  # the NATS connection blocks are told on, while share_blocks() runs

    def retry_after(self, ip: str, limit: int) -> float | None:
        """Seconds until `ip` may present a key again; None when it may now. No I/O."""
        until = self._blocked.get(ip)
        if until is not None:
            left = until - self.clock()
            if left > 0:
                return left
            del self._blocked[ip]
        entry = self._seen.get(ip)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window_s - self.clock()
        if left <= 0:
            del self._seen[ip]
            return None
        return left if count >= limit else None

    def failed(self, ip: str, limit: int | None = None, ledger: Ledger | None = None) -> None:
        """Count a failure here and, given the ledger, across the replicas (a task; see PENDING)."""
        now = self.clock()
        start, count = self._seen.pop(ip, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._seen[ip] = (start, count + 1)  # popped and put back: now the most recent
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        if ledger is None or limit is None:
            return
        task = asyncio.ensure_future(self.count_shared(ledger, ip, limit))
        pending = PENDING.get()
        if pending is not None:
            pending.append(task)
        else:
            ledger.spawn(_quiet(task))

    async def count_shared(self, ledger: Ledger, ip: str, limit: int) -> float | None:
        """Take one failure of this window from the shared count; the seconds the IP is blocked for when
        this failure is past the limit (it is answered 429), else None."""
        now = time.time()
        window = int(now // self.window_s)
        ends = (window + 1) * self.window_s
        key = f"f.auth.{token(ip)}"
        try:
            lease = ledger.take_local(key, window, 1, now) or await ledger.take(key, window, ends, 1, limit, now)
        except ApiError as exc:  # limits_unavailable: NATS away; the per-process count still holds
            if not self._shared_down:
                self._shared_down = True
                log.warning("failed keys are counted per gateway process until NATS is back",
                            extra={"error": exc.message})
            return None
        if self._shared_down:
            self._shared_down = False
            log.info("failed keys are counted across the replicas again")
        # Blocked once the window's last unit is spent (by this failure, or before it: lease None), as the
        # per-process count blocks at its limit; units another replica leased and has not spent are lost then.
        if lease is not None and (lease.left > 0 or lease.seen_used < limit):
            return None
        self.block(ip, ends - now)
        if self._nc is not None:
            with suppress(*NATS_FAILURES):  # else the others learn at their own next failure from it
                await self._nc.publish(AUTH_BLOCKS_SUBJECT, orjson.dumps({"ip": ip, "until": ends}))
        return None if lease is not None else ends - now  # this failure was within the limit: its 401 stands

    def block(self, ip: str, wait: float) -> None:
        """Refuse `ip`'s keys for `wait` seconds (the rest of its window)."""
        self._blocked.pop(ip, None)
        self._blocked[ip] = self.clock() + wait
        while len(self._blocked) > self.capacity:
            self._blocked.popitem(last=False)

    async def share_blocks(self, connection: Callable[[], Awaitable[Any]]) -> None:
        """Hear the other replicas' blocks and tell them ours, for as long as the gateway runs. `connection`
        answers the NATS connection once it is up (the subscription then lasts across reconnects)."""
        nc = await connection()

        async def heard(msg: Any) -> None:
            try:
                notice = orjson.loads(msg.data)
                ip, until = notice["ip"], float(notice["until"])
            except (ValueError, KeyError, TypeError):
                return
            wait = min(until - time.time(), self.window_s)  # never longer than one window, whoever says so
            if isinstance(ip, str) and len(ip) <= MAX_IP_CHARS and wait > 0:
                self.block(ip, wait)

        sub = await nc.subscribe(AUTH_BLOCKS_SUBJECT, cb=heard)
        self._nc = nc
        try:
            await asyncio.Event().wait()
        finally:
            self._nc = None
            with suppress(*NATS_FAILURES):
                await sub.unsubscribe()

    def __len__(self) -> int:
        return len(self._seen)


async def settle(pending: list[asyncio.Future[float | None]], limit: int) -> ApiError | None:
    """After an HTTP request's failures: the 429 when the shared count found the IP past its limit."""
    for task in pending:
        try:
            wait = await asyncio.wait_for(asyncio.shield(task), SHARED_WAIT_S)
        except TimeoutError:  # NATS slow: answer now, the count finishes in the background
            task.add_done_callback(_consume)
            continue
        if wait is not None:
            return too_many(limit, wait)
    return None


async def _quiet(task: asyncio.Future[float | None]) -> None:
    await task


def _consume(task: asyncio.Future[float | None]) -> None:
    if not task.cancelled():
        task.exception()
