"""How every entry point runs: the event loop (uvloop or asyncio), stop signals, backoff.

Standard library only (uvloop is imported when asked for), so the gateway, operator, worker
and `switchyard dev` share one copy of each instead of a stanza apiece.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from . import earlystop

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(main: Callable[[], Coroutine[Any, Any, T]], *, uvloop: bool = True) -> T:
    """Run `main()` to the end on a fresh loop: uvloop's when it is installed and wanted, else asyncio's.

    uvloop is imported before `main()` is called, so an ImportError raised by the app itself is that
    error, not a retry on asyncio of a coroutine uvloop already awaited ("cannot reuse already awaited
    coroutine"), and the coroutine is made only once the loop is there to run it.
    """
    with asyncio.Runner(loop_factory=_uvloop_factory() if uvloop else None) as runner:
        return runner.run(main())


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # an optional extra: asyncio's loop does the same, a little slower
        return None
    return uvloop.new_event_loop


class StopSignals:
    """SIGTERM and SIGINT while the block runs: the first sets `stopping`, a repeat calls `on_repeat`.

        with StopSignals() as signals:
            await signals.stopping.wait()

    A SIGTERM noted by earlystop before the loop could handle signals (a pod stopped while it was
    still importing) counts as the first. Leaving the block gives the signals their default action.
    """

    def __init__(self, on_repeat: Callable[[], None] | None = None) -> None:
        self.stopping = asyncio.Event()
        self._on_repeat = on_repeat
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> StopSignals:
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self._received)
        if earlystop.requested():
            self.stopping.set()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for sig in STOP_SIGNALS:
                self._loop.remove_signal_handler(sig)

    def _received(self) -> None:
        if self.stopping.is_set() and self._on_repeat is not None:
            self._on_repeat()
        self.stopping.set()


class Backoff:
    """Pauses that grow by `factor` from `first` up to `cap`, for a step retried after failures.

    `next()` is the pause after one more failure, `reset()` starts over after a success, and
    `delay(n)` is the pause after the n-th failure for callers that count their own attempts.
    """

    def __init__(self, first: float, cap: float, factor: float = 2.0) -> None:
        if first <= 0 or cap < first or factor < 1:
            raise ValueError(f"Backoff needs 0 < first <= cap and factor >= 1 (got {first}, {cap}, {factor})")
        self.first, self.cap, self.factor = first, cap, factor
        self.failures = 0

    def delay(self, failures: int) -> float:
        # The exponent is bounded: a float power past ~1024 raises OverflowError, and cap wins long before.
        return min(self.cap, self.first * self.factor ** min(max(0, failures - 1), 64))

    def next(self) -> float:
        self.failures += 1
        return self.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())

    def __iter__(self) -> Iterator[float]:
        while True:
            yield self.next()
