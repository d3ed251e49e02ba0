"""Handlers the worker subprocesses in these tests import (module:function)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


def slow_echo(items: list[Any], ctx: Any) -> list[Any]:
    """Sleeps `params.sleep` seconds (default 3), then echoes."""
    time.sleep(float(ctx.params.get("sleep", 3)))
    return items


async def stall_first_attempt(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    """Streams `params.chunks` chunks (default 5); on its first attempt it first touches
    `params.marker` (a file) and hangs before any chunk, for a test to SIGKILL it there."""
    if ctx.attempt == 1:
        Path(ctx.params["marker"]).touch()
        await asyncio.sleep(3600)
    for i in range(int(ctx.params.get("chunks", 5))):
        yield {"i": i, "attempt": ctx.attempt}


async def tick_forever(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    """A chunk every `params.every_s` seconds (default 0.05), for as long as it is let run."""
    i = 0
    while True:
        yield {"i": i}
        i += 1
        await asyncio.sleep(float(ctx.params.get("every_s", 0.05)))
