"""Reading a component's settings from the environment, in one place per component.

Each component (gateway, operator, worker, `switchyard dev`) has one settings dataclass whose
fields name the variable they come from (`env()`); `load()` reads them, and its command-line
parser takes them as flag defaults, so a flag wins over the variable and the variable over the
default. Nothing else in switchyard/ reads os.environ. Standard library only: the parsers
import it before any extra is checked.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

T = TypeVar("T")
S = TypeVar("S")


class Variable(NamedTuple):
    name: str  # the environment variable
    field: str  # the settings field it sets
    help: str


def env(name: str, default: T | None = None, *, help: str, parse: Callable[[str], T] | None = None,
        factory: Callable[[], T] | None = None) -> T:
    """A settings field set by the variable `name` when it is set and not empty."""
    meta = {"env": name, "help": help, "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    # A None default is a field typed `X | None`: T is that union at the call site.
    return cast(T, dataclasses.field(default=default, metadata=meta))


def load(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """`cls` with every field whose variable is set in `environ` (default: the process's) taken from it."""
    source: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("env")
        raw = source.get(name) if name else None
        if raw:
            parse = f.metadata.get("parse")
            values[f.name] = parse(raw) if parse is not None else raw
    return cls(**values)


def variables(cls: type[Any]) -> list[Variable]:
    """The variables `cls` reads, for the documentation's table (and the test that keeps it whole)."""
    return [Variable(f.metadata["env"], f.name, f.metadata["help"])
            for f in dataclasses.fields(cls) if "env" in f.metadata]

