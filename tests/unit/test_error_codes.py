"""Every error code the gateway can raise has a status in one table: a mistyped code was a silent 500."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from switchyard.errors import STATUS, ApiError, ErrorCode

PKG = Path(__file__).resolve().parents[2] / "switchyard"


def test_the_code_type_and_the_status_table_name_the_same_codes() -> None:
    assert sorted(get_args(ErrorCode)) == sorted(STATUS)


def test_every_literal_code_raised_is_in_the_table() -> None:
    unknown = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "ApiError" \
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value not in STATUS:
                unknown.append(f"{path.relative_to(PKG)}:{node.lineno} {node.args[0].value!r}")
    assert not unknown


def test_a_code_from_outside_the_table_is_a_logged_500(caplog) -> None:
    err = ApiError("no_such_code", "from a worker")  # type: ignore[arg-type]
    assert err.status == 500
    assert "missing from the status table" in caplog.text
