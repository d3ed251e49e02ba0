"""The operator's write bound: a token bucket that makes writes past its burst wait."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.operator.ratelimit import TokenBucket


def test_writes_within_the_burst_never_wait_and_the_next_one_does() -> None:
    async def go() -> TokenBucket:
        bucket = TokenBucket(rate=1000.0, burst=3)
        for _ in range(3):
            await bucket.take()
        assert bucket.waited_s == 0.0
        await bucket.take()  # the fourth: the bucket is empty, it waits for one token
        return bucket

    assert asyncio.run(go()).waited_s > 0.0


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0)
