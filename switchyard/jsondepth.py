"""One nesting limit for JSON bodies, shared by decoding (gateway input) and encoding (answers, msgpack).

orjson decodes 1024 levels but encodes only about 254, and msgpack packs 511: a body the
gateway accepted must also survive being packed, echoed and wrapped in a job record.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 128  # arrays and objects, the body's own object included
# Levels an answer may add around what a body held: {"result": {"items": ...}} in a job record,
# msgpack envelopes. The encoders must take MAX_JSON_DEPTH + WRAP_LEVELS (a unit test checks it).
WRAP_LEVELS = 8


def too_deep(raw: bytes, value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` (decoded from `raw`) nests arrays and objects more than `limit` levels."""
    # Cheap filter first: a body with no more brackets than the limit cannot nest past it.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return depth_exceeds(value, limit)


def depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Iterative walk (no recursion limit to hit), stopping at the first container past `limit`."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in (node.values() if type(node) is dict else node):
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False
