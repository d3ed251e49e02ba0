"""Which address a request comes from (gateway/clientip.py), and the failed-key counter per address."""

from __future__ import annotations

import ipaddress

import pytest

from switchyard.gateway.authfailures import FailureLimiter
from switchyard.gateway.clientip import bucket, client_ip, grpc_peer, parse_address, within

PROXIES = ("10.0.0.0/8", "fd00::/8")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = parse_address(text)
    assert addr is not None
    return addr


@pytest.mark.parametrize("peer,xff,expected", [
    ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a trusted proxy: its header is the client's own words
    ("10.0.0.2", "198.51.100.1", "198.51.100.1"),  # a trusted proxy names its client
    ("10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.9", "198.51.100.1"),  # right to left, past the proxies
    ("10.0.0.2", "1.1.1.1, 10.0.0.9", "1.1.1.1"),
    ("10.0.0.2", "evil, 10.0.0.9", "10.0.0.9"),  # garbage: the last hop that was an address
    ("10.0.0.2", "10.0.0.8, 10.0.0.9", "10.0.0.8"),  # all proxies: the farthest
    ("10.0.0.2", None, "10.0.0.2"),
    ("fd00::1", "2001:db8::7", "2001:db8::7"),
    ("::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"),  # an IPv4-mapped peer is its IPv4 address
])
def test_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert client_ip(ip(peer), xff, PROXIES) == ip(expected)


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_ip(ip("127.0.0.1"), "198.51.100.1", ()) == ip("127.0.0.1")


@pytest.mark.parametrize("peer,expected", [
    ("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("ipv6:%5B::1%5D:5000", "::1"),
    ("unix:/tmp/sock", None), ("", None), ("ipv4:nonsense:1", None),
])
def test_grpc_peer(peer: str, expected: str | None) -> None:
    assert grpc_peer(peer) == (ip(expected) if expected else None)


def test_within_matches_each_family_only() -> None:
    assert within(ip("10.1.2.3"), ("10.0.0.0/8",)) and not within(ip("11.0.0.1"), ("10.0.0.0/8",))
    assert not within(ip("::1"), ("0.0.0.0/0",)) and within(ip("::1"), ("::1/128",))
    assert not within(None, ("0.0.0.0/0",))


def test_ipv6_is_counted_per_64() -> None:
    assert bucket(ip("2001:db8::1")) == bucket(ip("2001:db8::ffff:1")) == "2001:db8::/64"
    assert bucket(ip("2001:db8:0:1::1")) != bucket(ip("2001:db8::1"))
    assert bucket(ip("192.0.2.1")) == "192.0.2.1" and bucket(None) == "unknown"


class Clock:
    """Time the test moves by hand: the limiter's window without waiting a minute."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_past_the_limit_block_until_the_window_ends() -> None:
    clock = Clock()
    limiter = FailureLimiter(clock=clock)
    for _ in range(9):
        limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1", 10) is None  # 9 of 10
    limiter.failed("192.0.2.1")
    clock.now += 15
    assert limiter.retry_after("192.0.2.1", 10) == pytest.approx(45)
    assert limiter.retry_after("192.0.2.2", 10) is None  # another address is not blocked
    clock.now += 45
    assert limiter.retry_after("192.0.2.1", 10) is None
    limiter.failed("192.0.2.1")  # a new window: one failure
    assert limiter.retry_after("192.0.2.1", 1) == pytest.approx(60)


def test_the_map_is_bounded() -> None:
    limiter = FailureLimiter(capacity=100, clock=Clock())
    for i in range(10_000):
        limiter.failed(f"ip-{i}")
    assert len(limiter) == 100
    assert limiter.retry_after("ip-9999", 1) is not None and limiter.retry_after("ip-0", 1) is None
