"""Where the pools made through /v1/pools live: one small interface, two backends.

- Cluster mode (`kubepools.KubePoolStore`): Pool resources in the gateway's namespace;
  a renewal sets the `switchyard.dev/renewed-at` annotation and the operator moves
  the pool's Lease. Expiry is read from the Lease.
- Standalone mode (`kvpools.KvPoolStore`): records in a JetStream KV bucket that every
  gateway replica on the NATS shares; expiry is the record's renewal time plus its TTL.

Reads that decide something (a tenant's pool count, whether a name is taken) go to the
store itself, never to a replica's memory, so every replica enforces the same limits.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """One pool made through the API (or, cluster mode, any Pool resource of the namespace)."""

    name: str
    tenant: str
    gpus: Mapping[str, int]
    models: tuple[str, ...]
    ttl_seconds: int
    renewed_at: float  # unix seconds: creation or the last renewal
    api: bool = True  # made through /v1/pools (only those are renewed, deleted and counted)
    gateway: str | None = None  # cluster mode: spec.gatewayRef
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def same_spec(self, other: PoolRecord) -> bool:
        """An identical re-POST by the same tenant (an idempotent retry)."""
        return (self.tenant, dict(self.gpus), sorted(self.models), self.ttl_seconds) == (
            other.tenant, dict(other.gpus), sorted(other.models), other.ttl_seconds)

    def expires_at(self) -> float | None:
        return None if self.ttl_seconds <= 0 else self.renewed_at + self.ttl_seconds

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tenant": self.tenant, "gpus": dict(self.gpus), "models": list(self.models),
                "ttl_seconds": self.ttl_seconds, "renewed_at": self.renewed_at}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PoolRecord:
        return cls(str(d["name"]), str(d.get("tenant") or ""), {str(k): int(v) for k, v in d["gpus"].items()},
                   tuple(str(m) for m in d.get("models") or ()), int(d["ttl_seconds"]), float(d["renewed_at"]))


class NameTaken(Exception):
    """create(): the name is in the store already; `existing` is what holds it (None: unreadable)."""

    def __init__(self, existing: PoolRecord | None) -> None:
        super().__init__("pool name taken")
        self.existing = existing


class LeaseLapsed(Exception):
    """renew(): the pool's lease lapsed at `at` (unix seconds); a renewal does not revive it."""

    def __init__(self, at: float) -> None:
        super().__init__("pool lease lapsed")
        self.at = at


class PoolStore(abc.ABC):
    """The pools of one gateway, shared by all of its replicas."""

    # True where every pool of the routing table is also in the store (cluster mode: all are Pool
    # resources), so a table entry the store lacks is stale (just deleted), not declared elsewhere.
    holds_declared: bool = False

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, fn: Callable[[], None]) -> None:
        """Called (on the event loop) after the watched view changed."""
        self._listeners.append(fn)

    def _changed(self) -> None:
        for fn in self._listeners:
            fn()

    @abc.abstractmethod
    async def list(self) -> list[PoolRecord]:
        """Every pool, read from the store now."""

    @abc.abstractmethod
    async def get(self, name: str) -> PoolRecord | None:
        """The pool, read from the store now; None when absent."""

    @abc.abstractmethod
    async def create(self, record: PoolRecord) -> PoolRecord:
        """Create-only; raises NameTaken when the name is in use."""

    @abc.abstractmethod
    async def renew(self, name: str, at: float) -> PoolRecord | None:
        """Move the pool's renewal to `at`; None when absent; LeaseLapsed when it already lapsed."""

    @abc.abstractmethod
    async def delete(self, name: str) -> bool:
        """False when absent."""

    @abc.abstractmethod
    def expires_at(self, record: PoolRecord) -> float | None:
        """When the pool's lease ends (unix seconds); None: never."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Keep the watched view current (a background task)."""

    def expired_at(self, record: PoolRecord, now: float | None = None) -> float | None:
        expiry = self.expires_at(record)
        return expiry if expiry is not None and expiry < (time.time() if now is None else now) else None


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with microseconds, the format of the renewed-at annotation."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
