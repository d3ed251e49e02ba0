"""Configuration problems that name the resource and the field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    ref: str  # Kind/namespace/name, or a file path for unparseable input
    field: str  # e.g. spec.bundles[0].priority
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.field}: {self.message}" if self.field else f"{self.ref}: {self.message}"


class CompileError(Exception):
    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(map(str, self.issues)))


def issues_from_validation(ref: str, exc: ValidationError) -> list[ConfigIssue]:
    """Turn pydantic's errors into ConfigIssues with Kubernetes-style field paths."""
    out = []
    for err in exc.errors(include_url=False):
        out.append(ConfigIssue(ref, field_path(err["loc"]), _clean(err["msg"])))
    return out


def field_path(loc: Iterable[object]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-after", "function-before")):
            continue  # pydantic's name for a validator, not a field
        else:
            path += f".{part}" if path else str(part)
    return path


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ")
