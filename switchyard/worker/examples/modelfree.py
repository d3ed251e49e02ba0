"""A handler for every OpenAI-mapped operation that needs no model: for demos and tests.

    python -m switchyard.worker --model demo/toy --handler switchyard.worker.examples.modelfree:serve

It follows the handler contract of docs/worker.md ("Operations and their results"):

- chat:     echoes the last user message, cut to `max_tokens` words (finish_reason "length");
- generate: echoes the prompt, cut the same way;
- encode:   a unit vector of `dimensions` (default 8) numbers derived from the text's SHA-256;
- image:    a PNG of one colour (from the prompt) of `size` ("WxH", default 8x8, at most 256x256);
- speech:   a 440 Hz tone, 50 ms per character of input (at most 2 s), as WAV or raw PCM.

Token counts are words, reported in ctx.usage.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import struct
import wave
import zlib
from typing import Any

from ..context import Context
from ..errors import PermanentError

SAMPLE_RATE = 16_000
MAX_SIDE = 256


def serve(items: list[Any], ctx: Context) -> list[Any]:
    handler = _OPS.get(ctx.op)
    if handler is None:
        raise PermanentError(f"the model-free handler has no {ctx.op!r} operation", code="invalid_input")
    return handler(items, ctx)


def _words(text: str) -> list[str]:
    return text.split()


def _cut(words: list[str], ctx: Context) -> tuple[str, str]:
    limit = ctx.params.get("max_tokens") or ctx.params.get("max_completion_tokens")
    if isinstance(limit, int) and len(words) > limit:
        return " ".join(words[:limit]), "length"
    return " ".join(words), "stop"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def chat(items: list[Any], ctx: Context) -> list[Any]:
    out, read, written = [], 0, 0
    for item in items:
        messages = item.get("messages", []) if isinstance(item, dict) else []
        read += sum(len(_words(_text_of(m.get("content")))) for m in messages if isinstance(m, dict))
        last = next((_text_of(m.get("content")) for m in reversed(messages)
                     if isinstance(m, dict) and m.get("role") == "user"), "")
        text, reason = _cut(_words(last), ctx)
        written += len(_words(text))
        out.append({"message": {"role": "assistant", "content": text}, "finish_reason": reason})
    ctx.usage.update(input_tokens=read, output_tokens=written)
    return out


def generate(items: list[Any], ctx: Context) -> list[Any]:
    out, read, written = [], 0, 0
    for item in items:
        prompt = item.get("prompt") if isinstance(item, dict) else item
        words = [str(t) for t in prompt] if isinstance(prompt, list) else _words(str(prompt or ""))
        read += len(words)
        text, reason = _cut(words, ctx)
        written += len(_words(text))
        out.append({"text": text, "finish_reason": reason})
    ctx.usage.update(input_tokens=read, output_tokens=written)
    return out


def encode(items: list[Any], ctx: Context) -> list[Any]:
    dims = ctx.params.get("dimensions", 8)
    if not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise PermanentError("dimensions must be 1 to 4096", code="invalid_input")
    out, read = [], 0
    for item in items:
        text = item.get("text") if isinstance(item, dict) else item
        if text is None and isinstance(item, dict):
            text = " ".join(str(t) for t in item.get("tokens", []))
        text = str(text)
        read += len(_words(text))
        seed = hashlib.sha256(text.encode()).digest()
        raw = [(seed[i % 32] - 127.5) + i % 7 for i in range(dims)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        out.append({"embedding": [x / norm for x in raw]})
    ctx.usage.update(input_tokens=read)
    return out


def _png(width: int, height: int, rgb: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rgb * width for _ in range(height))  # filter byte 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image(items: list[Any], ctx: Context) -> list[Any]:
    size = ctx.params.get("size", "8x8")
    found = re.fullmatch(r"([0-9]{1,4})x([0-9]{1,4})", size) if isinstance(size, str) else None
    if found is None or not all(1 <= int(v) <= MAX_SIDE for v in found.groups()):
        raise PermanentError(f"size must be WxH with sides of 1 to {MAX_SIDE} pixels", code="invalid_input")
    width, height = int(found[1]), int(found[2])
    out = []
    for item in items:
        prompt = item.get("prompt", "") if isinstance(item, dict) else str(item)
        rgb = hashlib.sha256(prompt.encode()).digest()[:3]
        out.append({"b64_json": base64.b64encode(_png(width, height, rgb)).decode()})
    return out


def speech(items: list[Any], ctx: Context) -> list[Any]:
    fmt = ctx.params.get("response_format", "wav")
    if fmt not in ("wav", "pcm"):
        raise PermanentError(f"the model-free speech handler makes wav or pcm, not {fmt!r}", code="invalid_input")
    out = []
    for item in items:
        text = item.get("input", "") if isinstance(item, dict) else str(item)
        n = int(SAMPLE_RATE * min(2.0, 0.05 * max(1, len(text))))
        pcm = b"".join(struct.pack("<h", int(12_000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)))
                       for i in range(n))
        if fmt == "pcm":
            out.append({"audio_b64": base64.b64encode(pcm).decode(), "content_type": "audio/pcm"})
            continue
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm)
        out.append({"audio_b64": base64.b64encode(buf.getvalue()).decode(), "content_type": "audio/wav"})
    return out


_OPS = {"chat": chat, "generate": generate, "encode": encode, "image": image, "speech": speech}
