"""An adapter handler: forward work to an OpenAI-compatible engine beside the worker, streaming.

Real GPU workers run an inference engine (vLLM, SGLang, llama.cpp server, TGI) in the same pod
and let the Switchyard worker pull from the queue and forward to it over localhost:

    python -m switchyard.worker --model meta-llama/Llama-3.1-8B-Instruct \
        --handler switchyard.worker.engine:openai_engine

Configured by the environment: SWITCHYARD_ENGINE_URL (the engine's OpenAI base URL, e.g.
http://127.0.0.1:8000/v1; required), SWITCHYARD_ENGINE_MODEL (the model name the engine knows;
default: the item's model) and SWITCHYARD_ENGINE_API_KEY (sent as a Bearer token when set).

- `chat`: each item (`{"messages": [...]}`) is one streamed /chat/completions call; chunks are
  `{"index", "delta", "finish_reason"?}`;
- `generate`: each item (`{"prompt": ...}`) is one streamed /completions call; chunks are
  `{"index", "text", "finish_reason"?}`;
- `encode`: one /embeddings call for all items; one chunk `{"index", "embedding"}` per item.

These are the shapes the OpenAI-compatible API reads (docs/worker.md). The sampling parameters
in ctx.params that OpenAI defines are passed on; token counts go to ctx.usage. An engine's 4xx
is the caller's fault (`invalid_input`, not retried); a 5xx or an engine not answering is
retried (TransientError) while no chunk was sent.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from .context import Context
from .errors import PermanentError, TransientError

# OpenAI request fields a caller may set through params; anything else is not forwarded.
PASSED = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
          "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "response_format", "tools",
          "tool_choice", "dimensions", "encoding_format")
MAX_ERROR_TEXT = 300


class OpenAIEngine:
    def __init__(self, url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout_s: float = 600.0) -> None:
        self._url, self._model, self._key, self._timeout = url, model, api_key, timeout_s

    async def __call__(self, items: list[Any], ctx: Context) -> AsyncIterator[Any]:
        url = (self._url or os.environ.get("SWITCHYARD_ENGINE_URL") or "").rstrip("/")
        if not url:
            raise PermanentError("SWITCHYARD_ENGINE_URL is not set: the worker has no engine to forward to",
                                 code="worker_error")
        model = self._model or os.environ.get("SWITCHYARD_ENGINE_MODEL") or ctx.model
        key = self._key or os.environ.get("SWITCHYARD_ENGINE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        params = {k: v for k, v in ctx.params.items() if k in PASSED}
        usage = {"input_tokens": 0, "output_tokens": 0}
        timeout = aiohttp.ClientTimeout(total=self._timeout, sock_connect=10)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            if ctx.op == "encode":
                inputs = [_text(it, "text") for it in items]
                body = await _post(http, f"{url}/embeddings", {"model": model, "input": inputs, **params})
                for row in sorted(body.get("data", []), key=lambda r: r.get("index", 0)):
                    yield {"index": row.get("index", 0), "embedding": row.get("embedding")}
                _count(usage, body.get("usage"))
            elif ctx.op in ("chat", "generate"):
                chat = ctx.op == "chat"
                for index, item in enumerate(items):
                    request: dict[str, Any] = {"model": model, "stream": True,
                                               "stream_options": {"include_usage": True}, **params}
                    if chat:
                        request["messages"] = item.get("messages") if isinstance(item, dict) else None
                    else:
                        request["prompt"] = _text(item, "prompt")
                    async for event in _stream(http, f"{url}/{'chat/completions' if chat else 'completions'}",
                                               request):
                        _count(usage, event.get("usage"))
                        for choice in event.get("choices") or []:
                            out: dict[str, Any] = {"index": index}
                            if chat:
                                out["delta"] = choice.get("delta") or {}
                            else:
                                out["text"] = choice.get("text") or ""
                            if choice.get("finish_reason"):
                                out["finish_reason"] = choice["finish_reason"]
                            if out.get("delta") or out.get("text") or "finish_reason" in out:
                                yield out
            else:
                raise PermanentError(f"the engine adapter serves chat, generate and encode, not {ctx.op!r}")
        ctx.usage = usage


def _text(item: Any, key: str) -> Any:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and key in item:
        return item[key]
    raise PermanentError(f"each item must be a string or carry {key!r}")


def _count(usage: dict[str, int], reported: Any) -> None:
    if isinstance(reported, dict):
        usage["input_tokens"] += int(reported.get("prompt_tokens") or 0)
        usage["output_tokens"] += int(reported.get("completion_tokens") or 0)


async def _failed(resp: aiohttp.ClientResponse) -> Exception:
    text = (await resp.text())[:MAX_ERROR_TEXT]
    if 400 <= resp.status < 500 and resp.status not in (408, 429):
        return PermanentError(f"the engine refused the request ({resp.status}): {text}")
    return TransientError(f"the engine answered {resp.status}: {text}")


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async with http.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                raise await _failed(resp)
            answer: dict[str, Any] = orjson.loads(await resp.read())
            return answer
    except aiohttp.ClientError as exc:
        raise TransientError(f"the engine does not answer: {exc}") from exc


async def _stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The engine's Server-Sent Events, one JSON object each, until `data: [DONE]`."""
    try:
        async with http.post(url, data=orjson.dumps(body),
                             headers={"Content-Type": "application/json", "Accept": "text/event-stream"}) as resp:
            if resp.status != 200:
                raise await _failed(resp)
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = orjson.loads(data)
                if isinstance(event, dict) and "error" in event:
                    raise TransientError(f"the engine failed mid-stream: {str(event['error'])[:MAX_ERROR_TEXT]}")
                if isinstance(event, dict):
                    yield event
    except aiohttp.ClientError as exc:
        raise TransientError(f"the engine does not answer: {exc}") from exc


# The handler as `--handler switchyard.worker.engine:openai_engine`: configured by the environment.
openai_engine = OpenAIEngine()
