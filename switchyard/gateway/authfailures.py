"""Failed authentication counted per client IP, so keys cannot be guessed at speed.

Per gateway process (N replicas let a client try N times the limit: still far too slow to guess a
key of 16+ random bytes). The map is an LRU of a bounded size: a client cycling through addresses
cannot grow memory, only push out the oldest entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

WINDOW_S = 60.0
CAPACITY = 10_000  # client IPs remembered; the least recently failing is forgotten first


class FailureLimiter:
    def __init__(self, capacity: int = CAPACITY, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.window_s, self.clock = capacity, window_s, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # ip -> (window start, failures)

    def retry_after(self, ip: str, limit: int) -> float | None:
        """Seconds until `ip` may present a key again; None when it may now."""
        entry = self._seen.get(ip)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window_s - self.clock()
        if left <= 0:
            del self._seen[ip]
            return None
        return left if count >= limit else None

    def failed(self, ip: str) -> None:
        now = self.clock()
        start, count = self._seen.pop(ip, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._seen[ip] = (start, count + 1)  # popped and put back: now the most recent
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
