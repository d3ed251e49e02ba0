"""Usage totals: the ledger's records summed per group (tenant, key, model, machine profile, ...).

What each column counts, from the records workers append (one per finished attempt, worker/usage.py):

- `requests`: accepted work items that ended (their final record), whatever the outcome: succeeded,
  failed, expired, cancelled. An item counts once even if a worker died between its final record and
  its ack and a second worker ran it again (the same item key is seen twice in one report); a request
  id reused later is another item (UsageRecord.item_key).
- `items`: the inputs of requests that succeeded (what was served).
- `attempts`: every attempt a worker finished, the retried ones included.
- `input_tokens`, `output_tokens`: what handlers reported in ctx.usage, every attempt.
- `compute_seconds`: handler wall time, every attempt; `gpu_seconds`: the same times the worker's GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..messages import UsageRecord

GROUPS = ("tenant", "key", "model", "machine_profile", "pool", "bundle", "op")  # the column order, always
COUNTS = ("requests", "items", "attempts", "input_tokens", "output_tokens", "compute_seconds", "gpu_seconds")


@dataclass(slots=True)
class Totals:
    requests: int = 0
    items: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    compute_seconds: float = 0.0
    gpu_seconds: float = 0.0

    def view(self) -> dict[str, Any]:
        return {"requests": self.requests, "items": self.items, "attempts": self.attempts,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "compute_seconds": round(self.compute_seconds, 6), "gpu_seconds": round(self.gpu_seconds, 6)}


def group_value(record: UsageRecord, group: str) -> str:
    if group == "key":
        return record.key_name
    value = getattr(record, group)
    return value if isinstance(value, str) else str(value)


class Aggregate:
    """Totals per group, fed one record at a time (a scan never holds the records themselves)."""

    def __init__(self, group_by: Iterable[str]) -> None:
        wanted = set(group_by)
        self.group_by = tuple(g for g in GROUPS if g in wanted)  # stable column order, whatever was asked
        self.totals: dict[tuple[str, ...], Totals] = {}
        self._ended: set[str] = set()  # item keys whose final record was counted

    def add(self, record: UsageRecord) -> None:
        group = tuple(group_value(record, g) for g in self.group_by)
        totals = self.totals.get(group)
        if totals is None:
            totals = self.totals[group] = Totals()
        totals.attempts += 1
        totals.input_tokens += record.input_tokens
        totals.output_tokens += record.output_tokens
        totals.compute_seconds += record.compute_s
        totals.gpu_seconds += record.gpu_seconds
        if record.final:
            key = record.item_key
            if key not in self._ended:
                self._ended.add(key)
                totals.requests += 1
                if record.state == "succeeded":
                    totals.items += record.items

    def rows(self) -> list[dict[str, Any]]:
        """One row per group, sorted by the group's values: the group's columns, then COUNTS."""
        return [{**dict(zip(self.group_by, group, strict=True)), **self.totals[group].view()}
                for group in sorted(self.totals)]

    def columns(self) -> list[str]:
        return [*self.group_by, *COUNTS]
