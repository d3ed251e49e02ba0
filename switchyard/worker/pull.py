"""The worker's capacity, shared by the pullers of all its lanes (worker/fairness.py pulls).

nats-py's `fetch(batch=n)` holds the first message until the whole batch or the timeout
arrives, and its pull subscriptions stall after a server restart, so the pullers send their
own pull requests, each for at most the slots free now.
"""

from __future__ import annotations

import asyncio


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
