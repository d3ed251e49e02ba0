"""The one nesting limit: the walk is right, and every encoder on the path takes what it lets in."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest

from switchyard.jsondepth import MAX_JSON_DEPTH, WRAP_LEVELS, depth_exceeds, too_deep
from switchyard.messages import JobRecord, Result, WorkItem


def nest(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("value,depth", [(1, 0), ("s", 0), ([], 1), ({}, 1), ([[], {}], 2),
                                         ({"a": [1, {"b": [2]}]}, 4), ([1, [2, [3, [4]]]], 4)])
def test_walk_counts_arrays_and_objects(value: Any, depth: int) -> None:
    assert not depth_exceeds(value, depth)
    assert depth_exceeds(value, depth - 1) == (depth > 0)


def test_deep_branch_found_among_wide_shallow_ones() -> None:
    value = {"items": [[1] * 1000, [2] * 1000, nest(MAX_JSON_DEPTH)]}
    assert depth_exceeds(value, MAX_JSON_DEPTH)
    assert not depth_exceeds(value, MAX_JSON_DEPTH + 2)


def test_walk_has_no_recursion_limit() -> None:
    deep = nest(100_000)
    assert depth_exceeds(deep, MAX_JSON_DEPTH)


def test_bracket_count_filter_never_hides_a_deep_body() -> None:
    for depth in (MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 1000):
        raw = b"[" * depth + b"]" * depth  # orjson cannot encode this deep: written by hand
        assert too_deep(raw, orjson.loads(raw)) == (depth > MAX_JSON_DEPTH)
    # Brackets inside strings only make the filter walk; the answer stays right.
    raw = orjson.dumps({"items": ["[" * 500]})
    assert not too_deep(raw, orjson.loads(raw))


def test_every_encoder_takes_the_limit_plus_the_wrapping() -> None:
    depth = MAX_JSON_DEPTH + WRAP_LEVELS
    value = nest(depth)
    assert orjson.loads(orjson.dumps(value)) == value
    assert msgpack.unpackb(msgpack.packb(value, use_bin_type=True), raw=False) == value
    item = WorkItem(id="r", op="encode", model="m", bundle="b", machine_profile="p", pool="d", items=[value])
    assert WorkItem.decode(item.encode()).items == [value]
    result = Result(id="r", ok=True, items=[value])
    record = JobRecord(id="r", state="succeeded", result={"v": 1, **{"id": "r", "ok": True, "items": [value]}})
    assert Result.decode(result.encode()).items == [value]
    assert JobRecord.decode(record.encode()).result["items"] == [value]  # type: ignore[index]
    assert orjson.loads(orjson.dumps({"result": {"items": [value]}}))["result"]["items"] == [value]
