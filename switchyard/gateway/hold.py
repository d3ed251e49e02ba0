"""`Prefer: wait=N` (RFC 7240): hold a request through a cold start instead of answering 202 at once.

The held item is an ordinary 202 job (recorded, queued, keep_result) whose reply also
goes to this gateway's inbox; the hold only decides whether the answer is the result
(200) or the job (202). The item is published once either way, so the hold can neither
lose it nor run it twice.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

from ..subjects import Lane

MAX_HELD_PER_LANE = 32  # per gateway process: each hold is an open connection and a waiter
_DELTA_SECONDS = re.compile(r"[0-9]{1,9}")


def wait_preference(headers: Iterable[str]) -> int | None:
    """The `wait` preference in seconds; None when absent or malformed.

    RFC 7240 lets a server ignore a preference it cannot use, so a malformed one is ignored
    rather than refused, and only the first `wait` counts (§2).
    """
    for header in headers:
        for pref in header.split(","):
            name, eq, value = pref.partition(";")[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return int(value) if eq and _DELTA_SECONDS.fullmatch(value) else None
    return None


def hold_seconds(headers: Iterable[str], timeout_s: float) -> int | None:
    """Seconds to hold: the preference capped by the Upstream's timeout; None for no hold."""
    wait = wait_preference(headers)
    if wait is None:
        return None
    held = min(wait, math.floor(timeout_s))
    return held if held > 0 else None


class Holds:
    """How many requests this gateway holds per lane; past `limit` a request gets its 202 at once."""

    def __init__(self, limit: int = MAX_HELD_PER_LANE) -> None:
        self.limit = limit
        self._held: Counter[Lane] = Counter()

    def acquire(self, lane: Lane) -> bool:
        if self._held[lane] >= self.limit:
            return False
        self._held[lane] += 1
        return True

    def release(self, lane: Lane) -> None:
        self._held[lane] -= 1
        if self._held[lane] <= 0:
            del self._held[lane]

    def held(self, lane: Lane) -> int:
        return self._held[lane]
