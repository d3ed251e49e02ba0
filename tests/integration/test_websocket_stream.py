"""Streams over GET /v1/ws with aiohttp's WebSocket client: `"stream": true` answers `chunk` messages
then `done` or `error` (submit_stream, the rules of SSE), interleaved with other requests on one
connection; `cancel` and a closed socket stop the worker's generator; a hostile or slow client
(unknown ids, another connection's stream, a model the key may not use, a reader that stops
reading) cannot make the gateway buffer without bound or keep a worker busy for nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from dataplane import ADMIN, ECHO, ECHO_ONLY, gateway, job_final, until, worker

from switchyard.gateway import streaming, websocket
from switchyard.natsserver import NatsServer
from switchyard.subjects import Lane
from switchyard.worker.handlers import tokens

pytestmark = pytest.mark.asyncio


def stream(msg_id: str, prompt: str = "the quick brown fox", **kw: Any) -> dict[str, Any]:
    return {"type": "infer", "id": msg_id, "op": "generate", "model": "test/echo", "items": [{"prompt": prompt}],
            "stream": True, **kw}


def plain(msg_id: str, text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"type": "infer", "id": msg_id, "op": "encode", "model": "test/echo", "items": [{"text": text}], **kw}


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 20) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return msg.json()


async def until_ends(ws: aiohttp.ClientWebSocketResponse, ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Every message for `ids` until each has its last one (done, error, result, accepted, cancelled)."""
    got: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    open_ = set(ids)
    while open_:
        m = await receive(ws)
        assert m["id"] in got, m
        assert m["id"] in open_, f"a message after the end of {m['id']}: {m}"
        got[m["id"]].append(m)
        if m["type"] != "chunk":
            open_.discard(m["id"])
    return got


