"""Turn a handler (sync or async, or a "module:function" string) into one awaitable call."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from .context import Context
from .errors import PermanentError

Handler = Callable[[list[Any], Context], Any]
Invoker = Callable[[list[Any], Context], Awaitable[list[Any]]]
F = TypeVar("F", bound=Callable[..., Any])

_INLINE = "__switchyard_inline__"


def inline(fn: F) -> F:
    """Mark a sync handler as cheap and non-blocking: run it on the event loop, no thread hop."""
    setattr(fn, _INLINE, True)
    return fn


def load_handler(spec: str) -> Handler:
    """Import "package.module:function" (or "module:Class.attr")."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler must look like 'module:function', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj


def is_async(handler: Callable[..., Any]) -> bool:
    call = type(handler).__call__  # an object's __call__ (what calling it runs); a function's is never async
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def is_generator(handler: Callable[..., Any]) -> bool:
    """A streaming handler: a generator function, sync or async (or an object whose __call__ is one)."""
    call = type(handler).__call__
    return any(inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f) for f in (handler, call))


_END = object()


def _step(gen: Any) -> Any:
    return next(gen, _END)


class StreamingInvoker:
    """A generator handler. Called like any invoker, it returns every chunk as one list (a request
    that does not stream, a job); `chunks()` yields them one by one as the handler makes them.

    `interruptible`: an async generator can be stopped at any await (a cancel lands at once);
    a sync one only between chunks, since its next() runs in a thread that cannot be interrupted.
    """

    def __init__(self, handler: Handler, executor: Executor) -> None:
        self._handler = handler
        self._executor = executor
        call = type(handler).__call__
        self.interruptible = inspect.isasyncgenfunction(handler) or inspect.isasyncgenfunction(call)
        self._inline = bool(getattr(handler, _INLINE, False))

    async def __call__(self, items: list[Any], ctx: Context) -> list[Any]:
        gen = self.chunks(items, ctx)
        try:
            return [chunk async for chunk in gen]
        finally:
            await gen.aclose()

    async def chunks(self, items: list[Any], ctx: Context) -> AsyncGenerator[Any, None]:
        """Closing this iterator closes the handler's generator, so its `finally` runs."""
        if self.interruptible:
            agen = self._handler(items, ctx)
            try:
                async for chunk in agen:
                    yield chunk
            finally:
                await agen.aclose()
            return
        loop = asyncio.get_running_loop()
        gen = self._handler(items, ctx)
        try:
            while True:
                chunk = _step(gen) if self._inline else await loop.run_in_executor(self._executor, _step, gen)
                if chunk is _END:
                    return
                yield chunk
        finally:
            if self._inline:
                gen.close()
            else:
                await loop.run_in_executor(self._executor, gen.close)


def make_invoker(handler: Handler, executor: Executor) -> Invoker:
    """Async handlers are awaited, inline ones called, other sync ones run in `executor`
    so the event loop keeps heartbeats and in-progress acks flowing. Generator handlers
    (sync or async) stream: see StreamingInvoker."""
    if is_generator(handler):
        return StreamingInvoker(handler, executor)
    if is_async(handler):
        async def call(items: list[Any], ctx: Context) -> list[Any]:
            return _check(await handler(items, ctx))
    elif getattr(handler, _INLINE, False):
        async def call(items: list[Any], ctx: Context) -> list[Any]:
            return _check(handler(items, ctx))
    else:
        async def call(items: list[Any], ctx: Context) -> list[Any]:
            loop = asyncio.get_running_loop()
            return _check(await loop.run_in_executor(executor, handler, items, ctx))
    return call


def _check(out: Any) -> list[Any]:
    if isinstance(out, list):
        return out
    if isinstance(out, tuple):
        return list(out)
    # A broken handler fails the same way on every attempt: no point retrying.
    raise PermanentError(f"handler returned {type(out).__name__}, expected a list", code="worker_error")
