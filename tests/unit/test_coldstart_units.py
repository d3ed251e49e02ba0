"""Prefer: wait parsing (RFC 7240), the hold bound and the ETA arithmetic: pure functions, no I/O."""

from __future__ import annotations

import pytest

from switchyard.gateway.eta import estimate, lane_key, remaining, retry_after
from switchyard.gateway.hold import Holds, hold_seconds, wait_preference
from switchyard.subjects import WORK_PREFIX, Lane


@pytest.mark.parametrize("headers,expected", [
    (["wait=10"], 10),
    (['wait="7"'], 7),
    (["respond-async, wait=5"], 5),
    (["respond-async", "WAIT = 3 ; foo=bar"], 3),
    (["wait=4, wait=9"], 4),  # only the first counts
    (["wait=soon, wait=9"], None),  # the first is malformed: ignored, not replaced
    (["wait=1.5"], None), (["wait=-1"], None), (["wait"], None), (["wait="], None),
    (["wait=1234567890"], None),  # too large to be a wait: malformed
    ([], None), (["respond-async"], None), (["handling=lenient"], None),
])
def test_wait_preference(headers: list[str], expected: int | None) -> None:
    assert wait_preference(headers) == expected


def test_hold_is_capped_by_the_timeout_and_zero_means_no_hold() -> None:
    assert hold_seconds(["wait=600"], 30.0) == 30
    assert hold_seconds(["wait=10"], 30.0) == 10
    assert hold_seconds(["wait=0"], 30.0) is None
    assert hold_seconds(["wait=5"], 0.5) is None  # a timeout under a second leaves nothing to hold


def test_holds_are_bounded_per_lane() -> None:
    a, b = Lane("m", "default", "cpu", "default"), Lane("m", "default", "l4", "default")
    holds = Holds(limit=2)
    assert holds.acquire(a) and holds.acquire(a) and not holds.acquire(a)
    assert holds.acquire(b)  # another lane has its own bound
    holds.release(a)
    assert holds.held(a) == 1 and holds.acquire(a)


def test_estimate_and_remaining() -> None:
    assert estimate([], 180.0) == 180.0
    assert estimate([10.0, 30.0, 20.0], 180.0) == 20.0
    assert remaining(20.0, 5.2) == 14.8
    assert remaining(1.16, 0) == 1.2  # tenths: whole seconds would say 2 s, 72 % off (bench/coldstart.py)
    assert remaining(20.0, 25.0) == 0.1  # overdue: still coming, never zero or negative
    assert (retry_after(1.2), retry_after(14.8), retry_after(0.1)) == (2, 15, 1)  # HTTP: whole seconds, >= 1
    lane = Lane("BAAI/bge-m3", "default", "l4", "tenant-a")
    assert Lane.from_subject(f"{WORK_PREFIX}.{lane_key(lane)}") == lane


def test_sdk_asks_for_a_hold_that_ends_before_its_own_timeout() -> None:
    from switchyard.client._core import prefer_wait

    assert prefer_wait(600, 60) == {"Prefer": "wait=55"}  # 5 s kept before the HTTP timeout fires
    assert prefer_wait(20, 60) == {"Prefer": "wait=20"}  # never longer than the caller will wait
    assert prefer_wait(600, 5) == {}  # no room for a hold: poll the job as before