class Watched:
    """What a generator handler under test did (it runs in this process)."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()

    def handler(self, payload: Any = None, delay_s: float = 0.05):  # type: ignore[no-untyped-def]
        async def forever(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
            try:
                while True:
                    self.produced += 1
                    yield self.produced if payload is None else payload
                    await asyncio.sleep(delay_s)
            finally:
                self.closed.set()
        return forever


async def test_streams_and_plain_requests_interleave_on_one_connection(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, tokens):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            prompts = {f"s{i}": " ".join(f"w{i}-{n}" for n in range(6)) for i in range(4)}
            for msg_id, prompt in prompts.items():
                await ws.send_json(stream(msg_id, prompt, params={"delay_s": 0.02}))
                await ws.send_json(plain(f"p{msg_id}", text=prompt))
            got = await until_ends(ws, {*prompts, *(f"p{i}" for i in prompts)})
            for msg_id, prompt in prompts.items():
                *chunks, end = got[msg_id]
                assert [c["seq"] for c in chunks] == list(range(6))
                assert "".join(c["payload"]["text"] for c in chunks) == prompt
                assert all(c["type"] == "chunk" and c["id"] == msg_id for c in chunks)
                assert end["type"] == "done" and end["chunks"] == 6, end
                assert end["usage"]["output_tokens"] == 6 and "request_id" in end
                assert set(end["timing"]) >= {"queue_ms", "compute_ms"}
                # The plain request beside it: one result with every item, as before.
                [result] = got[f"p{msg_id}"]
                assert result["type"] == "result", result
            # Items as plain strings: one word each.
            await ws.send_json({**plain("whole"), "stream": True, "items": ["a", "b"], "op": "generate"})
            got = await until_ends(ws, {"whole"})
            assert [m["type"] for m in got["whole"]] == ["chunk", "chunk", "done"]


async def test_a_stream_with_no_worker_is_accepted_or_held_until_one_starts(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            await ws.send_json(stream("cold", "a b"))
            accepted = await receive(ws)
            assert accepted["type"] == "accepted" and accepted["job_id"], accepted
            # With a hold (`wait`, as Prefer: wait=N) the stream comes once a worker starts.
            await ws.send_json(stream("held", "cold start", wait=20))
            await until(lambda: gw.state.holds._held[ECHO] == 1, 10, "the stream is held")
            async with worker(nats_server.url, tokens):
                got = await until_ends(ws, {"held"})
            assert [m.get("payload", {}).get("text") for m in got["held"][:-1]] == ["cold", " start"]
            assert got["held"][-1]["type"] == "done"


@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_cancel_or_a_closed_socket_stops_the_generator(nats_server: NatsServer, how: str) -> None:
    seen = Watched()
    async with gateway(nats_server.url) as gw, worker(nats_server.url, seen.handler()) as w:
        await gw.wait_for_workers(ECHO)
        ws = await gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN)
        await ws.send_json(stream("s"))
        for seq in range(3):
            m = await receive(ws)
            assert m == {"type": "chunk", "id": "s", "seq": seq, "payload": seq + 1}
        if how == "cancel":
            await ws.send_json({"type": "cancel", "id": "s"})
            while (m := await receive(ws))["type"] == "chunk":  # those already on their way
                assert m["id"] == "s"
            assert m == {"type": "cancelled", "id": "s"}
        else:
            await ws.close()
        await until(seen.closed.is_set, 10, "the generator's finally ran")
        await until(lambda: w.in_flight == 0, 10, "the worker let go of the item")
        await until(lambda: gw.state.registry.live()[0].in_flight == 0, 10, "heartbeat shows nothing in flight")
        if how == "cancel":
            # "s" has ended (nothing follows `cancelled`); the connection serves on.
            await ws.send_json({"type": "cancel", "id": "s"})
            m = await receive(ws)
            assert m["id"] == "s" and m["error"]["code"] == "not_found", m
            await ws.close()
        else:
            assert 'switchyard_gateway_client_disconnects_total 1.0' in await gw.metrics()


async def test_hostile_cancels_and_streams(nats_server: NatsServer) -> None:
    seen = Watched()
    release = threading.Event()

    def held(items: list[Any], ctx: Any) -> list[Any]:
        release.wait(30)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, seen.handler()), \
            worker(nats_server.url, held, model="test/slow"):
        await gw.wait_for_workers(ECHO)
        await gw.wait_for_workers(Lane("test/slow", "default", "cpu", "default"))
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as mine, \
                gw.http.ws_connect(gw.url + "/v1/ws", headers=ECHO_ONLY) as theirs:
            await mine.send_json(stream("victim"))
            assert (await receive(mine))["seq"] == 0
            # Another connection cannot cancel it: ids are per connection, so the id is simply unknown there.
            for msg_id in ("victim", "never-sent"):
                await theirs.send_json({"type": "cancel", "id": msg_id})
                m = await receive(theirs)
                assert m["type"] == "error" and m["id"] == msg_id and m["error"]["code"] == "not_found", m
            assert (await receive(mine))["type"] == "chunk"  # it streams on
            assert not seen.closed.is_set()
            # A model the key may not use: refused before anything streams.
            await theirs.send_json({**stream("nope"), "model": "test/slow", "op": "encode"})
            m = await receive(theirs)
            assert m["type"] == "error" and m["id"] == "nope" and m["error"]["code"] == "forbidden", m
            for bad, words in (({**stream("x"), "stream": "yes"}, "stream"),
                               ({"type": "cancel", "id": "x", "extra": 1}, "extra"),
                               ({"type": "cancel"}, "id")):
                await theirs.send_json(bad)
                m = await receive(theirs)
                assert m["type"] == "error" and m["error"]["code"] == "bad_request" and words in m["error"]["message"]
            # A plain request is not a stream: it is not cancelled, its result still comes.
            await mine.send_json(plain("slow", model="test/slow"))
            await mine.send_json({"type": "cancel", "id": "slow"})
            while (m := await receive(mine))["type"] == "chunk":
                pass
            assert m["type"] == "error" and m["id"] == "slow" and "does not stream" in m["error"]["message"], m
            release.set()
            while (m := await receive(mine))["type"] == "chunk":
                pass
            assert m["type"] == "result" and m["id"] == "slow", m
            await mine.send_json({"type": "cancel", "id": "victim"})
            while (m := await receive(mine))["type"] == "chunk":
                pass
            assert m == {"type": "cancelled", "id": "victim"}
            await until(seen.closed.is_set, 10, "the generator's finally ran")


async def test_streams_count_against_the_in_flight_cap_until_they_end(nats_server: NatsServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "MAX_IN_FLIGHT", 3)
    seen = Watched()
    async with gateway(nats_server.url) as gw, worker(nats_server.url, seen.handler(delay_s=0.2)):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            for i in range(3):
                await ws.send_json(stream(f"s{i}"))
            await ws.send_json(plain("extra"))
            while (m := await receive(ws))["id"] != "extra":
                assert m["type"] == "chunk"
            assert m["type"] == "error" and m["error"]["code"] == "too_many_in_flight", m
            await ws.send_json({"type": "cancel", "id": "s0"})
            while (m := await receive(ws))["type"] != "cancelled":
                pass
            await ws.send_json(stream("after"))  # one slot free again
            while (m := await receive(ws))["id"] != "after":
                pass
            assert m["type"] == "chunk" and m["seq"] == 0, m


def _server_socket_buffer(gw: Any) -> int:
    """Bytes the gateway's transport holds for the one open WebSocket (aiohttp's own buffer, not the kernel's)."""
    app = gw.running._runners[0].app
    [ws] = app[websocket.WEBSOCKETS]
    return ws._writer.transport.get_write_buffer_size()  # a test looking inside aiohttp


