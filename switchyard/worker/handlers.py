"""Built-in handlers: for demos, benchmarks and tests."""

from __future__ import annotations

import asyncio
from typing import Any

from .context import Context
from .loader import inline


@inline  # no thread hop: the benchmark measures the gateway, not an executor
def echo(items: list[Any], ctx: Context) -> list[Any]:
    """Each item back as it came, except in the shapes the OpenAI API sends (docs/worker.md):
    a chat item's last message comes back as the assistant's, a generate item's prompt as its text."""
    if ctx.op == "chat":
        return [_reply(it) for it in items]
    if ctx.op == "generate":
        return [{"text": it["prompt"]} if isinstance(it, dict) and isinstance(it.get("prompt"), str) else it
                for it in items]
    return items


def _reply(item: Any) -> Any:
    messages = item.get("messages") if isinstance(item, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return item
    content = messages[-1].get("content")
    return {"message": {"role": "assistant", "content": content if isinstance(content, str) else ""}}


async def sleep(items: list[Any], ctx: Context) -> list[Any]:
    """Echo after `params["sleep_s"]` seconds (default 1): a stand-in for slow inference."""
    await asyncio.sleep(float(ctx.params.get("sleep_s", 1.0)))
    return items
