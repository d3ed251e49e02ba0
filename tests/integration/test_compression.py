"""gzip answers: JSON above GZIP_MIN_BYTES when the client accepts gzip; tiny bodies, clients that do
not ask (or refuse with q=0) and prepared streams get the body as it is."""

from __future__ import annotations

import gzip
import random
from typing import Any

import aiohttp
import orjson
import pytest
from dataplane import ADMIN, ECHO, gateway, worker

from switchyard.gateway.http import GZIP_MIN_BYTES, accepts_gzip
from switchyard.natsserver import NatsServer

DIM = 1024


def embed(items: list[Any], ctx: Any) -> list[Any]:
    """A large answer, as an embedding model gives: DIM floats per item."""
    rng = random.Random(len(items))
    return [{"embedding": [rng.uniform(-1, 1) for _ in range(DIM)]} for _ in items]


async def raw_post(url: str, path: str, accept: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {**ADMIN, **({"Accept-Encoding": accept} if accept is not None else {})}
    # skip_auto_headers: aiohttp adds its own Accept-Encoding otherwise; auto_decompress off: see the wire.
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s:
        async with s.post(url + path, headers=headers, json={"items": [{"text": "a"}] * 8}) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def raw_get(url: str, path: str, accept: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {**ADMIN, **({"Accept-Encoding": accept} if accept is not None else {})}
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s:
        async with s.get(url + path, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_large_json_answers_are_gzipped_only_when_asked(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, embed):
        await gw.wait_for_workers(ECHO)
        status, plain_headers, plain = await raw_post(gw.url, "/v1/encode/test/echo", None)
        assert status == 200, plain
        assert "Content-Encoding" not in plain_headers
        assert "Accept-Encoding" in plain_headers["Vary"]  # a cache must keep the two apart
        answer = orjson.loads(plain)
        assert len(answer["items"]) == 8 and len(answer["items"][0]["embedding"]) == DIM

        for accept in ("gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5", "*", "GZIP"):
            status, headers, body = await raw_post(gw.url, "/v1/encode/test/echo", accept)
            assert status == 200
            assert headers["Content-Encoding"] == "gzip", accept
            assert int(headers["Content-Length"]) == len(body) < len(plain) * 0.7
            assert orjson.loads(gzip.decompress(body))["items"] == answer["items"]

        for accept in ("gzip;q=0", "identity", "br", "*;q=0", "gzip;q=0, *"):
            status, headers, body = await raw_post(gw.url, "/v1/encode/test/echo", accept)
            assert status == 200
            assert "Content-Encoding" not in headers, accept
            assert orjson.loads(body)["items"] == answer["items"]

        # aiohttp's own client asks for gzip and inflates: callers see the same JSON.
        r = await gw.infer(items=[{"text": "a"}] * 8)
        assert r.status == 200 and r.body["items"] == answer["items"]


async def test_tiny_answers_and_errors_under_the_threshold_are_not_compressed(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        status, headers, body = await raw_get(gw.url, "/healthz", "gzip")
        assert status == 200 and len(body) < GZIP_MIN_BYTES
        assert "Content-Encoding" not in headers
        status, headers, body = await raw_get(gw.url, "/v1/jobs/nope", "gzip")
        assert status == 404 and "Content-Encoding" not in headers
        assert orjson.loads(body)["error"]["code"]


@pytest.mark.parametrize("header,expected", [
    (None, False), ("", False), ("gzip", True), ("x-gzip", True), ("deflate", False), ("gzip;q=0", False),
    ("gzip; q=0.001", True), ("gzip;q=abc", False), ("*", True), ("*;q=0", False), ("gzip;q=0, *", False),
    ("*;q=0, gzip", True), ("identity;q=1, gzip;q=0.0", False)])
def test_accept_encoding_parsing(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected
