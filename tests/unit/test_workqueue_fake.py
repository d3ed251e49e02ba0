"""The operator's namespace work queue with a reconcile the test controls (no API server): a burst is
one pass, a change during a pass is exactly one more, one pass per namespace at a time, first come first
served, nothing while not the leader, a requeue when a pool lease is due, and retries with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from switchyard.operator import workqueue
from switchyard.operator.reconcile import Outcome
from switchyard.operator.workqueue import NamespaceQueue
from switchyard.runtime import Backoff

WAIT_S = 30.0  # a bounded wait for the queue's tasks on a busy machine; never a timing claim


class Passes:
    """A reconcile that records its passes; `hold` keeps a namespace's pass running until released."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.running: set[str] = set()
        self.overlapped = False
        self.hold: dict[str, asyncio.Event] = {}
        self.fail: dict[str, int] = {}  # namespace -> passes that still fail
        self.requeue: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def __call__(self, ns: str) -> Outcome:
        if ns in self.running:
            self.overlapped = True
        self.running.add(ns)
        try:
            self.order.append(ns)
            self.changed.set()
            if ns in self.hold:
                await self.hold[ns].wait()
            if self.fail.get(ns, 0) > 0:
                self.fail[ns] -= 1
                raise RuntimeError(f"{ns}: the API server said no")
            return Outcome(requeue_after=self.requeue.pop(ns, None))
        finally:
            self.running.discard(ns)

    async def until(self, done: Callable[[], bool]) -> None:
        async def wait() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), WAIT_S)


@pytest.fixture
def passes() -> Passes:
    return Passes()


@pytest.fixture
async def started(passes: Passes) -> AsyncIterator[Callable[..., Awaitable[NamespaceQueue]]]:
    tasks: list[asyncio.Task[None]] = []

    async def start(workers: int = 2, active: Callable[[], bool] = lambda: True) -> NamespaceQueue:
        q = NamespaceQueue(passes, active=active, debounce_s=0.0, resync_s=3600.0, workers=workers)
        tasks.append(asyncio.create_task(q.run()))
        return q

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_burst_is_one_pass(passes: Passes, started: Callable[..., Awaitable[NamespaceQueue]]) -> None:
    q = await started()
    for _ in range(50):
        q.enqueue("a")
    q.enqueue("b")
    await passes.until(lambda: {"a", "b"} <= set(passes.order))
    await asyncio.sleep(0)  # let any duplicate get a worker, were there one
    assert sorted(passes.order) == ["a", "b"]


async def test_first_come_first_served(passes: Passes, started: Callable[..., Awaitable[NamespaceQueue]]) -> None:
    q = await started(workers=1)
    for ns in ("c", "a", "d", "b", "a"):
        q.enqueue(ns)
    await passes.until(lambda: len(passes.order) == 4)
    assert passes.order == ["c", "a", "d", "b"]


async def test_a_change_during_a_pass_is_exactly_one_more_pass_never_a_concurrent_one(
        passes: Passes, started: Callable[..., Awaitable[NamespaceQueue]]) -> None:
    q = await started(workers=2)  # two workers: the second must not take "a" while the first runs it
    passes.hold["a"] = asyncio.Event()
    q.enqueue("a")
    await passes.until(lambda: passes.order == ["a"])
    for _ in range(10):
        q.enqueue("a")  # changes seen while the pass runs
    q.enqueue("b")
    await passes.until(lambda: "b" in passes.order)  # the other worker is free for other namespaces
    passes.hold["a"].set()
    await passes.until(lambda: passes.order.count("a") == 2)
    await asyncio.sleep(0)
    assert passes.order.count("a") == 2 and not passes.overlapped


async def test_nothing_runs_while_not_the_leader(passes: Passes,
                                                 started: Callable[..., Awaitable[NamespaceQueue]]) -> None:
    leader = False
    q = await started(active=lambda: leader)
    q.enqueue("a")
    for _ in range(20):
        await asyncio.sleep(0)
    assert passes.order == [] and q.known == {"a"}
    leader = True
    q.enqueue_all()  # what the operator does once elected
    await passes.until(lambda: passes.order == ["a"])


async def test_a_pass_asks_to_run_again(passes: Passes, started: Callable[..., Awaitable[NamespaceQueue]]) -> None:
    q = await started()
    passes.requeue["a"] = 0.0  # e.g. a write budget spent, or a pool lease due: again after 0 + 0.5 s
    q.enqueue("a")
    await passes.until(lambda: passes.order == ["a", "a"])


async def test_a_failing_pass_is_retried_with_backoff_then_forgiven(
        passes: Passes, started: Callable[..., Awaitable[NamespaceQueue]], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(workqueue, "RETRY", Backoff(0.001, 0.004))
    caplog.set_level(logging.WARNING, logger="switchyard.operator.queue")
    q = await started()
    passes.fail["a"] = 4
    q.enqueue("a")
    await passes.until(lambda: passes.order.count("a") == 5)
    retries = [r.__dict__ for r in caplog.records if r.getMessage() == "reconcile failed; retrying"]
    assert [(r["attempt"], r["retry_in_s"]) for r in retries] == [(1, 0.001), (2, 0.002), (3, 0.004), (4, 0.004)]
    assert all("the API server said no" in r["error"] and r["namespace"] == "a" for r in retries)

    passes.fail["a"] = 1  # a success forgot the earlier failures: the next one starts from the first pause
    q.enqueue("a")
    await passes.until(lambda: passes.order.count("a") == 7)
    last = [r.__dict__ for r in caplog.records if r.getMessage() == "reconcile failed; retrying"][-1]
    assert (last["attempt"], last["retry_in_s"]) == (1, 0.001)
