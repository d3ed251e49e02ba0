"""Turn a handler (sync or async, or a "module:function" string) into one awaitable call."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable, TypeVar

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
    call = getattr(handler, "__call__", None)
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def make_invoker(handler: Handler, executor: Executor) -> Invoker:
    """Async handlers are awaited, inline ones called, other sync ones run in `executor`
    so the event loop keeps heartbeats and in-progress acks flowing."""
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
