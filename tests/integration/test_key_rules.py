"""API keys' rules (issue 10 §1), tried as a hostile client would: a key's window, scopes, client IPs,
rotation, the two headers, a key in the URL, and guessing keys at speed. HTTP, gRPC and the WebSocket.

Real nats-server and the production gateway (HTTP, and its gRPC listener); the keys are written into
a copy of tests/integration/manifests with the Gateway's spec.auth replaced per test.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from dataplane import GatewayUnderTest, copy_manifests, until
from google.protobuf import struct_pb2

from switchyard.gateway.app import Listen, new_state, start
from switchyard.gateway.config import directory
from switchyard.gateway.grpc import inference_pb2 as pb
from switchyard.gateway.grpc import inference_pb2_grpc as pb_grpc
from switchyard.natsserver import NatsServer, free_port

SECRETS = {name: f"{name}-key-0123456789abcdef" for name in (
    "admin", "plain", "expired", "future", "encoder", "reader", "fenced", "local", "proxied", "old", "new",
    "pooled")}
ONE_HOUR = timedelta(hours=1)


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def keys(sunset: datetime | None = None) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    ref = lambda n: {"name": "keys", "key": n}  # noqa: E731
    return [
        {"name": "admin", "secretRef": ref("admin"), "admin": True},
        {"name": "plain", "secretRef": ref("plain")},
        {"name": "expired", "secretRef": ref("expired"), "notAfter": stamp(now - ONE_HOUR)},
        {"name": "future", "secretRef": ref("future"), "notBefore": stamp(now + ONE_HOUR)},
        {"name": "encoder", "secretRef": ref("encoder"), "operations": ["encode"]},
        {"name": "reader", "secretRef": ref("reader"), "scopes": ["readAllJobs"]},
        {"name": "pooled", "secretRef": ref("pooled"), "pools": ["tenant"], "models": ["test/echo"]},
        {"name": "fenced", "secretRef": ref("fenced"), "allowedCidrs": ["192.0.2.0/24"]},  # loopback is outside
        {"name": "local", "secretRef": ref("local"), "allowedCidrs": ["127.0.0.0/8", "::1/128"]},
        {"name": "proxied", "secretRef": ref("proxied"), "allowedCidrs": ["198.51.100.0/24"]},
        {"name": "old", "secretRef": ref("old"), "tenant": "acme",
         "rotation": {"successor": "new", "sunsetAt": stamp(sunset or now + ONE_HOUR)}},
        {"name": "new", "secretRef": ref("new"), "tenant": "acme", "notBefore": stamp(now - ONE_HOUR)},
    ]


def write_config(config: Path, sunset: datetime | None = None, policy: dict[str, Any] | None = None,
                 **auth: Any) -> Path:
    docs = list(yaml.safe_load_all((config / "gateway.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["auth"] = {"apiKeys": keys(sunset), **auth}
            if policy is not None:
                doc["spec"]["policy"] = policy
        elif doc["kind"] == "Secret":
            doc["stringData"] = {**doc["stringData"], **SECRETS}
    (config / "gateway.yaml").write_text(yaml.safe_dump_all(docs))
    return config


@asynccontextmanager
async def keyed_gateway(
    nats_url: str, tmp_path: Path, *, access_log: bool = False, policy: dict[str, Any] | None = None, **auth: Any,
) -> AsyncIterator[tuple[GatewayUnderTest, str]]:
    """The gateway with this file's keys, and the target of its gRPC listener."""
    config = write_config(copy_manifests(tmp_path / "config"), policy=policy, **auth)
    st = new_state(nats_url, directory(config, interval_s=0.2))
    st.source.load()
    port, mport, gport = free_port(), free_port(), free_port()
    running = await start(st, Listen("127.0.0.1", port, mport, grpc_port=gport), access_log=access_log)
    gw = GatewayUnderTest(running, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}/metrics", st.source)
    try:
        await until(lambda: st.dispatcher.connected, 30, "gateway connected to NATS")
        yield gw, f"127.0.0.1:{gport}"
    finally:
        await gw.close()


