"""Slow clients and too many connections, with raw sockets against the real gateway on loopback."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from dataplane import ADMIN, ECHO, gateway, until, worker
from limits_manifests import manifests_with

from switchyard.natsserver import NatsServer

HEADER_S, BODY_S, IDLE_S = 2, 3, 2
GIVE_UP_S = 40  # far past every timeout: a connection still open then was never going to be closed


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


@dataclass
class Outcome:
    closed_by_server: bool
    received: bytes


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def trickle(url: str, start: bytes, rest: bytes) -> Outcome:
    """Send `start`, then one byte of `rest` a second, until the server closes the connection."""
    reader, writer = await asyncio.open_connection(*address(url))
    received = b""
    deadline = time.monotonic() + GIVE_UP_S
    try:
        writer.write(start)
        await writer.drain()
        i = 0
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                if i < len(rest):
                    writer.write(rest[i:i + 1])
                    await writer.drain()
                    i += 1
                continue
            if not data:
                return Outcome(True, received)
            received += data
        return Outcome(False, received)
    except (ConnectionResetError, BrokenPipeError):
        return Outcome(True, received)
    finally:
        writer.close()


def slow_config(tmp_path: Path, **http: Any) -> Path:
    return manifests_with(tmp_path, gateway={"listeners": {"http": {
        "headerTimeoutSeconds": HEADER_S, "bodyTimeoutSeconds": BODY_S, "keepAliveTimeoutSeconds": IDLE_S,
        "maxConnections": 1000, **http}}})


async def test_slowloris_connections_are_closed_and_normal_requests_still_work(
        nats_server: NatsServer, tmp_path: Path) -> None:
    auth = ADMIN["Authorization"]
    line = b"POST /v1/encode/test/echo HTTP/1.1\r\n"
    head = f"Host: gw\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n".encode()
    kinds = {
        "request line": (b"POST /v1/enc", b"ode/test/echo HTTP/1.1\r\n" + head),
        "headers": (line + b"Host: gw\r\n", b"X-Slow: " + b"a" * 200 + b"\r\n"),
        "body": (line + head + b'{"items": [', b'"' + b"a" * 100),
    }
    async with gateway(nats_server.url, slow_config(tmp_path)) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        tasks = {kind: [asyncio.create_task(trickle(gw.url, *parts)) for _ in range(count)]
                 for (kind, parts), count in zip(kinds.items(), (70, 70, 60), strict=True)}
        await asyncio.sleep(1.0)
        # The gateway still serves while 200 slow connections are open.
        r = await gw.infer(items=["meanwhile"])
        assert r.status == 200 and r.body["items"] == ["meanwhile"]
        outcomes = {kind: await asyncio.gather(*ts) for kind, ts in tasks.items()}
        still_open = {kind: sum(not o.closed_by_server for o in os) for kind, os in outcomes.items()}
        assert still_open == {"request line": 0, "headers": 0, "body": 0}
        # What they got before the close: a 408 in our error format (or, at worst, just the close).
        for kind, os in outcomes.items():
            for o in os:
                assert o.received == b"" or o.received.startswith(b"HTTP/1.1 408"), (kind, o.received[:200])
        assert sum(o.received.startswith(b"HTTP/1.1 408") for o in outcomes["body"]) > 0
        got = b"".join(o.received for os in outcomes.values() for o in os)
        assert b'"code":"request_timeout"' in got
        metrics = await gw.metrics()
        assert 'switchyard_gateway_http_timeouts_total{phase="headers"}' in metrics
        assert 'switchyard_gateway_http_timeouts_total{phase="body"}' in metrics


async def test_idle_keep_alive_connection_is_closed(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, slow_config(tmp_path)) as gw:
        reader, writer = await asyncio.open_connection(*address(gw.url))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            await writer.drain()
            first = await asyncio.wait_for(reader.readuntil(b'"ok"}'), 10)
            assert first.startswith(b"HTTP/1.1 200")
            # Keep-alive: the connection stays open for the next request, until it idles too long.
            rest = await asyncio.wait_for(reader.read(), GIVE_UP_S)
            assert rest == b""
        finally:
            writer.close()


async def test_connection_that_sends_nothing_is_closed_without_an_answer(
        nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, slow_config(tmp_path)) as gw:
        reader, writer = await asyncio.open_connection(*address(gw.url))
        try:
            assert await asyncio.wait_for(reader.read(), GIVE_UP_S) == b""
        finally:
            writer.close()


async def test_connections_past_the_cap_are_closed(nats_server: NatsServer, tmp_path: Path) -> None:
    cap = 5
    async with gateway(nats_server.url, slow_config(tmp_path, maxConnections=cap, headerTimeoutSeconds=60)) as gw:
        await gw.http.close()  # the harness's own pooled connection would count too
        held = [await asyncio.open_connection(*address(gw.url)) for _ in range(cap)]
        for _, w in held:
            w.write(b"GET /heal")  # partial requests: the connections stay busy
            await w.drain()
        try:
            reader, writer = await asyncio.open_connection(*address(gw.url))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            try:
                answer = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:
                answer = b""
            writer.close()
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer
            if answer:
                assert b'"too_many_connections"' in answer and b"Connection: close" in answer
            # Closing one makes room for a new connection.
            held.pop()[1].close()

            async def healthz() -> bytes:
                r, w = await asyncio.open_connection(*address(gw.url))
                try:
                    w.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                    return await asyncio.wait_for(r.read(), 10)
                except ConnectionResetError:
                    return b""
                finally:
                    w.close()

            for _ in range(50):
                if (await healthz()).startswith(b"HTTP/1.1 200"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("no room after a connection closed")
            gw.http = aiohttp.ClientSession()  # for the metrics port (not capped); closed with the gateway
            refused = re.search(r"^switchyard_gateway_http_connections_refused_total (\S+)$", await gw.metrics(), re.M)
            assert refused is not None and float(refused.group(1)) >= 1
        finally:
            for _, w in held:
                w.close()


async def test_timeouts_follow_a_reload_for_new_connections(nats_server: NatsServer, tmp_path: Path) -> None:
    config = slow_config(tmp_path, headerTimeoutSeconds=600)
    async with gateway(nats_server.url, config) as gw:
        slow_config(tmp_path)  # back to 2 s: rewrites the manifests in place
        await until(lambda: gw.state.holder.table is not None
                    and gw.state.holder.table.http.header_timeout_s == HEADER_S, 10, "reload applied")
        o = await trickle(gw.url, b"GET /heal", b"thz HTTP/1.1\r\n" + b"X: " + b"a" * 100)
        assert o.closed_by_server
