from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from switchyard.worker import Context, PermanentError, inline, load_handler
from switchyard.worker.handlers import echo, sleep
from switchyard.worker.loader import is_async, make_invoker


def ctx(**kw: Any) -> Context:
    return Context(op="encode", model="m", bundle="b", machine_profile="cpu", pool="p", request_id="r1", **kw)


def test_load_handler() -> None:
    assert load_handler("switchyard.worker.handlers:echo") is echo
    assert load_handler("switchyard.worker.handlers:sleep") is sleep


@pytest.mark.parametrize("spec, err", [
    ("switchyard.worker.handlers.echo", ValueError),
    (":echo", ValueError),
    ("switchyard.worker.handlers:", ValueError),
    ("switchyard.worker.handlers:nope", AttributeError),
    ("no_such_module_xyz:fn", ImportError),
    ("switchyard.worker.handlers:__doc__", TypeError),
])
def test_load_handler_errors(spec: str, err: type) -> None:
    with pytest.raises(err):
        load_handler(spec)


def test_context_last_attempt() -> None:
    assert not ctx(attempt=2, max_attempts=3).last_attempt
    assert ctx(attempt=3, max_attempts=3).last_attempt


async def test_sync_handler_runs_in_executor() -> None:
    seen: list[threading.Thread] = []

    def handler(items: list[Any], c: Context) -> list[Any]:
        seen.append(threading.current_thread())
        return [i * 2 for i in items]

    with ThreadPoolExecutor(1, thread_name_prefix="t-exec") as ex:
        assert await make_invoker(handler, ex)([1, 2], ctx()) == [2, 4]
    assert seen[0].name.startswith("t-exec")


async def test_inline_and_async_handlers_run_on_the_loop() -> None:
    seen: list[threading.Thread] = []

    @inline
    def fast(items: list[Any], c: Context) -> tuple[Any, ...]:
        seen.append(threading.current_thread())
        return tuple(items)

    class Model:
        async def __call__(self, items: list[Any], c: Context) -> list[Any]:
            seen.append(threading.current_thread())
            await asyncio.sleep(0)
            return items[::-1]

    with ThreadPoolExecutor(1) as ex:
        assert await make_invoker(fast, ex)([1, 2], ctx()) == [1, 2]  # a tuple becomes a list
        assert await make_invoker(Model(), ex)([1, 2], ctx()) == [2, 1]
        assert await make_invoker(echo, ex)(["x"], ctx()) == ["x"]
    assert seen == [threading.main_thread()] * 2
    assert is_async(Model()) and is_async(sleep) and not is_async(echo)


async def test_non_list_output_is_a_permanent_worker_error() -> None:
    with ThreadPoolExecutor(1) as ex:
        with pytest.raises(PermanentError) as err:
            await make_invoker(lambda items, c: {"a": 1}, ex)([], ctx())
    assert err.value.code == "worker_error"


async def test_sleep_handler_uses_params() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await sleep(["a"], ctx(params={"sleep_s": 0.05})) == ["a"]
    assert loop.time() - t0 >= 0.04


class GenObject:
    """A handler object whose __call__ is a generator: it streams too."""

    def __call__(self, items: list[Any], ctx: Context) -> Any:
        yield from items


def test_generator_handlers_stream_and_join() -> None:
    from switchyard.worker.handlers import tokens
    from switchyard.worker.loader import StreamingInvoker

    def sgen(items: list[Any], c: Context) -> Any:
        for i in items:
            yield i * 2

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            for handler, interruptible in ((sgen, False), (GenObject(), False), (tokens, True)):
                inv = make_invoker(handler, pool)
                assert isinstance(inv, StreamingInvoker) and inv.interruptible is interruptible
            assert await make_invoker(sgen, pool)([1, 2], ctx()) == [2, 4]  # not streamed: every chunk, joined
            c = ctx()
            chunks = make_invoker(tokens, pool).chunks([{"text": "a b"}], c)
            assert [x async for x in chunks] == [{"index": 0, "text": "a"}, {"index": 0, "text": " b"}]
            assert c.usage == {"input_tokens": 2, "output_tokens": 2}
            assert not isinstance(make_invoker(echo, pool), StreamingInvoker)

    asyncio.run(main())


def test_closing_the_stream_runs_the_generators_finally() -> None:
    closed: list[str] = []

    def sgen(items: list[Any], c: Context) -> Any:
        try:
            while True:
                yield 1
        finally:
            closed.append("sync")

    async def agen(items: list[Any], c: Context) -> Any:
        try:
            while True:
                yield 1
                await asyncio.sleep(0)
        finally:
            closed.append("async")

    async def main() -> None:
        with ThreadPoolExecutor(2) as pool:
            for h in (sgen, agen):
                it = make_invoker(h, pool).chunks([], ctx())
                assert await it.__anext__() == 1
                await it.aclose()

    asyncio.run(main())
    assert closed == ["sync", "async"]
