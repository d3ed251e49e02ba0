"""cancel_all: background loops stop even when a cancellation is swallowed."""

from __future__ import annotations

import asyncio

import pytest

from switchyard.tasks import Background, cancel_all, together


async def test_a_loop_that_swallowed_its_first_cancellation_still_stops() -> None:
    # What asyncio.wait_for does on Python 3.11 when the cancel lands as its future completes
    # (gh-86296): the loop goes on. A single cancel() plus `await task` then waits for ever.
    swallowed = 0

    async def loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_all([task], every_s=0.05), 5)
    assert task.cancelled() and swallowed == 1


async def test_finished_and_failed_tasks_are_fine() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fail())
    await asyncio.sleep(0.01)
    await cancel_all([done, failed])
    assert done.done() and failed.done()


async def test_background_reports_the_task_that_ended_and_stops_the_rest() -> None:
    async def fail() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("lost the API server")

    tasks = Background()
    forever = tasks.start(asyncio.sleep(3600), name="forever")
    failing = tasks.start(fail(), name="failing")
    ended = await asyncio.wait_for(tasks.until_one_ends(asyncio.Event()), 30)
    assert ended == [failing] and isinstance(failing.exception(), RuntimeError)
    await asyncio.wait_for(tasks.stop(), 30)
    assert forever.cancelled()


async def test_background_returns_nothing_ended_when_told_to_stop() -> None:
    tasks = Background()
    forever = tasks.start(asyncio.sleep(3600))
    stopping = asyncio.Event()
    stopping.set()
    assert await asyncio.wait_for(tasks.until_one_ends(stopping), 30) == []
    assert not forever.done()
    await tasks.stop()
    assert forever.cancelled()


async def test_together_stops_the_rest_when_one_fails_and_raises_its_error() -> None:
    started: list[str] = []
    stopped: list[str] = []

    async def loop(name: str) -> None:
        started.append(name)
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append(name)

    async def fail() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("the pools bucket is gone")

    with pytest.raises(RuntimeError, match="pools bucket"):
        await asyncio.wait_for(together(loop("watch"), loop("informer"), fail()), 30)
    assert sorted(stopped) == sorted(started) == ["informer", "watch"]  # none left running


async def test_together_cancelled_stops_every_loop() -> None:
    stopped: list[str] = []

    async def loop(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append(name)

    task = asyncio.create_task(together(loop("a"), loop("b")))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(cancel_all([task]), 30)
    assert task.cancelled() and sorted(stopped) == ["a", "b"]
