"""Which window of a limit a moment falls in, and when it ends.

Fixed windows (`windowSeconds`) are aligned to the Unix epoch, so every replica computes the same
window id from its own clock; quotas (`period`) are UTC calendar days and months. A window id only
grows: the counters keep the largest id any replica wrote (ledger.py), so a replica whose clock lags
never resets a window another one has moved on from.
"""

from __future__ import annotations

import calendar
import time

from ...api.table import LimitRoute

DAY_S = 86_400


def window_of(limit: LimitRoute, now: float) -> int:
    """The id of the window `now` is in (0 for a concurrent limit, which has none)."""
    if limit.window_s is not None:
        return int(now // limit.window_s)
    if limit.period == "day":
        return int(now // DAY_S)
    if limit.period == "month":
        t = time.gmtime(now)
        return t.tm_year * 12 + t.tm_mon - 1
    return 0


def window_end(limit: LimitRoute, window: int) -> float:
    """When window `window` ends (Unix seconds)."""
    if limit.window_s is not None:
        return float((window + 1) * limit.window_s)
    if limit.period == "day":
        return float((window + 1) * DAY_S)
    if limit.period == "month":
        year, month = divmod(window + 1, 12)
        return float(calendar.timegm((year, month + 1, 1, 0, 0, 0)))
    return 0.0


def window_length(limit: LimitRoute) -> int | None:
    """The `w` of RateLimit-Policy: the window's length in seconds (a month's as 30 days); None: concurrent."""
    if limit.window_s is not None:
        return limit.window_s
    return {"day": DAY_S, "month": 30 * DAY_S}.get(limit.period or "")
