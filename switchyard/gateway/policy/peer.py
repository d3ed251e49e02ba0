"""The client address limits `per: ip` count by: the connection's peer.

Stands in until the keys work (issue 10 §1) hands every front end the client IP it authenticated
with (X-Forwarded-For from trusted proxies included); the front ends call only these, so switching
is one place.
"""

from __future__ import annotations

import asyncio
from typing import Any


def transport_peer(transport: asyncio.BaseTransport | None) -> str | None:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def grpc_peer(context: Any) -> str | None:
    """`ipv4:1.2.3.4:5678` / `ipv6:[::1]:5678` (grpc's peer string) -> the address."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None
