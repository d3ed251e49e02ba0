"""JSON values in and out of google.protobuf.Value, as the HTTP API's JSON carries them.

protobuf numbers are doubles: a whole number arrives at the worker as an int (as it would
from JSON text), and NaN or infinity, which JSON cannot carry, are refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from ...errors import ApiError

MAX_SAFE_INTEGER = 2**53  # past it a double no longer holds every integer


def to_python(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise ApiError("bad_request", "numbers must be finite (NaN and infinity are not JSON)")
        return int(n) if n.is_integer() and abs(n) <= MAX_SAFE_INTEGER else n
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_python(v.struct_value)
    if kind == "list_value":
        return [to_python(x) for x in v.list_value.values]
    return None  # null_value, or no kind set


def struct_to_python(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: to_python(x) for k, x in s.fields.items()}


def from_python(values: Iterable[Any]) -> list[struct_pb2.Value]:
    return [json_format.ParseDict(x, struct_pb2.Value()) for x in values]


def struct_from_python(d: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s
