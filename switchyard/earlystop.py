"""A SIGTERM that arrives before a component's event loop handles signals.

Kubernetes sends SIGTERM whenever it scales down, to a pod that is still starting too, and
a worker spends hundreds of milliseconds importing before its loop installs a handler. With
Python's default action that SIGTERM ends the process with -15 mid-import; noted here
instead, the component sees it as soon as it can and stops cleanly (exit 0). Import nothing
heavy here: this runs first.
"""

from __future__ import annotations

import signal
from types import FrameType

_requested = False


def install() -> None:
    """Note SIGTERM from now on, until an event loop installs its own handler."""
    signal.signal(signal.SIGTERM, _note)


def requested() -> bool:
    return _requested


def _note(signum: int, frame: FrameType | None) -> None:
    global _requested
    _requested = True
