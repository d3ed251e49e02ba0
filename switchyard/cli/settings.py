"""`switchyard dev`'s settings from its environment (switchyard/settings.py); its flags win over them."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import env


@dataclass(frozen=True)
class DevSettings:
    # WARNING by default: the demo's own lines (the curl to try) are the point, not the request log.
    log_level: str = env("SWITCHYARD_LOG_LEVEL", "WARNING", help="DEBUG, INFO, WARNING or ERROR (--log-level)")
