"""`"stream": true`: a worker's chunks (streaming.py) as OpenAI's Server-Sent Events.

Each chunk a handler yields becomes one `data:` event in OpenAI's chunk format
(`chat.completion.chunk`, or `text_completion` for /v1/completions); the stream ends with a
`finish_reason` per choice, then `usage` when `stream_options.include_usage` asks for it, then
`data: [DONE]`. A failure after the first event is an `data: {"error": {...}}` event (OpenAI's
SDKs raise it as an APIError) and no [DONE]: the client knows the answer is incomplete.

What a chunk's payload may be (docs/worker.md, "Streaming"):
- chat: a string (a piece of the content), `{"delta": {...}}`, `{"content": "..."}` or `{"text": "..."}`
  (a piece),
  `{"message": {...}}` (a whole choice, what a handler that does not stream returns), each with
  optional "finish_reason", "logprobs" and "index";
- generate: a string, or `{"text": "...", "finish_reason"?, "index"?}`.
A payload's choice is its "index"; without one it is 0 when the request has one item, else the
chunk's position (which is the item's for a handler that does not stream).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from ...errors import ApiError
from ...messages import Result
from ..http import ClientDisconnected
from ..streaming import StreamChunk
from .errors import error_type
from .results import FINISH_REASONS

DONE = b"data: [DONE]\n\n"


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _bad(index: int, what: str) -> ApiError:
    return ApiError("worker_error", f"the worker's stream chunk #{index} is not {what} (see the handler "
                                    "contract in docs/worker.md)")


def _choice(payload: Any, seq: int, items: int) -> int:
    index = payload.get("index") if isinstance(payload, dict) else None
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < items:
        return index
    return 0 if items == 1 else seq


def _finish_reason(payload: Any, seq: int) -> str | None:
    reason = payload.get("finish_reason") if isinstance(payload, dict) else None
    if reason is not None and reason not in FINISH_REASONS:
        raise _bad(seq, f"a known finish_reason ({', '.join(sorted(FINISH_REASONS))})")
    return reason


def chat_delta(payload: Any, seq: int) -> dict[str, Any]:
    if isinstance(payload, str):
        return {"content": payload}
    if isinstance(payload, dict):
        for key in ("delta", "message"):
            if isinstance(payload.get(key), dict):
                return dict(payload[key])
        for key in ("content", "text"):  # "text": what switchyard.worker.handlers:tokens yields
            if isinstance(payload.get(key), str):
                return {"content": payload[key]}
        if "finish_reason" in payload:
            return {}
    raise _bad(seq, 'a string, {"delta": {...}}, {"content": "..."}, {"text": "..."} or {"message": {...}}')


def text_delta(payload: Any, seq: int) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict) and isinstance(payload.get("text", ""), str):
        return payload.get("text", "")  # type: ignore[no-any-return]
    raise _bad(seq, 'a string or {"text": "..."}')


class OpenAiStream:
    """Renders one request's chunks; `chat` picks chat.completion.chunk over text_completion."""

    def __init__(self, *, chat: bool, model: str, request_id: str, items: int, include_usage: bool) -> None:
        self.chat, self.model, self.items, self.include_usage = chat, model, items, include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.created = int(time.time())
        self._started: set[int] = set()  # choices whose role has been sent (chat)
        self._finished: dict[int, str] = {}

    def _frame(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None,
               with_usage_field: bool = False) -> bytes:
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                                "created": self.created, "model": self.model, "system_fingerprint": None,
                                "choices": choices}
        if with_usage_field or self.include_usage:
            body["usage"] = usage  # null on every chunk but the last, as OpenAI sends it
        return _event(body)

    def data(self, payload: Any, seq: int) -> bytes:
        index = _choice(payload, seq, self.items)
        if index >= self.items:
            raise _bad(seq, f"a piece of one of the request's {self.items} choice(s) (give it an \"index\")")
        reason = _finish_reason(payload, seq)
        logprobs = payload.get("logprobs") if isinstance(payload, dict) else None
        if self.chat:
            delta = chat_delta(payload, seq)
            if index not in self._started:
                self._started.add(index)
                delta = {"role": "assistant", **delta}
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text_delta(payload, seq), "logprobs": logprobs, "finish_reason": reason}
        if reason is not None:
            self._finished[index] = reason
        return self._frame([choice])

    def end(self, usage: dict[str, int] | None) -> bytes:
        """finish_reason "stop" for every choice the worker did not finish, usage if asked, [DONE]."""
        out = b""
        for index in range(self.items):
            if index in self._finished:
                continue
            if self.chat:
                delta = {} if index in self._started else {"role": "assistant", "content": ""}
                choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": "stop"}
            else:
                choice = {"index": index, "text": "", "logprobs": None, "finish_reason": "stop"}
            out += self._frame([choice])
        if self.include_usage:
            out += self._frame([], usage=_usage(usage), with_usage_field=True)
        return out + DONE


def _usage(counts: dict[str, int] | None) -> dict[str, int] | None:
    if not counts:
        return None
    p, c = int(counts.get("input_tokens", 0) or 0), int(counts.get("output_tokens", 0) or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def joined(result: Result, n: int, *, chat: bool) -> Result:
    """A streaming handler's answer to a request that did not stream: every piece it yielded, in
    order (worker/process.py), joined into one result per choice by the index rule above.

    Results that are already one per choice (no piece carries an "index") pass as they are.
    Only the text is joined; a piece's other delta fields (tool_calls, ...) need `stream: true`.
    """
    items = result.items or []
    if not result.ok or (len(items) == n and not any(isinstance(p, dict) and "index" in p for p in items)):
        return result
    texts, reasons = [""] * n, ["stop"] * n
    for seq, piece in enumerate(items):
        index = _choice(piece, seq, n)
        if index >= n:
            raise _bad(seq, f"a piece of one of the request's {n} choice(s) (give it an \"index\")")
        text = chat_delta(piece, seq).get("content") if chat else text_delta(piece, seq)
        texts[index] += text if isinstance(text, str) else ""
        reasons[index] = _finish_reason(piece, seq) or reasons[index]
    one = ({"message": {"role": "assistant", "content": t}, "finish_reason": r} if chat
           else {"text": t, "finish_reason": r} for t, r in zip(texts, reasons, strict=True))
    return dataclasses.replace(result, items=list(one))


def error_event(err: ApiError) -> bytes:
    return _event({"error": {"message": err.message, "type": error_type(err.status), "param": None,
                             "code": err.code}})


async def respond(request: web.Request, chunks: AsyncIterator[StreamChunk], render: OpenAiStream,
                  headers: dict[str, str]) -> web.StreamResponse:
    """Send the events as the chunks come. The caller closes the chunk stream (which cancels the
    item on its worker when the client went away before the end)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no", **headers})
    try:
        await resp.prepare(request)
        await _send(resp, chunks, render)
    except ConnectionError:  # the client went away: one log line in the middleware, the item is cancelled
        raise ClientDisconnected() from None
    return resp


async def _send(resp: web.StreamResponse, chunks: AsyncIterator[StreamChunk], render: OpenAiStream) -> None:
    async for chunk in chunks:
        if chunk.error is not None:
            await resp.write(error_event(chunk.error))
            break
        if chunk.final:
            await resp.write(render.end(chunk.usage))
            break
        try:
            event = render.data(chunk.payload, chunk.seq)
        except ApiError as err:  # a payload the mapping cannot read: say so, never skip it
            await resp.write(error_event(err))
            break
        await resp.write(event)
    await resp.write_eof()
