"""Handlers the worker subprocesses in these tests import (module:function)."""

from __future__ import annotations

import time
from typing import Any


def slow_echo(items: list[Any], ctx: Any) -> list[Any]:
    """Sleeps `params.sleep` seconds (default 3), then echoes."""
    time.sleep(float(ctx.params.get("sleep", 3)))
    return items
