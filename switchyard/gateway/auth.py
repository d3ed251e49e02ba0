"""API key check: keys exist only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from ..subjects import ANONYMOUS_TENANT


def authenticate(table: RoutingTable, authorization: str | None) -> KeyRoute | None:
    """The key that signed this request; None when the gateway is anonymous."""
    if not authorization:
        if table.anonymous:
            return None
        raise ApiError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError("unauthorized", "Authorization header must be 'Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    digest = hashlib.sha256(presented.strip().encode()).hexdigest()
    found = None
    for key in table.keys:  # no early exit: every key costs the same
        if hmac.compare_digest(digest, key.sha256):
            found = key
    if found is None:
        raise ApiError("unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


def tenant_of(key: KeyRoute | None) -> str:
    """The tenant a request acts for: its key's, or the anonymous one."""
    return key.owner if key is not None else ANONYMOUS_TENANT
