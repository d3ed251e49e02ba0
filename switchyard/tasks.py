"""Background tasks: started together, run again after a failure, and stopped for sure.

On Python 3.11 `asyncio.wait_for` swallows a cancellation that arrives as its inner
future completes (gh-86296, fixed in 3.12), and nats-py awaits every request that way.
A background loop cancelled at that moment carries on, and `await task` waits for
ever: a gateway that never stops. So cancel again until the tasks have ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, NoReturn

from .errors import ApiError
from .logs import Repeats

log = logging.getLogger("switchyard.tasks")


async def cancel_all(tasks: Iterable[asyncio.Future[Any]], *, every_s: float = 0.5, rounds: int = 20) -> None:
    """Cancel `tasks` and wait for them, cancelling again each `every_s` while any still runs."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    for task in pending:
        log.warning("a task would not stop", extra={"task": repr(task)})
    for task in tasks:  # retrieve outcomes, so none is reported as never retrieved
        if task.done() and not task.cancelled():
            task.exception()


async def forever(step: Callable[[], Awaitable[Any]], *, pause_s: float, what: str, logger: logging.Logger,
                  pause_first: bool = False) -> NoReturn:
    """Run `step` again and again: a watch that ends when NATS goes away, or a periodic pass.

    The step runs again after `pause_s` (before each run instead, with `pause_first`) whatever it
    raised: only a cancel ends it. A failure is logged through logs.Repeats, once a minute while
    it repeats; one of an unexpected kind (not NATS or the network: a bug) with its traceback."""
    failures = Repeats(logger)
    while True:
        if pause_first:
            await asyncio.sleep(pause_s)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a task's top level: it must outlive a bug, logged below
            failures.failed(what, exc, exc_info=not expected(exc))
        else:
            failures.recovered(what)
        if not pause_first:
            await asyncio.sleep(pause_s)


def expected(exc: BaseException) -> bool:
    """A failure of NATS or the network (or the 503 a gateway answers for it), which a loop retries
    without a traceback. nats-py's errors are told by their module: this module imports no client
    library (the operator runs without nats-py)."""
    if isinstance(exc, ApiError):
        return exc.status == 503
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.split(".")[0] == "nats"


class Background:
    """The long-lived tasks of one component: each started with `start()`, all stopped by `stop()`.

    None of them is meant to end by itself; `until_one_ends()` tells the component when one did
    (a failure it cannot run without) or when it was asked to stop."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def start(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self.tasks.append(task)
        return task

    async def until_one_ends(self, stopping: asyncio.Event) -> list[asyncio.Task[Any]]:
        """Wait for `stopping`, or for a task to end; the tasks that ended (none: told to stop)."""
        waiter = asyncio.ensure_future(stopping.wait())
        try:
            done, _ = await asyncio.wait([waiter, *self.tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        return [t for t in done if t is not waiter]

    async def stop(self) -> None:
        await cancel_all(self.tasks)


async def together(*steps: Coroutine[Any, Any, Any]) -> None:
    """Run loops that belong together (a config source's watches) until one ends, which none is meant
    to: then stop the others for sure and raise what ended it. Cancelled, it stops them all
    (asyncio.gather leaves the others running after a failure, past the gateway's stop)."""
    tasks = Background()
    for step in steps:
        tasks.start(step)
    try:
        for task in await tasks.until_one_ends(asyncio.Event()):
            task.result()  # its exception, if it failed
    finally:
        await tasks.stop()
