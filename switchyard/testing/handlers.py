"""Handlers for tests that need a worker to hold an item until the test says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ..worker.context import Context


async def latch(items: list[Any], ctx: Context) -> list[Any]:
    """Echo once the file `params["until"]` exists (at most `params["max_s"]`, default 120 s),
    or, without `until`, after `params["sleep_s"]` (default 0).

    A held item keeps its lane's demand above zero, so KEDA keeps the fleet up for exactly as long
    as a test needs it: no cooldown to race, however slow the machine."""
    until = ctx.params.get("until")
    if not until:
        await asyncio.sleep(float(ctx.params.get("sleep_s", 0.0)))
        return items
    deadline = time.monotonic() + float(ctx.params.get("max_s", 120.0))
    while not Path(until).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return items
