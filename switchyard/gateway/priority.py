"""A request's priority class: from its key's tier, or from X-Priority when the key's tier may set it.

The class becomes a token of the item's work subject (subjects.Lane.queue), which is how workers
serve high before normal before low (worker/fairness.py). Nothing else reads it.
"""

from __future__ import annotations

from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from ..subjects import DEFAULT_CLASS, PRIORITY_CLASSES

HEADER = "X-Priority"


def priority_class(table: RoutingTable, key: KeyRoute | None, header: str | None) -> str:
    """The class of a request; ApiError 400 for an unknown class, 403 for a key that may not choose one."""
    if header is None:
        if key is None:
            return DEFAULT_CLASS
        return table.priority.tiers.get(key.tier, DEFAULT_CLASS)
    wanted = header.strip().lower()
    if wanted not in PRIORITY_CLASSES:
        raise ApiError("bad_request", f"{HEADER} must be one of {', '.join(PRIORITY_CLASSES)}, not {header[:64]!r}")
    if key is None or key.tier not in table.priority.header_tiers:
        tier = "no key" if key is None else f"its tier {key.tier!r}"
        raise ApiError("forbidden", f"this key may not set {HEADER} ({tier} is not in the Gateway's "
                                    "spec.priority.headerTiers); its class comes from its tier")
    return wanted
