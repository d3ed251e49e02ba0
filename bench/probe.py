"""Precise load generators on blocking sockets: one HTTP/1.1 keep-alive client and one
core-NATS request-reply client.

Both paths are measured with the same kind of client (no event loop, no library
between the timer and the socket), so the client's own cost is a few microseconds
on either side and the difference between them is the gateway's.
"""

from __future__ import annotations

import gc
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Stream:
    """A connected TCP socket with a read buffer (lines and exact byte counts)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self.buf += chunk

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + 2]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def close(self) -> None:
        self.sock.close()


# -- HTTP ----------------------------------------------------------------------------

@dataclass
class HttpAnswer:
    status: int
    body: bytes


class HttpClient:
    """One keep-alive connection; `post()` sends one request and reads the whole answer."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items())
        self._s: _Stream | None = None

    def post(self, path: str, body: bytes) -> HttpAnswer:
        if self._s is None:
            self._s = _Stream(self.host, self.port)
        s = self._s
        s.sock.sendall(f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int(s.line().split(b" ", 2)[1])
        length, close = 0, False
        while line := s.line():
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not expected from the gateway")
        data = s.exact(length)
        if close:
            self.close()
        return HttpAnswer(status, data)

    def close(self) -> None:
        if self._s is not None:
            self._s.close()
            self._s = None


# -- NATS ----------------------------------------------------------------------------

class NatsClient:
    """Just enough of the NATS client protocol for request-reply on one inbox subscription."""

    INBOX = "_INBOX.bench"

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._s = _Stream(parts.hostname or "127.0.0.1", parts.port or 4222)
        info = self._s.line()
        if not info.startswith(b"INFO "):
            raise ConnectionError(f"not a NATS server: {info[:40]!r}")
        connect = {"verbose": False, "pedantic": False, "lang": "python-bench", "version": "0", "protocol": 1}
        self._s.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                             + f"SUB {self.INBOX}.* 1\r\nPING\r\n".encode())
        self._next_msg(until_pong=True)

    def send(self, subject: str, reply: str, payload: bytes) -> None:
        self._s.sock.sendall(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def receive(self) -> tuple[str, bytes]:
        """The next message on our inbox: (subject, payload)."""
        got = self._next_msg()
        assert got is not None
        return got

    def request(self, subject: str, payload: bytes) -> bytes:
        self.send(subject, f"{self.INBOX}.1", payload)
        return self.receive()[1]

    def _next_msg(self, until_pong: bool = False) -> tuple[str, bytes] | None:
        s = self._s
        while True:
            line = s.line()
            if line.startswith(b"MSG "):
                parts = line.split(b" ")
                data = s.exact(int(parts[-1]) + 2)[:-2]
                return parts[1].decode(), data
            if line == b"PING":
                s.sock.sendall(b"PONG\r\n")
            elif line == b"PONG" and until_pong:
                return None
            elif line.startswith(b"-ERR"):
                raise ConnectionError(line.decode())
            # +OK, INFO updates, stray PONGs: nothing to do

    def close(self) -> None:
        self._s.close()


# -- measurements --------------------------------------------------------------------

@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int
    non200: int = 0
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, float]:
        return {"p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "mean_ms": self.mean_ms, "n": self.n,
                "non200": self.non200}


def sequential(call: Callable[[], bool], n: int, warmup: int = 200) -> Latency:
    """Concurrency 1: `n` calls one after the other; `call()` returns True when the answer is good."""
    bad = 0
    for _ in range(warmup):
        call()
    samples: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()  # the client's collector pauses are not the server's latency
    try:
        for _ in range(n):
            t = clock()
            ok = call()
            samples.append((clock() - t) / 1e6)
            bad += not ok
    finally:
        gc.enable()
    return Latency(percentile(samples, 0.5), percentile(samples, 0.99), sum(samples) / n, n, bad, samples)


def nats_closed_loop(url: str, subject: str, payload: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """The floor's throughput: `concurrency` requests always in flight on one connection."""
    nc = NatsClient(url)
    clock = time.perf_counter
    sent_at: dict[str, float] = {}
    lat: list[float] = []
    seq = 0

    def send() -> None:
        nonlocal seq
        seq += 1
        reply = f"{NatsClient.INBOX}.{seq}"
        sent_at[reply] = clock()
        nc.send(subject, reply, payload)

    try:
        start = clock()
        stop_at = start + seconds
        for _ in range(concurrency):
            send()
        done = 0
        while sent_at:
            reply, _ = nc.receive()
            lat.append((clock() - sent_at.pop(reply)) * 1000)
            done += 1
            if clock() < stop_at:
                send()
        elapsed = clock() - start
    finally:
        nc.close()
    return {"rps": done / elapsed, "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
            "requests": done, "non200": 0, "seconds": elapsed}
