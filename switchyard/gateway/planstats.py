"""Planner run counts: how many runs of each Planner started, ended in each outcome, and run now.

One KV entry per (Planner, tenant) in the bucket `sy_planstats` (file storage, no TTL), key
`<token(planner)>.<token(tenant)>`, a small JSON record. Every change is a compare-and-set
(`Nats-Expected-Last-Subject-Sequence`), so gateway replicas counting at once never lose an
increment, and carries a `Nats-Msg-Id` naming the run and the event (`<run key>@<created_at>@start`,
`...@end`), so the same event counted twice (a gateway died between counting and marking its run
record counted, and another replica picked the run up) is a duplicate that JetStream drops. The
bucket's duplicate window is the jobs TTL: a run record that can still be picked up again is
younger than that. Its history keeps the last PLANSTATS_HISTORY writes of each key, whose ids
JetStream rebuilds its duplicate table from after a restart.

Every gateway mirrors the bucket through a KV watch, so GET /v1/plans and the Planner status
writer (plannerstatus.py) read counts from memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from ..jetstream import NATS_FAILURES, ensure_planstats_bucket, kv_get
from ..logs import swallowed
from ..messages import as_dict
from ..subjects import PLANSTATS_BUCKET, token
from ..tasks import forever
from .dispatch import Dispatcher, unavailable
from .eta import WRONG_LAST_SEQUENCE

log = logging.getLogger("switchyard.gateway.planstats")

OUTCOMES = ("succeeded", "failed", "cancelled")
CAS_TRIES = 64  # replicas counting the same Planner at once; past this the run's driver retries later
WATCH_RETRY_S = 1.0


@dataclass(slots=True)
class Failure:
    at: float
    step: str | None
    code: str


@dataclass(slots=True)
class Counts:
    """One (Planner, tenant)'s runs, or a Planner's over every tenant (`tenant` None)."""

    planner: str
    tenant: str | None
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    last_run_at: float = 0.0
    last_failure: Failure | None = None

    @property
    def running(self) -> int:
        return max(0, self.started - self.succeeded - self.failed - self.cancelled)

    def add(self, other: Counts) -> None:
        self.started += other.started
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.last_run_at = max(self.last_run_at, other.last_run_at)
        if other.last_failure and (not self.last_failure or other.last_failure.at > self.last_failure.at):
            self.last_failure = other.last_failure

    def view(self) -> dict[str, Any]:
        """What GET /v1/plans shows (times as Unix seconds, as the jobs API does)."""
        out: dict[str, Any] = {"started": self.started, "running": self.running, "succeeded": self.succeeded,
                               "failed": self.failed, "cancelled": self.cancelled,
                               "last_run_at": self.last_run_at or None, "last_failure": None}
        if self.last_failure:
            out["last_failure"] = as_dict(self.last_failure)
        return out

    def encode(self) -> bytes:
        return orjson.dumps({"v": 1, **as_dict(self)})

    @classmethod
    def decode(cls, raw: bytes) -> Counts:
        data = orjson.loads(raw)
        data.pop("v", None)
        failure = data.pop("last_failure", None)
        return cls(**data, last_failure=Failure(**failure) if failure else None)


def stats_key(planner: str, tenant: str) -> str:
    return f"{token(planner)}.{token(tenant)}"


@dataclass
class PlanStats:
    """The counters: counted by the gateway driving a run, mirrored by every gateway."""

    dispatcher: Dispatcher
    settings: Callable[[], tuple[float, int]]  # (jobs TTL, replicas) of the current table
    counts: dict[str, Counts] = field(default_factory=dict)  # the mirror: KV key -> counts
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # the mirror has read the whole bucket once
    _kv: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        d = self.dispatcher
        if not d.connected or d.js is None:
            raise unavailable("not connected to NATS")
        if self._kv is None:
            ttl_s, replicas = self.settings()
            self._kv = await ensure_planstats_bucket(d.js, ttl_s, replicas)
        return self._kv

    # -- counting -------------------------------------------------------------------

    async def started(self, planner: str, tenant: str, run_key: str, created_at: float) -> None:
        def change(c: Counts) -> None:
            c.started += 1
            c.last_run_at = max(c.last_run_at, created_at)

        await self._count(planner, tenant, f"{run_key}@{created_at!r}@start", change)

    async def ended(self, planner: str, tenant: str, run_key: str, created_at: float, outcome: str,
                    error: dict[str, Any] | None, ended_at: float) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"not a run outcome: {outcome!r}")

        def change(c: Counts) -> None:
            setattr(c, outcome, getattr(c, outcome) + 1)
            if outcome == "failed" and (c.last_failure is None or c.last_failure.at <= ended_at):
                c.last_failure = Failure(at=ended_at, step=(error or {}).get("step"),
                                         code=str((error or {}).get("code") or "failed"))

        await self._count(planner, tenant, f"{run_key}@{created_at!r}@end", change)

    async def _count(self, planner: str, tenant: str, msg_id: str, change: Callable[[Counts], None]) -> None:
        """Read, change, compare-and-set; again when another gateway wrote in between. A duplicate
        (this event was counted already) is acknowledged by JetStream without a write."""
        kv = await self.bucket()
        js = self.dispatcher.js
        assert js is not None
        key = stats_key(planner, tenant)
        for attempt in range(CAS_TRIES):
            if attempt:  # lost to another writer: a little jitter, so a crowd of them does not lose together again
                await asyncio.sleep(random.random() * 0.002 * min(attempt, 10))
            try:
                entry = await kv_get(kv, key)
                counts = Counts.decode(entry.value) if entry is not None else Counts(planner, tenant)
                change(counts)
                await js.publish(f"$KV.{PLANSTATS_BUCKET}.{key}", counts.encode(), headers={
                    "Nats-Msg-Id": msg_id,
                    "Nats-Expected-Last-Subject-Sequence": str(entry.revision if entry is not None else 0)})
                return
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code in WRONG_LAST_SEQUENCE:
                    continue  # another gateway counted meanwhile: read again
                raise unavailable(f"cannot count the plan run: {exc}") from None
            except (TimeoutError, nats.errors.Error) as exc:
                raise unavailable(f"cannot count the plan run: {exc or type(exc).__name__}") from None
        raise unavailable(f"cannot count the plan run: {CAS_TRIES} concurrent writers in a row")

    # -- reading ----------------------------------------------------------------------

    def of(self, planner: str, tenant: str | None) -> Counts:
        """A Planner's counts: one tenant's, or every tenant's (None)."""
        total = Counts(planner, tenant)
        for c in self.counts.values():
            if c.planner == planner and (tenant is None or c.tenant == tenant):
                total.add(c)
        return total

    async def watch_forever(self) -> None:
        await forever(self._watch, pause_s=WATCH_RETRY_S, what="plan stats watch", logger=log)

    async def _watch(self) -> None:
        while not self.dispatcher.connected:
            await asyncio.sleep(WATCH_RETRY_S)
        kv = await self.bucket()
        watcher = await kv.watchall()
        seen: dict[str, Counts] = {}  # a fresh watch replays the bucket: swap the mirror once it has
        replaying = True
        try:
            while True:
                with suppress(nats.errors.TimeoutError):
                    entry = await watcher.updates(timeout=5.0)
                    if entry is None:  # the replay is over
                        if replaying:
                            replaying = False
                            self.counts = seen
                            self.synced.set()
                        continue
                    target = seen if replaying else self.counts
                    if not entry.value:
                        target.pop(entry.key, None)
                        continue
                    with suppress(ValueError, TypeError):
                        target[entry.key] = Counts.decode(entry.value)
        finally:
            with swallowed(log, "stop the plan-stats watcher", NATS_FAILURES):
                await watcher.stop()

