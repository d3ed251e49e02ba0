"""The counters behind every limit: one JetStream KV entry per (limit, subject), changed only by compare-and-set.

Bucket `sy_limits` (file storage, history 1), key `<kind>.<token(limit)>.<token(subject)>`:

- a window counter `{"w": window id, "used": units}`: every replica adds to `used` with a CAS
  (`Nats-Expected-Last-Subject-Sequence`), so two replicas can never both spend the same unit.
  A stored window older than the caller's starts over at 0; a newer one (another replica's clock
  is ahead) is the window from then on. The sum of what replicas took never passes the limit.
- a concurrency record `{"h": {replica: [slots, expires_at]}}`: the slots each replica holds; a
  replica renews its entry while it holds slots, and a replica that died stops renewing, so its
  slots lapse after SLOT_TTL_S and whoever writes next drops them.

To keep the per-request cost in microseconds, a replica does not CAS for every unit: it **leases a
block** of the window's remaining allowance with one CAS and admits from it locally. The block is a
quarter of what is left after the request (so it shrinks as the window fills, down to one unit: a
CAS per request near the limit), and a block left idle for LEASE_IDLE_S is given back with a CAS.
Leased units are spent in the counter as they are taken, so the counter never lets replicas
together admit more than the limit; a replica killed while holding a block loses it for the rest
of that window (errs on refusing, never on admitting). Concurrency slots are kept the same way: a
released slot stays with the replica for SLOT_IDLE_S for the next request, then goes back.

NATS away: what a replica holds locally is still exact and is used; anything needing a CAS raises
`limits_unavailable` (503): limited requests fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from ...errors import ApiError
from ...jetstream import NATS_FAILURES

log = logging.getLogger("switchyard.gateway.policy")

CAS_TRIES = 32  # replicas writing one counter at once; past this the request gets limits_unavailable
SHARE = 4  # a block is 1/SHARE of what remains after the request
LEASE_IDLE_S = 1.0  # an untouched block is given back after this
SLOT_IDLE_S = 0.25  # a released concurrency slot stays with this replica this long for the next request
CACHE_MAX = 10_000  # counters whose last revision is kept (a CAS without a read first)
SLOT_TTL_S = 10.0  # a replica's concurrency slots lapse this long after its last renewal (it died)
RETRY_AFTER_UNAVAILABLE_S = "2"


def unavailable(why: str) -> ApiError:
    return ApiError("limits_unavailable", f"limits cannot be counted now ({why}); the request was not admitted",
                    headers={"Retry-After": RETRY_AFTER_UNAVAILABLE_S})


@dataclass(slots=True)
class Lease:
    """Units of one window this replica took from the counter and has not used yet."""

    window: int
    ends: float  # when the window ends: the lease is dropped then
    left: int
    touched: float
    seen_used: int  # the counter's `used` after our last write: for the remaining estimate


@dataclass(slots=True)
class Slots:
    """Concurrency slots of one (limit, subject) held by this replica."""

    held: int = 0  # recorded in the KV under this replica's name
    in_use: int = 0
    idle_since: float = 0.0
    renewed: float = 0.0
    seen_others: int = 0  # slots the other replicas held at our last write


@dataclass(slots=True)
class _Cached:
    revision: int
    value: dict[str, object]


KvSource = Callable[[], Awaitable[KeyValue]]


class Ledger:
    def __init__(self, bucket: KvSource, instance: str, lost: Callable[[], None] | None = None) -> None:
        self._bucket = bucket
        self._lost = lost  # the bucket failed us: bind it again next time (it may have been deleted)
        self.instance = instance
        self.leases: dict[str, Lease] = {}
        self.slots: dict[str, Slots] = {}
        self._cache: dict[str, _Cached] = {}  # the last revision we read or wrote, to CAS without a read
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Background work of a request that has been answered (a charge after settling): kept until done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a policy counter update failed", extra={"error": str(task.exception())})

    def _forget(self, key: str) -> None:
        """Nothing of `key` is held here any more: its cache and lock go (one per IP would pile up)."""
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            self._locks.pop(key, None)
            self._cache.pop(key, None)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- windows -------------------------------------------------------------------------------

    def take_local(self, key: str, window: int, n: int, now: float) -> Lease | None:
        """The lease when it covers `n` units of `window` (they are taken from it); else None."""
        lease = self.leases.get(key)
        if lease is None or lease.window != window or lease.left < n:
            return None
        lease.left -= n
        lease.touched = now
        return lease

    async def take(self, key: str, window: int, ends: float, n: int, limit: int, now: float) -> Lease | None:
        """Take `n` units of `window` with a CAS (leasing a block beyond them); None: over the limit."""
        async with self._lock(key):  # one writer per key in this replica: the others wait and reuse its block
            lease = self.take_local(key, window, n, now)
            if lease is not None:
                return lease
            return await self._take(key, window, ends, n, limit, now)

    async def _take(self, key: str, window: int, ends: float, n: int, limit: int, now: float) -> Lease | None:
        lease = self.leases.get(key)
        held = lease.left if lease is not None and lease.window == window else 0
        need = n - held

        def change(value: dict[str, object]) -> tuple[dict[str, object], int] | None:
            stored_w = int(value.get("w", window))  # type: ignore[call-overload]
            used = int(value.get("used", 0)) if stored_w >= window else 0  # type: ignore[call-overload]
            if stored_w > window:  # another replica's clock is ahead: its window is the current one
                return None
            free = limit - used
            if free < need:
                return None
            block = need + (free - need) // SHARE
            return {"w": window, "used": used + block}, block

        outcome = await self._cas(key, change)
        if outcome is None:
            return None
        value, block = outcome
        self.leases[key] = lease = Lease(window, ends, held + block - n, now, int(value["used"]))  # type: ignore[call-overload]
        return lease

    def give_back_local(self, key: str, window: int, ends: float, n: int, now: float) -> None:
        """Units taken and not spent (a later limit refused, or a token reservation settled lower).

        They stay counted in the entry, so they go to this replica's lease (one is made if the block
        was given back meanwhile), from which return_idle() gives them back to everyone.
        """
        lease = self.leases.get(key)
        if lease is not None and lease.window == window:
            lease.left += n
        elif (lease is None or lease.window < window) and ends > now:
            cached = self._cache.get(key)
            seen = cached.value.get("used") if cached is not None and cached.value.get("w") == window else None
            # Without the counter as last seen, the RateLimit estimate assumes the window full but for these units.
            self.leases[key] = Lease(window, ends, n, now, int(seen) if isinstance(seen, int) else 1 << 62)

    async def charge(self, key: str, window: int, n: int) -> None:
        """Units spent past what was reserved (a worker reported more tokens): counted even past the limit."""
        lease = self.leases.get(key)
        if lease is not None and lease.window == window and lease.left >= n:
            lease.left -= n
            return

        def change(value: dict[str, object]) -> tuple[dict[str, object], int] | None:
            if int(value.get("w", window)) != window:  # type: ignore[call-overload]
                return None  # that window is over: nothing left to charge it to
            return {"w": window, "used": int(value.get("used", 0)) + n}, n  # type: ignore[call-overload]

        async with self._lock(key):
            await self._cas(key, change)

    async def return_idle(self, now: float) -> None:
        """Give back blocks untouched for LEASE_IDLE_S, and drop those of windows that ended."""
        if len(self._cache) > CACHE_MAX:  # entries last seen for keys nothing is held for: only a shortcut
            for key in [k for k in self._cache if k not in self.leases and k not in self.slots]:
                self._forget(key)
        for key, lease in list(self.leases.items()):
            if lease.ends <= now:
                self.leases.pop(key, None)  # its window is over: the counter starts afresh anyway
                self._forget(key)
                continue
            if lease.left <= 0 or now - lease.touched < LEASE_IDLE_S:
                continue
            back = lease.left

            def change(value: dict[str, object], w: int = lease.window,
                       back: int = back) -> tuple[dict[str, object], int] | None:
                if int(value.get("w", w)) != w:  # type: ignore[call-overload]
                    return None
                return {"w": w, "used": max(0, int(value.get("used", 0)) - back)}, back  # type: ignore[call-overload]

            lease.left = 0  # first: a request meanwhile finds nothing here and CASes itself
            try:
                async with self._lock(key):
                    await self._cas(key, change)
            except ApiError:
                lease.left += back  # NATS away: keep it (nothing was written)
                continue
            if lease.left == 0 and self.leases.get(key) is lease:
                self.leases.pop(key, None)  # the entry as last written stays cached until the window ends

    async def give_back_all(self, now: float) -> None:
        """Every block and spare slot held here goes back (the gateway is stopping)."""
        for lease in self.leases.values():
            lease.touched = float("-inf")
        for s in self.slots.values():
            s.idle_since = float("-inf")
        await self.return_idle(now)
        await self.tend_slots(now)

    # -- concurrency -----------------------------------------------------------------------------

    def acquire_local(self, key: str) -> Slots | None:
        s = self.slots.get(key)
        if s is None or s.in_use >= s.held:
            return None
        s.in_use += 1
        return s

    async def acquire(self, key: str, limit: int, now: float) -> Slots | None:
        """One more slot for this replica, with a CAS; None: every slot is held (live replicas only)."""
        s = self.slots.setdefault(key, Slots())
        me = self.instance

        def change(value: dict[str, object]) -> tuple[dict[str, object], int] | None:
            holders = _live_holders(value, now)
            others = int(sum(h[0] for name, h in holders.items() if name != me))
            s.seen_others = others
            if others + s.held + 1 > limit:
                return None
            holders[me] = [s.held + 1, now + SLOT_TTL_S]
            return {"h": holders}, 1

        # Serialised with every other write of this key here: s.held is what the record says.
        async with self._lock(key):
            if self.acquire_local(key) is not None:  # a slot came free while we waited
                return s
            if await self._cas(key, change) is None:
                return None
            s.held += 1
            s.in_use += 1
            s.renewed = now
        return s

    def release(self, key: str, now: float) -> None:
        s = self.slots.get(key)
        if s is not None and s.in_use > 0:
            s.in_use -= 1
            s.idle_since = now

    async def tend_slots(self, now: float) -> None:
        """Give back slots idle for SLOT_IDLE_S; renew the record of the slots still in use."""
        me = self.instance
        for key, s in list(self.slots.items()):
            spare = s.held - s.in_use
            give = spare if spare > 0 and now - s.idle_since >= SLOT_IDLE_S else 0
            renew = s.held > 0 and now - s.renewed >= SLOT_TTL_S / 3
            if not give and not renew:
                continue
            async with self._lock(key):
                # Spare slots leave before the write: no request here can take one meanwhile.
                before = s.held
                s.held = max(s.in_use, s.held - give) if give else s.held

                def change(value: dict[str, object], s: Slots = s) -> tuple[dict[str, object], int] | None:
                    holders = _live_holders(value, now)
                    if s.held > 0:
                        holders[me] = [s.held, now + SLOT_TTL_S]
                    else:
                        holders.pop(me, None)
                    return {"h": holders}, s.held

                try:
                    await self._cas(key, change)
                except ApiError:
                    s.held = before  # NATS away: nothing was written; again next round (the record lapses)
                    continue
                s.renewed = now
                if s.held == 0 and s.in_use == 0:
                    self.slots.pop(key, None)
                    self._forget(key)

    # -- the compare-and-set -------------------------------------------------------------------

    async def _cas(self, key: str, change: Callable[[dict[str, object]], tuple[dict[str, object], int] | None],
                   ) -> tuple[dict[str, object], int] | None:
        """Apply `change` to the entry's value with a CAS, again after losing to another writer.

        Starts from the last revision this replica saw (no read when nobody else wrote since).
        `change` returns None to give up (over the limit): nothing is written then.
        """
        try:
            kv = await self._bucket()
        except ApiError:
            raise
        except NATS_FAILURES as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None
        for attempt in range(CAS_TRIES):
            if attempt > 1:  # lost twice: a little jitter, so a crowd of writers does not collide again
                await asyncio.sleep(random.random() * 0.002 * min(attempt, 10))
            try:
                cached = self._cache.get(key)
                if cached is None or attempt > 0:
                    cached = await self._read(kv, key)
                out = change(dict(cached.value))
                if out is None:
                    return None
                value = out[0]
                revision = await kv.update(key, orjson.dumps(value), last=cached.revision)
                self._cache[key] = _Cached(revision, value)
                return out
            except nats.js.errors.KeyWrongLastSequenceError:
                self._cache.pop(key, None)
                continue
            except nats.js.errors.BadRequestError as exc:  # older servers: a plain 400 for the wrong sequence
                if exc.err_code in (10071, 10164):
                    self._cache.pop(key, None)
                    continue
                raise unavailable(str(exc)) from None
            except NATS_FAILURES as exc:
                self._cache.pop(key, None)
                if self._lost is not None:
                    self._lost()
                raise unavailable(str(exc) or type(exc).__name__) from None
        raise unavailable(f"{CAS_TRIES} concurrent writers in a row")

    @staticmethod
    async def _read(kv: KeyValue, key: str) -> _Cached:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # absent, or deleted / purged
            return _Cached(0, {})
        if not entry.value:
            return _Cached(entry.revision or 0, {})
        return _Cached(entry.revision or 0, orjson.loads(entry.value))


def _live_holders(value: dict[str, object], now: float) -> dict[str, list[float]]:
    """Replicas holding slots whose record has not lapsed (a dead replica's slots come back)."""
    holders = value.get("h") or {}
    assert isinstance(holders, dict)
    return {name: [int(h[0]), float(h[1])] for name, h in holders.items() if float(h[1]) > now and int(h[0]) > 0}
