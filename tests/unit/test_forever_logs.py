"""tasks.forever: a loop that outlives any failure of its step, and says so without flooding."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import pytest

from switchyard.errors import ApiError
from switchyard.tasks import expected, forever

log = logging.getLogger("test.forever")


async def _run(step_errors: list[BaseException], caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Run forever() until the step has failed with each of `step_errors` in turn, then once more fine."""
    left = list(step_errors)
    done = asyncio.Event()

    async def step() -> None:
        if left:
            raise left.pop(0)
        done.set()

    caplog.set_level(logging.DEBUG, logger="test.forever")
    task = asyncio.create_task(forever(step, pause_s=0, what="a watch", logger=log))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not left
    return [r for r in caplog.records if r.name == "test.forever"]


async def test_a_repeating_outage_is_one_warning_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    lines = await _run([nats.errors.ConnectionClosedError()] * 20, caplog)
    assert len(lines) == 1
    (line,) = lines
    assert line.getMessage() == "a watch failed" and line.levelno == logging.WARNING and line.exc_info is None
    assert line.__dict__["error_type"] == "ConnectionClosedError"


async def test_a_bug_is_logged_with_its_traceback_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    lines = await _run([KeyError("oops"), KeyError("oops")], caplog)
    assert len(lines) == 1 and lines[0].exc_info is not None and lines[0].exc_info[0] is KeyError


def test_what_counts_as_expected() -> None:
    assert expected(nats.errors.TimeoutError()) and expected(nats.errors.NoRespondersError())
    assert expected(ConnectionResetError()) and expected(TimeoutError())
    assert expected(ApiError("queue_unavailable", "NATS is not reachable"))
    assert not expected(ApiError("bad_request", "x")) and not expected(KeyError("x"))
    assert not expected(AttributeError("x"))