async def encode(gw: GatewayUnderTest, headers: dict[str, str], path: str = "/v1/encode/test/echo") -> Any:
    return await gw.call("POST", path, headers=headers, json={"items": ["x"]})


def error_of(r: Any) -> tuple[int, str]:
    assert set(r.body["error"]) >= {"code", "message"}, r.body
    return r.status, r.body["error"]["code"]


async def test_a_key_works_only_within_its_window(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        r = await encode(gw, bearer("expired"))
        assert error_of(r) == (401, "key_expired") and "API key 'expired' expired at " in r.body["error"]["message"]
        r = await encode(gw, bearer("future"))
        assert error_of(r) == (401, "key_not_yet_valid")
        assert "API key 'future' is not valid until " in r.body["error"]["message"]
        for r in (await encode(gw, bearer("expired")), await encode(gw, bearer("future"))):
            assert "plain" not in r.body["error"]["message"] and "admin" not in r.body["error"]["message"]
        assert (await encode(gw, bearer("plain"))).status == 202
        # Every endpoint holds the same rules: a read as well as a write.
        assert error_of(await gw.call("GET", "/v1/jobs/x", headers=bearer("expired"))) == (401, "key_expired")


async def test_scopes_operations_models_pools_and_admin_rights(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        assert (await encode(gw, bearer("encoder"))).status == 202
        r = await gw.call("POST", "/v1/generate/test/echo", headers=bearer("encoder"), json={"items": ["x"]})
        assert error_of(r) == (403, "forbidden") and "may not call 'generate'" in r.body["error"]["message"]
        # The operation is refused before the model is looked up: no probing models with it.
        r = await gw.call("POST", "/v1/generate/no/such-model", headers=bearer("encoder"), json={"items": ["x"]})
        assert error_of(r) == (403, "forbidden")
        # The OpenAI endpoint of generate is the same operation.
        r = await gw.call("POST", "/v1/completions", headers=bearer("encoder"),
                          json={"model": "test/echo", "prompt": "hi"})
        assert r.status == 403, r.body
        # models and pools, as before.
        assert error_of(await encode(gw, bearer("pooled"), "/v1/encode/test/slow")) == (403, "forbidden")
        r = await gw.call("POST", "/v1/encode/test/echo", headers={**bearer("pooled"), "X-Pool": "default"},
                          json={"items": ["x"]})
        assert error_of(r) == (403, "forbidden")
        # readAllJobs: another tenant's job can be read and listed, never cancelled or deleted.
        assert (await gw.call("POST", "/v1/encode/test/echo", json={"items": ["x"]},
                              headers={**bearer("plain"), "X-Request-ID": "plains-job"})).status == 202
        r = await gw.call("GET", "/v1/jobs/plains-job?tenant=plain", headers=bearer("reader"))
        assert r.status == 200 and r.body["state"] == "queued"
        r = await gw.call("GET", "/v1/jobs?tenant=plain", headers=bearer("reader"))
        assert r.status == 200 and [j["id"] for j in r.body["jobs"]] == ["plains-job"]
        r = await gw.call("POST", "/v1/jobs/plains-job/cancel?tenant=plain", headers=bearer("reader"))
        assert error_of(r) == (404, "unknown_job")  # its own tenant's job of that id: none
        # Without the scope: 403 for the listing, the same 404 as a job that never existed for a read.
        r = await gw.call("GET", "/v1/jobs?tenant=plain", headers=bearer("encoder"))
        assert error_of(r) == (403, "forbidden") and "readAllJobs" in r.body["error"]["message"]
        assert error_of(await gw.call("GET", "/v1/jobs/plains-job?tenant=plain",
                                      headers=bearer("encoder"))) == (404, "unknown_job")
        # readAllJobs is not readFleet (the /health detail) nor managePools.
        assert set((await gw.call("GET", "/health", headers=bearer("reader"))).body) == {"status"}
        assert "workers" in (await gw.call("GET", "/health", headers=bearer("admin"))).body
        r = await gw.call("POST", "/v1/pools", headers=bearer("reader"), json={"name": "p1", "gpus": {"cpu": 1}})
        assert error_of(r) == (403, "forbidden") and "managePools" in r.body["error"]["message"]


async def test_client_ips_outside_a_keys_cidrs_are_refused(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        r = await encode(gw, bearer("fenced"))
        assert error_of(r) == (403, "ip_not_allowed") and "from 127.0.0.1" in r.body["error"]["message"]
        assert (await encode(gw, bearer("local"))).status == 202
        # Without trustedProxies X-Forwarded-For is the client's own word, and ignored.
        r = await encode(gw, {**bearer("proxied"), "X-Forwarded-For": "198.51.100.7"})
        assert error_of(r) == (403, "ip_not_allowed")
        r = await encode(gw, {**bearer("fenced"), "X-Forwarded-For": "192.0.2.1"})
        assert error_of(r) == (403, "ip_not_allowed")


async def test_x_forwarded_for_counts_from_a_trusted_proxy_only(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path, trustedProxies=["127.0.0.1/32", "::1/128"]) as (gw, _):
        r = await encode(gw, {**bearer("proxied"), "X-Forwarded-For": "203.0.113.1, 198.51.100.7"})
        assert r.status == 202, r.body
        assert error_of(await encode(gw, bearer("proxied"))) == (403, "ip_not_allowed")  # the proxy itself
        # The client wrote the leftmost hop; the proxy appended the address it saw: that one counts.
        r = await encode(gw, {**bearer("proxied"), "X-Forwarded-For": "198.51.100.7, 203.0.113.1"})
        assert error_of(r) == (403, "ip_not_allowed") and "from 203.0.113.1" in r.body["error"]["message"]


async def test_rotation_grace_headers_metric_and_sunset(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        new = await encode(gw, bearer("new"))
        old = await encode(gw, {**bearer("old"), "X-Request-ID": "by-old"})
        assert new.status == old.status == 202
        assert "Deprecation" not in new.headers and "Sunset" not in new.headers
        table = gw.state.holder.table
        successor = next(k for k in table.keys if k.name == "new")
        sunset = next(k for k in table.keys if k.name == "old").sunset_at
        assert old.headers["Deprecation"] == f"@{int(successor.not_before)}"  # RFC 9745: since the successor
        assert parsedate_to_datetime(old.headers["Sunset"]).timestamp() == int(sunset)  # RFC 8594, an HTTP-date
        # Errors and other endpoints carry them too, and both keys read the tenant's jobs.
        r = await gw.call("GET", "/v1/jobs/by-old", headers=bearer("new"))
        assert r.status == 200 and "Deprecation" not in r.headers
        r = await gw.call("GET", "/v1/jobs/no-such", headers=bearer("old"))
        assert r.status == 404 and "Sunset" in r.headers
        metrics = await gw.metrics()
        assert 'switchyard_gateway_deprecated_key_requests_total{key="old",tenant="acme"} 2.0' in metrics
        assert 'key="new"' not in metrics
        # Past the sunset (written as a reload here, as time would pass): 401, and the successor goes on.
        write_config(tmp_path / "config", sunset=datetime.now(UTC) - timedelta(seconds=1))
        epoch = gw.state.holder.table.epoch
        await until(lambda: gw.state.holder.table.epoch != epoch, 30, "the config reloaded")
        r = await encode(gw, bearer("old"))
        assert error_of(r) == (401, "key_expired") and "rotated out" in r.body["error"]["message"]
        assert (await encode(gw, bearer("new"))).status == 202


async def test_x_api_key_and_the_two_headers(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        assert (await encode(gw, {"X-API-Key": SECRETS["plain"]})).status == 202
        same = {"X-API-Key": SECRETS["plain"], **bearer("plain")}
        assert (await encode(gw, same)).status == 202
        r = await encode(gw, {"X-API-Key": SECRETS["plain"], **bearer("admin")})
        assert error_of(r) == (400, "bad_request") and "different keys" in r.body["error"]["message"]
        assert error_of(await encode(gw, {"X-API-Key": ""})) == (401, "unauthorized")
        r = await encode(gw, {})
        assert error_of(r) == (401, "unauthorized") and "X-API-Key" in r.body["error"]["message"]
        assert error_of(await encode(gw, {"X-API-Key": SECRETS["expired"]})) == (401, "key_expired")


async def test_a_key_in_the_query_string_is_refused_and_never_logged(nats_server: NatsServer, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = SECRETS["plain"]
    async with keyed_gateway(nats_server.url, tmp_path, access_log=True) as (gw, _):
        for param in ("api_key", "key", "apikey", "access_token", "token", "API_KEY"):
            r = await gw.call("POST", f"/v1/encode/test/echo?{param}={secret}", headers=bearer("plain"),
                              json={"items": ["x"]})
            assert error_of(r) == (400, "api_key_in_url"), param
            assert "X-API-Key" in r.body["error"]["message"]  # says where the key goes instead
            assert secret not in r.body["error"]["message"]
        # Without any header as well, and on a read.
        r = await gw.call("GET", f"/v1/jobs/x?access_token={secret}")
        assert error_of(r) == (400, "api_key_in_url")
        await until(lambda: any(getattr(rec, "status", None) == 400 for rec in caplog.records), 30, "access log")
    logged = [str(rec.__dict__) for rec in caplog.records]
    assert any("/v1/encode/test/echo" in line for line in logged)  # the access log ran
    assert not [line for line in logged if secret in line]


async def test_failed_keys_are_limited_per_client_ip(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path, trustedProxies=["127.0.0.1/32", "::1/128"]) as (gw, _):
        for i in range(10):
            r = await encode(gw, {"Authorization": f"Bearer guess-{i}-0123456789abcdef"})
            assert error_of(r) == (401, "unauthorized")
        r = await encode(gw, {"Authorization": "Bearer guess-10-0123456789abcdef"})
        assert error_of(r) == (429, "too_many_auth_failures") and 0 < int(r.headers["Retry-After"]) <= 60
        # A good key from that IP is refused too: it is checked before any key is (else a right guess would show).
        assert error_of(await encode(gw, bearer("plain"))) == (429, "too_many_auth_failures")
        assert error_of(await encode(gw, {"X-API-Key": SECRETS["plain"]})) == (429, "too_many_auth_failures")
        # Another client (named by the trusted proxy) is not held back.
        assert (await encode(gw, {**bearer("plain"), "X-Forwarded-For": "198.51.100.9"})).status == 202
        # Unauthenticated endpoints still answer.
        assert (await gw.call("GET", "/healthz")).status == 200
        assert error_of(await gw.call("GET", "/v1/jobs/x", headers=bearer("admin"))) == (429, "too_many_auth_failures")


def request(op: str) -> pb.InferRequest:
    return pb.InferRequest(op=op, model="test/echo", items=[struct_pb2.Value(string_value="x")])


async def test_grpc_holds_the_same_rules(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (_, target):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.InferenceStub(channel)

            async def infer(metadata: tuple[tuple[str, str], ...], op: str = "encode") -> Any:
                return await stub.Infer(request(op), metadata=metadata, timeout=30)

            async def refused(metadata: tuple[tuple[str, str], ...], op: str = "encode") -> tuple[Any, str]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await infer(metadata, op)
                trailers = dict(info.value.trailing_metadata() or ())
                return info.value.code(), trailers["switchyard-error-code"]

            def auth(name: str) -> tuple[tuple[str, str], ...]:
                return (("authorization", f"Bearer {SECRETS[name]}"),)

            assert await refused(auth("expired")) == (grpc.StatusCode.UNAUTHENTICATED, "key_expired")
            assert await refused(auth("fenced")) == (grpc.StatusCode.PERMISSION_DENIED, "ip_not_allowed")
            assert await refused(auth("encoder"), "generate") == (grpc.StatusCode.PERMISSION_DENIED, "forbidden")
            ok = await infer((("x-api-key", SECRETS["local"]),))
            assert ok.WhichOneof("outcome") == "accepted"
            call = stub.Infer(request("encode"), metadata=auth("old"), timeout=30)
            assert (await call).WhichOneof("outcome") == "accepted"
            trailers = dict(await call.trailing_metadata() or ())
            assert trailers["deprecation"].startswith("@") and trailers["sunset"].endswith("GMT")
            for i in range(10):
                await refused((("authorization", f"Bearer guess-{i}-0123456789abcdef"),))
            assert await refused(auth("plain")) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_auth_failures")


async def test_the_websocket_holds_the_same_rules(nats_server: NatsServer, tmp_path: Path) -> None:
    async with keyed_gateway(nats_server.url, tmp_path) as (gw, _):
        for name, status in (("expired", 401), ("future", 401), ("fenced", 403)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await gw.http.ws_connect(gw.url + "/v1/ws", headers=bearer(name))
            assert e.value.status == status, name
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await gw.http.ws_connect(gw.url + f"/v1/ws?apikey={SECRETS['plain']}")
        assert e.value.status == 400
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers={"X-API-Key": SECRETS["encoder"]}) as ws:
            await ws.send_json({"type": "infer", "id": "g", "op": "generate", "model": "test/echo", "items": ["x"]})
            m = await ws.receive_json(timeout=30)
            assert m["type"] == "error" and m["error"]["code"] == "forbidden", m
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=bearer("old")) as ws:
            handshake = ws._response.headers  # the upgrade's answer (aiohttp keeps it on the socket)
            assert "Deprecation" in handshake and "Sunset" in handshake
            # The sunset passing while the socket is open ends it at the next message.
            write_config(tmp_path / "config", sunset=datetime.now(UTC) - timedelta(seconds=1))
            epoch = gw.state.holder.table.epoch
            await until(lambda: gw.state.holder.table.epoch != epoch, 30, "the config reloaded")
            await ws.send_json({"type": "infer", "id": "late", "op": "encode", "model": "test/echo", "items": ["x"]})
            m = await ws.receive_json(timeout=30)
            assert m["type"] == "error" and m["error"]["code"] == "key_expired", m
            assert (await ws.receive(timeout=30)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_policy_per_ip_limits_count_the_client_a_trusted_proxy_names(nats_server: NatsServer,
                                                                           tmp_path: Path) -> None:
    """spec.policy's `per: ip` counts the client IP the key check saw, not the proxy's address."""
    policy = {"stages": [{"name": "limits", "limits": [
        {"name": "per-ip", "kind": "requests", "per": "ip", "limit": 1, "windowSeconds": 86_400}]}]}
    first, second = (f"198.51.100.{n}" for n in random.sample(range(1, 255), 2))  # fresh counters each run
    started = time.time()
    async with keyed_gateway(nats_server.url, tmp_path, policy=policy, trustedProxies=["127.0.0.1/32", "::1/128"]) \
            as (gw, _):
        assert (await encode(gw, {**bearer("plain"), "X-Forwarded-For": first})).status == 202
        again = await encode(gw, {**bearer("plain"), "X-Forwarded-For": first})
        other = await encode(gw, {**bearer("plain"), "X-Forwarded-For": second})
    if int(started // 86_400) != int(time.time() // 86_400):
        pytest.skip("the test straddled a UTC midnight: its daily window changed under it")
    assert error_of(again) == (429, "rate_limited")
    assert other.status == 202, other.body
