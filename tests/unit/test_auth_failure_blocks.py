"""The failure limiter's memory of blocks learnt from the shared count or a replica's notice (authfailures.py):
refused until the window ends, bounded in size. The shared count itself runs on real NATS in
tests/integration/test_auth_across_replicas.py."""

from __future__ import annotations

import pytest

from switchyard.gateway.authfailures import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_block_refuses_until_it_ends_whatever_the_local_count() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock=clock)
    limiter.block("203.0.113.7", 42)
    assert limiter.retry_after("203.0.113.7", 10) == pytest.approx(42)  # no failure seen here
    assert limiter.retry_after("203.0.113.8", 10) is None
    clock.now += 42
    assert limiter.retry_after("203.0.113.7", 10) is None
    limiter.failed("203.0.113.7")  # the per-process count starts afresh, apart from the block
    assert limiter.retry_after("203.0.113.7", 2) is None


def test_blocks_are_bounded() -> None:
    limiter = FailureLimiter(capacity=100, clock=Clock())
    for i in range(1000):
        limiter.block(f"ip-{i}", 60)
    assert limiter.retry_after("ip-999", 10) is not None and limiter.retry_after("ip-0", 10) is None
    assert len(limiter._blocked) == 100


def test_without_a_ledger_a_failure_is_counted_here_only() -> None:
    limiter = FailureLimiter(clock=Clock())
    for _ in range(3):
        limiter.failed("192.0.2.1", 3)  # no ledger: no task, no event loop needed
    assert limiter.retry_after("192.0.2.1", 3) == pytest.approx(60)
