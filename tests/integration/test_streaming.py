"""Streaming through the queue (issue 9 §2), against a real nats-server, gateway and workers.

Generator handlers stream their chunks to the gateway's inbox; the gateway forwards them as SSE on
POST /v1/{op}/{model} with `Accept: text/event-stream`. Cancels reach the worker over NATS, and a
worker SIGKILLed mid-stream either retries unseen (nothing sent yet) or ends the stream with an error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from dataplane import (
    ADMIN,
    ECHO,
    GatewayUnderTest,
    copy_manifests,
    gateway,
    job_final,
    kill,
    until,
    worker,
    worker_process,
)

from switchyard.messages import Chunk, Result
from switchyard.worker.handlers import tokens

pytestmark = pytest.mark.asyncio
SSE = {**ADMIN, "Accept": "text/event-stream"}


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) from a text/event-stream body, as a browser's EventSource reads it."""
    name, data = "message", b""
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield name, orjson.loads(data)
            name, data = "message", b""
        elif line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data += line[6:]


async def stream_all(gw: GatewayUnderTest, body: dict[str, Any], model: str = "test/echo",
                     op: str = "generate", headers: dict[str, str] | None = None) -> list[tuple[str, Any]]:
    async with gw.http.post(f"{gw.url}/v1/{op}/{model}", json=body, headers={**SSE, **(headers or {})}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        return [ev async for ev in events(resp)]


async def test_tokens_stream_in_order_then_done(nats_server) -> None:  # type: ignore[no-untyped-def]
    async with gateway(nats_server.url) as gw, worker(nats_server.url, tokens):
        await gw.wait_for_workers(ECHO)
        got = await stream_all(gw, {"items": [{"prompt": "the quick brown fox"}]})
        assert got == [
            ("chunk", {"seq": 0, "payload": {"index": 0, "text": "the"}}),
            ("chunk", {"seq": 1, "payload": {"index": 0, "text": " quick"}}),
            ("chunk", {"seq": 2, "payload": {"index": 0, "text": " brown"}}),
            ("chunk", {"seq": 3, "payload": {"index": 0, "text": " fox"}}),
            ("done", {"id": got[-1][1]["id"], "chunks": 4, "usage": {"input_tokens": 4, "output_tokens": 4},
                      "timing": got[-1][1]["timing"]}),
        ]
        assert set(got[-1][1]["timing"]) == {"queue_ms", "compute_ms", "first_ms"}
        assert got[-1][1]["timing"]["first_ms"] <= got[-1][1]["timing"]["compute_ms"]
        assert 'switchyard_gateway_time_to_first_token_seconds_count{machine_profile="cpu",model="test/echo"} 1.0' \
            in await gw.metrics()
        # The same handler without Accept: text/event-stream answers every chunk as one result.
        r = await gw.infer(op="generate", items=[{"prompt": "a b"}])
        assert r.status == 200 and r.body["items"] == [{"index": 0, "text": "a"}, {"index": 0, "text": " b"}]


async def test_non_generator_handler_streams_its_items(nats_server) -> None:  # type: ignore[no-untyped-def]
    from switchyard.worker.handlers import echo

    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        got = await stream_all(gw, {"items": [{"text": "x"}, {"text": "y"}]}, op="encode")
        assert [e for e, _ in got] == ["chunk", "chunk", "done"]
        assert [d["payload"] for _, d in got[:2]] == [{"text": "x"}, {"text": "y"}]


async def test_failure_before_any_chunk_is_an_error_event(nats_server) -> None:  # type: ignore[no-untyped-def]
    from switchyard.worker.errors import PermanentError

    async def refuse(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
        raise PermanentError("no such prompt")
        yield  # a generator

    async with gateway(nats_server.url) as gw, worker(nats_server.url, refuse):
        await gw.wait_for_workers(ECHO)
        got = await stream_all(gw, {"items": [{"prompt": "p"}]})
        assert got == [("error", {"error": {"code": "invalid_input", "message": "no such prompt"}, "chunks": 0})]


async def test_failure_mid_stream_ends_with_an_error_and_is_not_retried(nats_server) -> None:  # type: ignore[no-untyped-def]
    runs: list[int] = []

    async def breaks(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
        runs.append(ctx.attempt)
        yield "one"
        raise RuntimeError("secret /path/to/weights")

    async with gateway(nats_server.url) as gw, worker(nats_server.url, breaks) as w:
        await gw.wait_for_workers(ECHO)
        got = await stream_all(gw, {"items": [{"prompt": "p"}]})
        assert got[0] == ("chunk", {"seq": 0, "payload": "one"})
        assert got[1][0] == "error" and got[1][1]["error"]["code"] == "worker_error"
        assert "secret" not in got[1][1]["error"]["message"] and got[1][1]["error"]["error_id"]
        assert len(got) == 2
        await until(lambda: w.in_flight == 0, 10, "item settled")
        assert runs == [1]  # chunks were sent: a retry would show the client a second stream


async def test_streamed_job_202_then_readable_joined(nats_server) -> None:  # type: ignore[no-untyped-def]
    async with gateway(nats_server.url) as gw:
        async with gw.http.post(f"{gw.url}/v1/generate/test/echo", json={"items": [{"prompt": "a b c"}]},
                                headers=SSE) as resp:
            assert resp.status == 202
            job = (await resp.json())["job_id"]
        async with worker(nats_server.url, tokens):
            r = await job_final(gw, job)
        assert r.body["state"] == "succeeded"
        assert r.body["result"]["items"] == [{"index": 0, "text": "a"}, {"index": 0, "text": " b"},
                                             {"index": 0, "text": " c"}]


async def test_prefer_wait_streams_once_a_worker_starts(nats_server) -> None:  # type: ignore[no-untyped-def]
    async with gateway(nats_server.url) as gw:
        task = asyncio.create_task(stream_all(gw, {"items": [{"prompt": "cold start"}]},
                                              headers={"Prefer": "wait=15"}))
        await until(lambda: gw.state.holds._held[ECHO] == 1, 5, "the request is held")
        async with worker(nats_server.url, tokens):
            got = await asyncio.wait_for(task, 20)
        assert [d.get("payload", {}).get("text") for e, d in got if e == "chunk"] == ["cold", " start"]
        assert got[-1][0] == "done"


class Watched:
    """What a handler under test did, for the test to wait on (the handler runs in this process)."""

    def __init__(self) -> None:
        self.produced = 0
        self.closed = threading.Event()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_client_disconnect_stops_the_generator(nats_server, kind: str) -> None:  # type: ignore[no-untyped-def]
    seen = Watched()

    async def agen(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
        try:
            while True:
                seen.produced += 1
                yield seen.produced
                await asyncio.sleep(0.05)
        finally:
            seen.closed.set()

    def sgen(items: list[Any], ctx: Any) -> Iterator[Any]:
        try:
            while True:
                seen.produced += 1
                yield seen.produced
                time.sleep(0.05)
        finally:
            seen.closed.set()

    async with gateway(nats_server.url) as gw, worker(nats_server.url, agen if kind == "async" else sgen) as w:
        await gw.wait_for_workers(ECHO)
        resp = await gw.http.post(f"{gw.url}/v1/generate/test/echo", json={"items": ["go"]}, headers=SSE)
        got = 0
        async for _name, _ in events(resp):
            got += 1
            if got == 3:
                break
        resp.close()  # the client goes away mid-stream
        await until(seen.closed.is_set, 10, "the generator's finally ran")
        await until(lambda: w.in_flight == 0, 10, "the worker let go of the item")
        produced = seen.produced
        # The stream was acked and is over: nothing is pulled again, the generator makes no more chunks.
        await until(lambda: gw.state.registry.live()[0].in_flight == 0, 10, "heartbeat shows nothing in flight")
        assert seen.produced == produced
        assert 'switchyard_gateway_client_disconnects_total 1.0' in await gw.metrics()


async def test_sigkill_after_chunks_were_sent_ends_with_an_error(nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with gateway(nats_server.url) as gw:
        proc = worker_process(nats_server.url, "handlers_for_tests:tick_forever", "test/echo", "--ack-wait", "60")
        try:
            await gw.wait_for_workers(ECHO)
            async with gw.http.post(f"{gw.url}/v1/generate/test/echo", json={"items": ["go"]},
                                    headers=SSE) as resp:
                got: list[tuple[str, Any]] = []
                async for ev in events(resp):
                    got.append(ev)
                    if len(got) == 2:
                        await asyncio.to_thread(kill, proc)
            assert [e for e, _ in got[:2]] == ["chunk", "chunk"]
            assert all(e == "chunk" for e, _ in got[:-1])
            name, data = got[-1]
            assert name == "error" and data["error"]["code"] == "worker_lost"
            assert data["chunks"] == len(got) - 1
        finally:
            kill(proc)


async def test_sigkill_before_the_first_chunk_is_retried_unseen(nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from handlers_for_tests import stall_first_attempt

    marker = tmp_path / "attempt1"
    async with gateway(nats_server.url) as gw:
        proc = worker_process(nats_server.url, "handlers_for_tests:stall_first_attempt", "test/echo",
                              "--ack-wait", "2")
        try:
            await gw.wait_for_workers(ECHO)
            task = asyncio.create_task(stream_all(gw, {"items": ["go"], "params": {"marker": str(marker)}}))
            await until(marker.exists, 15, "attempt 1 holds the item")
            await asyncio.to_thread(kill, proc)
            async with worker(nats_server.url, stall_first_attempt):
                got = await asyncio.wait_for(task, 30)
        finally:
            kill(proc)
    assert got[:-1] == [("chunk", {"seq": i, "payload": {"i": i, "attempt": 2}}) for i in range(5)]
    assert got[-1][0] == "done" and got[-1][1]["chunks"] == 5


async def test_reordered_duplicated_and_missing_chunks(nats_server, nats_client) -> None:  # type: ignore[no-untyped-def]
    """A real NATS connection never reorders or drops one publisher's messages, so the faults are
    made by hand: chunks published straight to the stream's inbox in a bad order (a fault injector)."""
    from switchyard.gateway.resolve import resolve
    from switchyard.gateway.streaming import ChunkStream
    from switchyard.messages import WorkItem

    async with gateway(nats_server.url) as gw:
        st = gw.state
        res = resolve(st.table(), "generate", "test/echo", key=None)

        async def play(seqs: list[int], final_at: int) -> list[Any]:
            item = WorkItem(id="x", op="generate", model="test/echo", bundle="default", machine_profile="cpu",
                            pool="default", items=[1], deadline=time.time() + 10)
            stream = ChunkStream(st, item, res)
            assert item.reply is not None
            for s in seqs:
                c = Chunk("x", s, payload=s, final=(s == final_at), worker="w")
                await nats_client.publish(item.reply, c.encode())
            await nats_client.flush()
            try:
                return [(c.payload, c.final, c.error.code if c.error else None) async for c in stream]
            finally:
                await stream.aclose()

        assert await play([2, 0, 1, 1, 0, 3, 2], 3) == [(0, False, None), (1, False, None), (2, False, None),
                                                          (None, True, None)]
        assert await play([0, 2, 3], 3) == [(0, False, None), (None, True, "stream_gap")]
        # A whole Result on the inbox (a handler that does not stream) reads as its items.
        item = WorkItem(id="y", op="generate", model="test/echo", bundle="default", machine_profile="cpu",
                        pool="default", items=[1], deadline=time.time() + 10)
        stream = ChunkStream(st, item, res)
        await nats_client.publish(item.reply, Result("y", True, items=["a", "b"]).encode())
        assert [c.payload async for c in stream] == ["a", "b", None]


async def test_a_stream_survives_a_config_hot_reload(nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = copy_manifests(tmp_path / "config")
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, tokens):
        await gw.wait_for_workers(ECHO)
        epoch = gw.state.table().epoch
        async with gw.http.post(f"{gw.url}/v1/generate/test/echo", headers=SSE,
                                json={"items": [{"prompt": "one two three four five six"}],
                                      "params": {"delay_s": 0.2}}) as resp:
            got: list[tuple[str, Any]] = []
            async for ev in events(resp):
                got.append(ev)
                if len(got) == 1:  # mid-stream: the routing table changes under it
                    with open(config / "upstreams.yaml", "a") as f:
                        f.write("\n# touched\n---\napiVersion: switchyard.dev/v1alpha1\nkind: Upstream\n"
                                "metadata: {name: extra}\nspec:\n  model: test/extra\n  operations: [encode]\n"
                                "  machineProfiles: [cpu]\n  workers: {service: extra}\n")
                    await until(lambda: gw.state.table().epoch > epoch, 10, "the new table installed")
        assert [d["payload"]["text"] for e, d in got if e == "chunk"] == \
            ["one", " two", " three", " four", " five", " six"]
        assert got[-1][0] == "done"


async def test_a_consumer_too_slow_ends_the_stream_instead_of_buffering_without_bound(
        nats_server, nats_client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from switchyard.gateway import streaming
    from switchyard.gateway.resolve import resolve
    from switchyard.messages import WorkItem

    monkeypatch.setattr(streaming, "MAX_BUFFERED", 4)
    async with gateway(nats_server.url) as gw:
        res = resolve(gw.state.table(), "generate", "test/echo", key=None)
        item = WorkItem(id="z", op="generate", model="test/echo", bundle="default", machine_profile="cpu",
                        pool="default", items=[1], deadline=time.time() + 10)
        stream = streaming.ChunkStream(gw.state, item, res)
        for s in range(10):  # nobody reads meanwhile
            await nats_client.publish(item.reply, Chunk("z", s, payload=s, worker="w").encode())
        await nats_client.flush()
        await until(lambda: stream._overflow, 5, "the buffer overflowed")
        got = [(c.payload, c.error.code if c.error else None) async for c in stream]
        assert got == [(0, None), (1, None), (2, None), (3, None), (None, "stream_gap")]


async def test_a_stream_cancelled_while_queued_never_starts(nats_server, nats_client) -> None:  # type: ignore[no-untyped-def]
    from switchyard.subjects import WORK_STREAM

    started: list[str] = []

    async def agen(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
        started.append(items[0])
        while True:
            yield items[0]
            await asyncio.sleep(0.05)

    async with gateway(nats_server.url) as gw, worker(nats_server.url, agen, concurrency=1):
        await gw.wait_for_workers(ECHO)
        first = await gw.http.post(f"{gw.url}/v1/generate/test/echo", json={"items": ["first"]}, headers=SSE)
        async for _ in events(first):
            break  # the only slot is busy with it now
        second = await gw.http.post(f"{gw.url}/v1/generate/test/echo", json={"items": ["second"]}, headers=SSE)
        assert second.status == 200  # headers sent: the stream is open, the item queued behind the first
        second.close()
        js = nats_client.jetstream()

        async def settled() -> bool:
            info = await js.consumer_info(WORK_STREAM, ECHO.consumer)
            return info.num_pending == 0 and info.num_ack_pending == 0

        # The cancel of the second goes out while it waits; then the first one is let go of too.
        deadline = time.monotonic() + 10
        while "switchyard_gateway_client_disconnects_total 1.0" not in await gw.metrics():
            assert time.monotonic() < deadline, "the gateway never noticed the second client leave"
            await asyncio.sleep(0.05)
        first.close()
        deadline = time.monotonic() + 15
        while not await settled():
            assert time.monotonic() < deadline, "items not settled"
            await asyncio.sleep(0.1)
        assert started == ["first"]
