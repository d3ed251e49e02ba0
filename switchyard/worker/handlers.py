"""Built-in handlers: for demos, benchmarks and tests."""

from __future__ import annotations

import asyncio
from typing import Any

from .context import Context
from .loader import inline


@inline  # no thread hop: the benchmark measures the gateway, not an executor
def echo(items: list[Any], ctx: Context) -> list[Any]:
    return items


async def sleep(items: list[Any], ctx: Context) -> list[Any]:
    """Echo after `params["sleep_s"]` seconds (default 1): a stand-in for slow inference."""
    await asyncio.sleep(float(ctx.params.get("sleep_s", 1.0)))
    return items
