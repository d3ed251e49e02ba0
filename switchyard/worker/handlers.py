"""Built-in handlers: for demos, benchmarks and tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
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


async def tokens(items: list[Any], ctx: Context) -> AsyncIterator[Any]:
    """A streaming handler that needs no model: each item's text back one word at a time.

    The text is an item's "text", "prompt" or last chat message's "content" (or the item, when a
    string). Each chunk is `{"index": i, "text": word}` (a space before every word but the first).
    `params["delay_s"]` (default 0) waits between words, a stand-in for decoding;
    `params["words"]` caps the words per item. Token counts go to ctx.usage.
    """
    delay = float(ctx.params.get("delay_s", 0.0))
    cap = ctx.params.get("words")
    produced = consumed = 0
    for index, item in enumerate(items):
        words = _text(item).split()
        consumed += len(words)
        for n, word in enumerate(words[: int(cap)] if cap is not None else words):
            if delay:
                await asyncio.sleep(delay)
            produced += 1
            yield {"index": index, "text": word if n == 0 else " " + word}
    ctx.usage = {"input_tokens": consumed, "output_tokens": produced}


def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return ""
    for key in ("text", "prompt"):
        if isinstance(item.get(key), str):
            return item[key]
    messages = item.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        content = messages[-1].get("content")
        return content if isinstance(content, str) else ""
    return ""
