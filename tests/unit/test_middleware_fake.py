"""The gateway's HTTP middleware and body reading on a real aiohttp server in this process (no NATS, no
table: handlers stand in for the gateway's): request ids, the error shape of every failure, body size
and depth limits, and an access log that never carries a key or a query string."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from switchyard.errors import ApiError
from switchyard.gateway.http import MAX_REQUEST_ID, json_response, make_middleware, read_json
from switchyard.gateway.metrics import Metrics
from switchyard.jsondepth import MAX_JSON_DEPTH

LIMIT = 1000  # bytes a body may have here


async def ok(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def refused(request: web.Request) -> web.Response:
    raise ApiError("unknown_model", "no model 'x' on this gateway")


async def bug(request: web.Request) -> web.Response:
    raise KeyError("sk-live-secret-in-a-bug")


async def echo(request: web.Request) -> web.Response:
    return json_response({"got": await read_json(request, LIMIT)})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(metrics: Metrics) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[make_middleware(lambda: None, metrics)])
    app.router.add_get("/ok", ok)
    app.router.add_post("/refused", refused)
    app.router.add_post("/bug", bug)
    app.router.add_post("/echo", echo)
    async with TestClient(TestServer(app)) as c:
        yield c


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def test_request_ids_generated_echoed_and_checked(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/ok")
    rid = resp.headers["X-Request-ID"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert (await client.get("/ok")).headers["X-Request-ID"] != rid, "a fresh one per request"
    at_limit = "a" * MAX_REQUEST_ID
    resp = await client.get("/ok", headers={"X-Request-ID": at_limit})
    assert resp.status == 200 and resp.headers["X-Request-ID"] == at_limit
    resp = await client.get("/ok", headers={"X-Request-ID": "tenant-b.job-1"})  # inner dots are allowed
    assert resp.headers["X-Request-ID"] == "tenant-b.job-1"
    for bad in ("a" * (MAX_REQUEST_ID + 1), "a b", "a/b", ".a", "a.", "a..b", "a*", "a>"):
        resp = await client.get("/ok", headers={"X-Request-ID": bad})
        await _error(resp, 400, "invalid_request_id")
        assert resp.headers["X-Request-ID"] != bad, "a refused id is never echoed (it may be a NATS wildcard)"


async def test_every_failure_answers_in_one_shape(client: TestClient[Any, Any], metrics: Metrics,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    await _error(await client.post("/refused"), 404, "unknown_model")
    await _error(await client.get("/nowhere"), 404, "not_found")
    resp = await client.get("/refused")
    await _error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers["Allow"]
    caplog.set_level(logging.ERROR, logger="switchyard.gateway.http")
    resp = await client.post("/bug")
    err = await _error(resp, 500, "internal")
    assert "secret" not in json.dumps(err), "an exception's text never reaches the client"
    (logged,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged.exc_info is not None and logged.__dict__["request_id"] == resp.headers["X-Request-ID"]
    assert metrics.errors.labels("/refused", "unknown_model")._value.get() == 1
    assert metrics.errors.labels("/bug", "internal")._value.get() == 1


async def test_body_size_and_depth_at_and_past_the_limits(client: TestClient[Any, Any]) -> None:
    filler = "x" * (LIMIT - len(b'{"a":""}'))
    at = json.dumps({"a": filler}, separators=(",", ":")).encode()
    assert len(at) == LIMIT
    assert (await client.post("/echo", data=at)).status == 200
    err = await _error(await client.post("/echo", data=at[:-1] + b' }'), 413, "payload_too_large")
    assert str(LIMIT) in err["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it is read
        for _ in range(LIMIT // 100 + 1):
            yield b" " * 100
    await _error(await client.post("/echo", data=chunks()), 413, "payload_too_large")
    small_on_the_wire = gzip.compress(b"[" + b" " * (LIMIT * 50) + b"]")  # a gzip bomb in miniature
    assert len(small_on_the_wire) < LIMIT
    await _error(await client.post("/echo", data=small_on_the_wire, headers={"Content-Encoding": "gzip"}),
                 413, "payload_too_large")
    await _error(await client.post("/echo", data=b""), 400, "invalid_json")
    await _error(await client.post("/echo", data=b"{nope"), 400, "invalid_json")
    depth_ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert (await client.post("/echo", data=depth_ok)).status == 200
    await _error(await client.post("/echo", data=b"[" + depth_ok + b"]"), 400, "too_deep")


async def test_the_access_log_carries_no_key_and_no_query(client: TestClient[Any, Any],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.gateway.http")
    secret = "sy-live-key-0123456789abcdef"
    resp = await client.get(f"/ok?api_key={secret}&x=1", headers={"Authorization": f"Bearer {secret}",
                                                                  "X-Request-ID": "r-1"})
    assert resp.status == 200
    (line,) = [r for r in caplog.records if r.getMessage() == "request"]
    fields = {k: v for k, v in line.__dict__.items() if k in ("request_id", "method", "path", "status")}
    assert fields == {"request_id": "r-1", "method": "GET", "path": "/ok", "status": 200}
    assert secret not in repr(line.__dict__)
