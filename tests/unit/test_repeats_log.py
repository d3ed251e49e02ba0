"""logs.Repeats: a failure that repeats is one line a minute, a new one shows at once."""

from __future__ import annotations

import logging

import pytest

from switchyard.logs import Repeats, swallowed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_at_once_then_once_per_interval_with_the_count_left_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = logging.getLogger("test.repeats")
    repeats = Repeats(log, every_s=60.0, clock=clock)
    caplog.set_level(logging.DEBUG, logger="test.repeats")
    assert repeats.failed("demand poll", TimeoutError("nats: timeout"), stream="S")
    for _ in range(29):  # every 2 s for a minute less a tick
        clock.now += 2
        assert not repeats.failed("demand poll", TimeoutError("nats: timeout"), stream="S")
    clock.now += 2
    assert repeats.failed("demand poll", TimeoutError("nats: timeout"), stream="S")
    lines = [r for r in caplog.records if r.name == "test.repeats"]
    assert [r.getMessage() for r in lines] == ["demand poll failed"] * 2
    assert [r.__dict__["repeats_left_out"] for r in lines] == [0, 29]
    assert lines[0].__dict__["stream"] == "S" and lines[0].__dict__["error"] == "nats: timeout"
    assert lines[0].__dict__["error_type"] == "TimeoutError" and lines[0].levelno == logging.WARNING


def test_another_failure_or_another_thing_shows_at_once(caplog: pytest.LogCaptureFixture) -> None:
    repeats = Repeats(logging.getLogger("test.repeats2"), clock=Clock())
    caplog.set_level(logging.DEBUG, logger="test.repeats2")
    assert repeats.failed("a", TimeoutError())
    assert repeats.failed("a", ConnectionResetError("reset"))  # a different failure of the same thing
    assert repeats.failed("b", TimeoutError())  # the same failure of another thing
    assert not repeats.failed("a", TimeoutError())
    assert caplog.records[0].__dict__["error"] == "TimeoutError"  # no text: its type says it


def test_recovered_forgets_so_the_next_outage_is_logged_at_once() -> None:
    repeats = Repeats(logging.getLogger("test.repeats3"), clock=Clock())
    assert repeats.failed("a", TimeoutError())
    assert not repeats.failed("a", TimeoutError())
    repeats.recovered("a")
    assert repeats.failed("a", TimeoutError())


def test_traceback_and_level_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    repeats = Repeats(logging.getLogger("test.repeats4"), clock=Clock())
    caplog.set_level(logging.DEBUG, logger="test.repeats4")
    try:
        {}["missing"]
    except KeyError as exc:
        repeats.failed("a pass", exc, level=logging.ERROR, exc_info=True)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None and record.exc_info[0] is KeyError


def test_kinds_never_grow_without_bound() -> None:
    repeats = Repeats(logging.getLogger("test.repeats5"), clock=Clock())
    for i in range(1000):  # a failure whose text carries an id: a new kind each time
        assert repeats.failed("x", ValueError(f"bad id {i}"))
    assert len(repeats._seen) <= 256


def test_swallowed_logs_what_it_suppresses_and_lets_the_rest_through(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.swallowed")
    caplog.set_level(logging.DEBUG, logger="test.swallowed")
    with swallowed(log, "unsubscribe", (ConnectionError,), subject="x"):
        raise ConnectionResetError("gone")
    (record,) = caplog.records
    assert record.getMessage() == "unsubscribe failed" and record.levelno == logging.DEBUG
    assert record.__dict__["subject"] == "x" and record.__dict__["error_type"] == "ConnectionResetError"
    with pytest.raises(KeyError):  # not a kind it was told to expect: a bug, raised
        with swallowed(log, "unsubscribe", (ConnectionError,)):
            raise KeyError("bug")
