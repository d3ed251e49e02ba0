"""A worker's result items as OpenAI's response objects (the handler contract is in docs/worker.md).

Per item the worker returns:

- chat:     a string (the assistant's content), or {"message": {...}} / {"content": "..."}, optionally
            with "finish_reason" (default "stop") and "logprobs";
- generate: a string (the text), or {"text": "...", "finish_reason"?, "logprobs"?};
- encode:   a list of numbers, or {"embedding": [...]}, or {"dense": [...]} (what minilm returns);
- image:    a base64 string, or {"b64_json": "...", "revised_prompt"?};
- speech:   {"audio_b64": "...", "content_type"?}, or a base64 string.

Token counts come from ctx.usage (Result.usage: input_tokens, output_tokens) and become
`usage` (prompt_tokens, completion_tokens, total_tokens); without them there is no `usage`.
A result the mapping cannot read is the worker's fault: 502 worker_error, never a made-up answer.
"""

from __future__ import annotations

import array
import base64
import binascii
import re
import sys
import time
from typing import Any

from ...errors import ApiError
from ...messages import Result

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _bad(op: str, index: int, what: str) -> ApiError:
    return ApiError("worker_error", f"the worker's {op} result #{index} is not {what} (see the handler contract "
                                    f"in docs/worker.md)")


def _items(result: Result, expected: int, op: str) -> list[Any]:
    items = result.items or []
    if len(items) != expected:
        raise ApiError("worker_error", f"the worker answered {len(items)} {op} result(s) for {expected} item(s)")
    return items


def usage(result: Result, *, embeddings: bool = False) -> dict[str, int] | None:
    counts = result.usage or {}
    prompt, completion = counts.get("input_tokens"), counts.get("output_tokens")
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    p = prompt if isinstance(prompt, int) else 0
    if embeddings:
        return {"prompt_tokens": p, "total_tokens": p}
    c = completion if isinstance(completion, int) else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _finish(item: dict[str, Any], op: str, index: int) -> str:
    reason = item.get("finish_reason", "stop")
    if reason not in FINISH_REASONS:
        raise _bad(op, index, f"a known finish_reason ({', '.join(sorted(FINISH_REASONS))})")
    return reason  # type: ignore[no-any-return]


def chat_message(item: Any, index: int) -> tuple[dict[str, Any], str, Any]:
    """(message, finish_reason, logprobs) of one chat result item."""
    if isinstance(item, str):
        return {"role": "assistant", "content": item}, "stop", None
    if isinstance(item, dict):
        msg = item.get("message")
        if isinstance(msg, dict):
            return {"role": "assistant", **msg}, _finish(item, "chat", index), item.get("logprobs")
        if isinstance(item.get("content"), str):
            return {"role": "assistant", "content": item["content"]}, _finish(item, "chat", index), item.get("logprobs")
    raise _bad("chat", index, 'a string, {"message": {...}} or {"content": "..."}')


def chat_completion(result: Result, n: int, model: str, request_id: str) -> dict[str, Any]:
    choices = []
    for i, item in enumerate(_items(result, n, "chat")):
        message, reason, logprobs = chat_message(item, i)
        choices.append({"index": i, "message": message, "finish_reason": reason, "logprobs": logprobs})
    body = {"id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": choices, "system_fingerprint": None}
    return _with_usage(body, result)


def completion_text(item: Any, index: int) -> tuple[str, str, Any]:
    if isinstance(item, str):
        return item, "stop", None
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"], _finish(item, "generate", index), item.get("logprobs")
    raise _bad("generate", index, 'a string or {"text": "..."}')


def completion(result: Result, n: int, model: str, request_id: str) -> dict[str, Any]:
    choices = []
    for i, item in enumerate(_items(result, n, "generate")):
        text, reason, logprobs = completion_text(item, i)
        choices.append({"index": i, "text": text, "finish_reason": reason, "logprobs": logprobs})
    body = {"id": f"cmpl-{request_id}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": choices, "system_fingerprint": None}
    return _with_usage(body, result)


def _vector(item: Any, index: int) -> list[float]:
    vec = item
    if isinstance(item, dict):
        vec = item.get("embedding", item.get("dense"))
    if isinstance(vec, list) and vec and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec):
        return vec
    raise _bad("encode", index, 'a list of numbers, {"embedding": [...]} or {"dense": [...]}')


def _base64_floats(vec: list[float]) -> str:
    # What OpenAI sends for encoding_format=base64: little-endian float32.
    packed = array.array("f", vec)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def embeddings(result: Result, n: int, model: str, encoding_format: str) -> dict[str, Any]:
    data = []
    for i, item in enumerate(_items(result, n, "encode")):
        vec = _vector(item, i)
        data.append({"object": "embedding", "index": i,
                     "embedding": _base64_floats(vec) if encoding_format == "base64" else vec})
    body: dict[str, Any] = {"object": "list", "data": data, "model": model}
    counts = usage(result, embeddings=True)
    if counts is not None:
        body["usage"] = counts
    return body


def _b64(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def images(result: Result, n: int) -> dict[str, Any]:
    data = []
    for i, item in enumerate(_items(result, n, "image")):
        entry = {"b64_json": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or not _b64(entry.get("b64_json")):
            raise _bad("image", i, 'a base64 string or {"b64_json": "..."}')
        out = {"b64_json": entry["b64_json"]}
        if isinstance(entry.get("revised_prompt"), str):
            out["revised_prompt"] = entry["revised_prompt"]
        data.append(out)
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    counts = usage(result)
    if counts is not None:
        body["usage"] = {"input_tokens": counts["prompt_tokens"], "output_tokens": counts["completion_tokens"],
                         "total_tokens": counts["total_tokens"]}
    return body


_AUDIO_TYPE = re.compile(r"audio/[A-Za-z0-9.+-]{1,64}")  # a worker's content type never reaches a header unchecked
SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
                "wav": "audio/wav", "pcm": "audio/pcm"}


def speech(result: Result, response_format: str) -> tuple[bytes, str]:
    """The audio bytes and their content type."""
    item = _items(result, 1, "speech")[0]
    entry = {"audio_b64": item} if isinstance(item, str) else item
    if not isinstance(entry, dict) or not _b64(entry.get("audio_b64")):
        raise _bad("speech", 0, 'a base64 string or {"audio_b64": "...", "content_type"?}')
    content_type = entry.get("content_type")
    if not isinstance(content_type, str) or not _AUDIO_TYPE.fullmatch(content_type):
        content_type = SPEECH_TYPES[response_format]
    return base64.b64decode(entry["audio_b64"]), content_type


def _with_usage(body: dict[str, Any], result: Result) -> dict[str, Any]:
    counts = usage(result)
    if counts is not None:
        body["usage"] = counts
    return body
