"""A token bucket for the operator's writes to the API server.

A burst of thousands of Upstreams means thousands of ScaledObjects, statuses and
Deployments to write; without a bound the operator would take the API server's
whole write budget (its default is 400 concurrent mutating requests, shared with
every other controller). Reads are not limited: a pass does a fixed number of lists.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0  # how long writes waited in all: shows when the bound is what is slow

    async def take(self) -> None:
        async with self._lock:  # first come, first served
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                wait = (1 - self._tokens) / self.rate
                self.waited_s += wait
                await asyncio.sleep(wait)
                self._tokens, self._at = 1.0, time.monotonic()
            self._tokens -= 1