async def test_a_slow_reader_gets_a_bounded_buffer_then_a_gap(nats_server: NatsServer,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "MAX_BUFFERED", 8)
    monkeypatch.setattr(websocket, "SEND_STALL_S", 600.0)  # this reader comes back
    monkeypatch.setattr(websocket, "PING_S", 600.0)  # and answers no ping while it reads nothing
    big = "x" * 65_536
    seen = Watched()
    async with gateway(nats_server.url) as gw, worker(nats_server.url, seen.handler(big, delay_s=0.001)):
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN, max_msg_size=0) as ws:
            await ws.send_json(stream("s"))
            # The client reads nothing while the worker makes far more than every buffer on the way holds.
            # (aiohttp's client stops reading its socket past 64 KiB unread; a receive window that is
            # not read from does not grow past its start, and the kernel's send buffer stops at tcp_wmem's 4 MiB)
            await until(lambda: seen.produced >= 160, 120, "the worker made 10 MiB")
            # The kernel takes no more (asyncio holds what it refused), and what is held stays bounded.
            assert 0 < _server_socket_buffer(gw) <= 2 * websocket.SEND_BUFFER_BYTES + len(big) + 1024
            seqs, end = [], None
            while end is None:
                m = await receive(ws)
                if m["type"] == "chunk":
                    seqs.append(m["seq"])
                else:
                    end = m
            assert seqs == list(range(len(seqs))) and len(seqs) < seen.produced  # in order, no hole: cut short
            assert end["type"] == "error" and end["error"]["code"] == "stream_gap" and end["chunks"] == len(seqs)
            await until(seen.closed.is_set, 10, "the generator's finally ran")


async def test_a_client_that_stops_reading_is_dropped_and_its_stream_cancelled(
        nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "SEND_STALL_S", 1.0)
    big = "x" * 65_536
    seen = Watched()
    async with gateway(nats_server.url) as gw, worker(nats_server.url, seen.handler(big, delay_s=0.001)) as w:
        await gw.wait_for_workers(ECHO)
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN, max_msg_size=0) as ws:
            await ws.send_json(stream("s"))
            await until(seen.closed.is_set, 60, "the generator's finally ran: the stalled client was dropped")
            await until(lambda: w.in_flight == 0, 10, "the worker let go of the item")
            await until(lambda: not gw.running._runners[0].app[websocket.WEBSOCKETS], 10, "the socket is gone")
            while True:  # what was on its way, then the end
                msg = await asyncio.wait_for(ws.receive(), 20)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                assert msg.json()["type"] == "chunk"
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR)
        assert (await gw.call("GET", "/healthz")).status == 200


async def test_a_stream_cancelled_during_its_hold_stays_a_queued_job(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            await ws.send_json(stream("held", "still runs", wait=30, request_id="held-job"))
            await until(lambda: gw.state.holds._held[ECHO] == 1, 10, "the stream is held")
            await ws.send_json({"type": "cancel", "id": "held"})
            assert (await receive(ws)) == {"type": "cancelled", "id": "held"}
        # Accepted work is never lost: the job runs once a worker starts, its record gets the result.
        async with worker(nats_server.url, tokens):
            r = await job_final(gw, "held-job")
        assert r.body["state"] == "succeeded", r.body
        assert r.body["result"]["items"] == [{"index": 0, "text": "still"}, {"index": 0, "text": " runs"}]
