"""GET /v1/ws with aiohttp's WebSocket client: many requests on one connection, auth on the upgrade,
the in-flight cap, subscriptions, and a hostile client (huge frames, no key, a key in the URL,
another tenant's jobs, malformed messages, a revoked key)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dataplane import ADMIN, ECHO, ECHO_ONLY, copy_manifests, gateway, until, worker

from switchyard.gateway import websocket
from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


def infer(msg_id: str, text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"type": "infer", "id": msg_id, "op": "encode", "model": "test/echo", "items": [{"text": text}], **kw}


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 15) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()


async def test_one_connection_carries_many_requests_matched_by_id(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            for i in range(20):
                await ws.send_json(infer(f"r{i}", text=f"text {i}"))
            answers = {}
            while len(answers) < 20:
                m = await receive(ws)
                answers[m["id"]] = m
            for i in range(20):
                m = answers[f"r{i}"]
                assert m["type"] == "result", m
                assert m["result"]["items"] == [{"text": f"text {i}"}]
                assert m["result"]["model"] == "test/echo"
            # The connection is still good for more.
            await ws.send_json(infer("again"))
            assert (await receive(ws))["id"] == "again"


async def test_the_upgrade_needs_the_key_in_the_header_never_the_url(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        for headers, status in ((None, 401), ({"Authorization": "Bearer wrong-key-wrong-key-1"}, 401),
                                ({"Authorization": "Basic abc"}, 401)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await gw.http.ws_connect(gw.url + "/v1/ws", headers=headers)
            assert e.value.status == status
        # A key in the URL is refused even when the header is right: URLs land in logs.
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await gw.http.ws_connect(gw.url + "/v1/ws?api_key=admin-key-0123456789abcdef", headers=ADMIN)
        assert e.value.status == 400
        r = await gw.call("GET", "/v1/ws?token=x", headers=ADMIN)
        assert r.status == 400 and "never put an API key in the URL" in r.body["error"]["message"]
        # A plain GET (no upgrade) gets our error format too.
        r = await gw.call("GET", "/v1/ws", headers=ADMIN)
        assert r.status == 400 and r.body["error"]["code"] == "bad_request"


async def test_in_flight_cap_refuses_the_extra_request_and_all_the_others_finish(nats_server: NatsServer) -> None:
    release = threading.Event()

    def held(items: list[Any], ctx: Any) -> list[Any]:
        release.wait(30)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, held):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            for i in range(websocket.MAX_IN_FLIGHT):
                await ws.send_json(infer(f"r{i}"))
            await ws.send_json(infer("one-too-many"))
            refused = await receive(ws)
            assert refused["id"] == "one-too-many" and refused["type"] == "error"
            assert refused["error"]["code"] == "too_many_in_flight" and refused["status"] == 429
            assert f"{websocket.MAX_IN_FLIGHT} requests in flight" in refused["error"]["message"]
            # An id already in flight is refused too, without disturbing the first.
            await ws.send_json(infer("r0"))
            dup = await receive(ws)
            assert dup["id"] == "r0" and dup["type"] == "error" and "already in flight" in dup["error"]["message"]
            release.set()
            done = set()
            while len(done) < websocket.MAX_IN_FLIGHT:
                m = await receive(ws, 60)
                assert m["type"] == "result", m
                done.add(m["id"])
            assert done == {f"r{i}" for i in range(websocket.MAX_IN_FLIGHT)}
            await ws.send_json(infer("after"))  # below the cap again
            assert (await receive(ws))["type"] == "result"


async def test_hostile_messages_get_errors_and_huge_frames_close_the_connection(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            cases: list[tuple[Any, str, str]] = [
                ("not json", "invalid_json", "not valid JSON"),
                ({"type": "infer"}, "bad_request", "id"),
                ({"id": "x", "type": "launch"}, "bad_request", "type"),
                ({**infer("x"), "extra": 1}, "bad_request", "extra"),
                ({**infer("x"), "items": []}, "bad_request", "items"),
                ({**infer("x"), "id": "../../etc"}, "bad_request", "id"),
                ({**infer("x"), "op": "explode"}, "not_found", "unknown operation"),
                ({**infer("x"), "model": "no/such-model"}, "unknown_model", "no/such-model"),
                ([1] * 3, "bad_request", "invalid message"),
            ]
            for message, code, words in cases:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_json(message)
                m = await receive(ws)
                assert m["type"] == "error" and m["error"]["code"] == code, (message, m)
                assert words in m["error"]["message"], (message, m)
            await ws.send_str("[" * 200 + "]" * 200)
            assert (await receive(ws))["error"]["code"] == "too_deep"
            await ws.send_bytes(b"\x00\x01")
            assert "text frames" in (await receive(ws))["error"]["message"]

            # Past maxRequestBodyBytes (4096 in these manifests): closed with 1009, message too big.
            await ws.send_str('{"id": "big", "type": "infer", "items": ["' + "x" * 10_000 + '"]}')
            closed = await asyncio.wait_for(ws.receive(), 15)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009
        # The gateway is fine afterwards.
        assert (await gw.call("GET", "/healthz")).status == 200


async def test_jobs_subscription_sees_only_its_own_tenants_jobs(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:  # no worker: every request becomes a queued job
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ECHO_ONLY) as mine, \
                gw.http.ws_connect(gw.url + "/v1/ws", headers=OTHER) as theirs:
            # Another tenant's jobs: refused to a non-admin key.
            await mine.send_json({"type": "subscribe", "id": "spy", "topic": "jobs", "tenant": "other"})
            spy = await receive(mine)
            assert spy["type"] == "error" and spy["error"]["code"] == "forbidden"
            await mine.send_json({"type": "subscribe", "id": "status", "topic": "status"})
            assert (await receive(mine))["error"]["code"] == "forbidden"  # the fleet view is admin only
            for ws in (mine, theirs):
                await ws.send_json({"type": "subscribe", "id": "jobs", "topic": "jobs"})
                assert (await receive(ws)) == {"type": "subscribed", "id": "jobs", "topic": "jobs"}

            # The other tenant's job.
            await theirs.send_json(infer("a", request_id="shared-id", model="test/echo"))
            seen: dict[str, list[dict[str, Any]]] = {"accepted": [], "job": []}
            while not (seen["accepted"] and seen["job"]):
                m = await receive(theirs)
                seen[m["type"]].append(m)
            assert seen["accepted"][0]["job_id"] == "shared-id"
            assert seen["job"][0]["job"]["id"] == "shared-id" and seen["job"][0]["job"]["state"] == "queued"

            # Then our own: if the other tenant's record had reached us, it would have come first.
            await mine.send_json(infer("b", request_id="mine-id"))
            first = await receive(mine)
            while first["type"] != "job":
                assert first["type"] == "accepted", first
                first = await receive(mine)
            assert first["job"]["id"] == "mine-id" and first["job"]["state"] == "queued"

            # A worker starts: the job's state changes reach its own tenant's subscriber.
            async with worker(nats_server.url, echo):
                states = []
                while "succeeded" not in states:
                    m = await receive(theirs, 30)
                    if m["type"] == "job":
                        assert m["job"]["id"] == "shared-id"
                        states.append(m["job"]["state"])
                        if m["job"]["state"] == "succeeded":
                            assert m["job"]["result"]["items"] == [{"text": "hi"}]
            await theirs.send_json({"type": "unsubscribe", "id": "jobs"})
            assert (await receive(theirs)) == {"type": "unsubscribed", "id": "jobs"}


async def test_status_subscription_for_admins_and_pings(nats_server: NatsServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "PING_S", 0.5)
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN, autoping=False) as ws:
            await ws.ping(b"are you there")
            kinds = set()
            status = None
            while not {"pong", "ping"} <= kinds or status is None:
                msg = await asyncio.wait_for(ws.receive(), 15)
                if msg.type == aiohttp.WSMsgType.PONG:
                    assert msg.data == b"are you there"
                    kinds.add("pong")
                elif msg.type == aiohttp.WSMsgType.PING:  # the server's heartbeat
                    kinds.add("ping")
                    await ws.pong(msg.data)
                    if status is None and "sub" not in kinds:
                        kinds.add("sub")
                        await ws.send_json({"type": "subscribe", "id": "s", "topic": "status", "interval_s": 0.5})
                elif msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] == "status":
                    status = msg.json()
            assert status["id"] == "s" and status["worker_count"] == 1
            assert status["workers"][0]["models"] == ["test/echo"]
            assert isinstance(status["pending"], list) and status["config"]["epoch"] == gw.state.holder.table.epoch


async def test_a_revoked_key_ends_the_connection(nats_server: NatsServer, tmp_path: Path) -> None:
    config = copy_manifests(tmp_path / "config")
    async with gateway(nats_server.url, config) as gw:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=OTHER) as ws:
            await ws.send_json(infer("before"))
            assert (await receive(ws))["type"] == "accepted"  # no worker: queued, as the key may
            manifest = config / "gateway.yaml"
            manifest.write_text(manifest.read_text().replace(
                "      - {name: other, secretRef: {name: keys, key: other}}\n", ""))
            epoch = gw.state.holder.table.epoch
            await until(lambda: gw.state.holder.table.epoch != epoch, 15, "the config reloaded")
            await ws.send_json(infer("after"))
            m = await receive(ws)
            assert m["type"] == "error" and m["error"]["code"] == "unauthorized" and "revoked" in m["error"]["message"]
            closed = await asyncio.wait_for(ws.receive(), 15)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1008


async def test_an_admin_may_follow_another_tenant_but_never_a_wildcard(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:  # no worker: requests become queued jobs
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as admin, \
                gw.http.ws_connect(gw.url + "/v1/ws", headers=OTHER) as other:
            for tenant in (">", "*", "other.>", "a b", "x" * 64):
                await admin.send_json({"type": "subscribe", "id": "w", "topic": "jobs", "tenant": tenant})
                m = await receive(admin)
                assert m["type"] == "error" and m["error"]["code"] == "bad_request", (tenant, m)
            await admin.send_json({"type": "subscribe", "id": "w", "topic": "jobs", "tenant": "other"})
            assert (await receive(admin))["type"] == "subscribed"
            await other.send_json(infer("o", request_id="other-job"))
            assert (await receive(other))["type"] == "accepted"
            m = await receive(admin)
            assert m["type"] == "job" and m["id"] == "w" and m["job"]["id"] == "other-job"


async def test_a_key_narrowed_by_a_reload_is_held_to_its_new_limits(nats_server: NatsServer, tmp_path: Path) -> None:
    config = copy_manifests(tmp_path / "config")
    async with gateway(nats_server.url, config) as gw:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=OTHER) as ws:
            await ws.send_json(infer("before"))
            assert (await receive(ws))["type"] == "accepted"
            manifest = config / "gateway.yaml"
            manifest.write_text(manifest.read_text().replace(
                "      - {name: other, secretRef: {name: keys, key: other}}\n",
                "      - {name: other, secretRef: {name: keys, key: other}, models: [test/slow]}\n"))
            epoch = gw.state.holder.table.epoch
            await until(lambda: gw.state.holder.table.epoch != epoch, 15, "the config reloaded")
            await ws.send_json(infer("after"))
            m = await receive(ws)
            assert m["type"] == "error" and m["error"]["code"] == "forbidden", m
            assert not ws.closed  # still a valid key, only narrower
