"""The client's IP address: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy.

X-Forwarded-For is believed only from peers in spec.auth.trustedProxies: from anyone else it is a
header the client wrote, and would let it pick the address its key's allowedCidrs and the failure
limit see. Behind trusted proxies the header is read from the right (the hop the nearest proxy
appended) leftwards, and the first address that is not itself a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import unquote

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str | None) -> Address | None:
    """An IP address, with an IPv4-mapped IPv6 address (::ffff:10.0.0.1) read as its IPv4 one; None if not one."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def grpc_peer(peer: str | None) -> Address | None:
    """gRPC's context.peer(): 'ipv4:10.0.0.1:5000' or 'ipv6:[::1]:5000' (percent-encoded by some versions)."""
    if not peer:
        return None
    family, _, rest = unquote(peer).partition(":")
    if family == "ipv4":
        return parse_address(rest.rpartition(":")[0])
    if family == "ipv6":
        return parse_address(rest.rpartition(":")[0].strip("[]"))
    return None  # unix sockets and the like: no address


@lru_cache(maxsize=1024)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """Parsed once per distinct list (they come from the routing table, validated by the models)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def within(addr: Address | None, cidrs: tuple[str, ...]) -> bool:
    return addr is not None and any(addr in net for net in networks(cidrs))


def client_ip(peer: Address | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> Address | None:
    if peer is None or not forwarded_for or not within(peer, trusted):
        return peer
    current = peer
    for hop in reversed(forwarded_for.split(",")):
        addr = parse_address(hop)
        if addr is None:  # garbage a client put in front of the proxies' hops: stop at the last good one
            return current
        current = addr
        if not within(addr, trusted):
            return addr
    return current  # every hop a trusted proxy: the farthest one is all we know


def bucket(addr: Address | None) -> str:
    """The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64,
    so counting single IPv6 addresses would let it guess on 2^64 counters)."""
    if addr is None:
        return "unknown"
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
