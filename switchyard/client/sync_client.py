"""The blocking client: the AsyncClient, run on a private event loop in a daemon thread.

Why this design rather than a second (urllib/requests) transport: the retry,
polling and error logic exists once, in AsyncClient, and every sync method is a
generated one-liner that submits the coroutine to the private loop and waits.
Because the loop lives in its own thread, a Client also works where the calling
thread already runs a loop (Jupyter, an async framework calling sync code) — it
blocks that caller, as any sync call does, but never deadlocks or nests loops.
The cost is one idle thread per Client; keep one Client per process and share it
(it is thread-safe: calls from many threads are multiplexed onto the one loop).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from .async_client import AsyncClient

__all__ = ["Client"]

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]
              ) -> Callable[Concatenate[Client, P], R]:
    """Turn an AsyncClient coroutine method into a blocking Client method (same signature)."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(method(self._async, *args, **kwargs))

    call.__qualname__ = f"Client.{method.__name__}"
    return call


class Client:
    """Blocking client for a Switchyard gateway; same methods as `AsyncClient`.

    Use `with Client(url, key) as sy:` or call `close()`; a forgotten client is
    closed when garbage-collected or at interpreter exit.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60,
                 max_retries: int = 3, retry_backoff: float = 0.25, max_retry_delay: float = 5.0) -> None:
        self._async = AsyncClient(url, api_key, timeout=timeout, max_retries=max_retries,
                                  retry_backoff=retry_backoff, max_retry_delay=max_retry_delay)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="switchyard-client", daemon=True)
        self._thread.start()
        # The finalizer holds no reference to self, so it cannot keep the Client alive.
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread, self._async)

    @property
    def url(self) -> str:
        return self._async.url

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        if not self._finalizer.alive:
            coro.close()
            raise RuntimeError("this Switchyard client is closed")
        if threading.current_thread() is self._thread:
            coro.close()  # waiting on our own loop from inside it would deadlock
            raise RuntimeError("Client methods cannot be called from the client's own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C while waiting: stop the work on the loop too
            raise

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    infer = _blocking(AsyncClient.infer)
    encode = _blocking(AsyncClient.encode)
    score = _blocking(AsyncClient.score)
    generate = _blocking(AsyncClient.generate)
    job = _blocking(AsyncClient.job)
    wait_for_job = _blocking(AsyncClient.wait_for_job)
    list_jobs = _blocking(AsyncClient.list_jobs)
    cancel_job = _blocking(AsyncClient.cancel_job)
    delete_job = _blocking(AsyncClient.delete_job)
    capacity = _blocking(AsyncClient.capacity)
    dead_letters = _blocking(AsyncClient.dead_letters)
    dead_letter = _blocking(AsyncClient.dead_letter)
    requeue_dead_letters = _blocking(AsyncClient.requeue_dead_letters)
    usage = _blocking(AsyncClient.usage)
    plans = _blocking(AsyncClient.plans)
    run_plan = _blocking(AsyncClient.run_plan)  # events(): AsyncClient only (an endless async iterator)
    models = _blocking(AsyncClient.models)
    health = _blocking(AsyncClient.health)
    resolve = _blocking(AsyncClient.resolve)
    # Pools: a lease is renewed by a task on this client's background thread (its event loop),
    # until delete_pool() or close(); no thread is started per pool.
    create_pool = _blocking(AsyncClient.create_pool)
    get_pool = _blocking(AsyncClient.get_pool)
    list_pools = _blocking(AsyncClient.list_pools)
    renew_pool = _blocking(AsyncClient.renew_pool)
    delete_pool = _blocking(AsyncClient.delete_pool)

    def renewing(self) -> list[str]:
        """The pools whose leases this client is renewing."""
        return self._async.renewing()


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: AsyncClient) -> None:
    if loop.is_closed():
        return
    if thread.is_alive() and threading.current_thread() is not thread:
        try:
            asyncio.run_coroutine_threadsafe(_drain(client), loop).result(timeout=5)
        except (FutureTimeout, RuntimeError, OSError):
            pass  # best effort: the process may be exiting
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
    elif thread.is_alive():
        loop.call_soon(loop.stop)  # collected on the loop thread itself: just stop it
        return
    if not thread.is_alive():
        loop.close()


async def _drain(client: AsyncClient) -> None:
    # Cancel calls still in flight (from other threads) so their callers get
    # CancelledError instead of waiting forever on a stopped loop.
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
