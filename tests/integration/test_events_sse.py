"""GET /v1/events against real NATS, a real gateway and a real worker: job.status events bridged from
the jobs bucket, capacity.update events, tenant isolation, and a Last-Event-ID resume after a dropped
connection that misses nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane import ADMIN, ECHO, ECHO_ONLY, OTHER, Events, events, gateway, job_final, until, worker

from switchyard.client import AsyncClient
from switchyard.gateway.events import MAX_STREAMS_PER_TENANT
from switchyard.natsserver import NatsServer
from switchyard.worker.handlers import echo


def states(evs: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["state"] for e in evs]


async def test_job_events_resume_after_a_dropped_connection_without_gaps(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as steady, events(gw, OTHER) as other:
        dropped = await gw.http.get(gw.url + "/v1/events", headers=ADMIN)
        first = Events(dropped)
        await asyncio.wait_for(first.opened.wait(), 10)
        r = await gw.infer(headers={"X-Request-ID": "ev-1"})
        assert r.status == 202
        await until(lambda: len(first.of("job.status", "ev-1")) == 1, 15, "the queued event")
        queued = first.of("job.status", "ev-1")[0]
        assert queued["data"]["state"] == "queued" and queued["data"]["kind"] == "item"
        assert queued["data"]["estimated_wait_s"] > 1  # the lane is cold: the learned (here default) ETA
        first.close()  # the connection drops; the job goes on
        async with worker(nats_server.url, echo):
            await job_final(gw, "ev-1")
            await until(lambda: states(steady.of("job.status", "ev-1")) == ["queued", "running", "succeeded"],
                        15, "every state on the steady connection")
            resumed = await gw.http.get(gw.url + "/v1/events", headers={**ADMIN, "Last-Event-ID": str(queued["id"])})
            assert resumed.status == 200
            back = Events(resumed)
            try:
                await until(lambda: len(back.of("job.status")) >= 2, 15, "the missed events after the resume")
                # Exactly what the steady connection saw after the last event the dropped one had: same ids, same data.
                after = [e for e in steady.of("job.status") if e["id"] > queued["id"]]
                assert back.of("job.status")[:len(after)] == after
                assert states(back.of("job.status", "ev-1")) == ["running", "succeeded"]
            finally:
                back.close()
            # The other tenant sees its own job's events and never ours.
            r = await gw.infer(headers={**OTHER, "X-Request-ID": "ev-other"})
            assert r.status == 200
            mine = await gw.call("POST", "/v1/encode/test/echo",
                                 headers={**OTHER, "X-Request-ID": "ev-other-job", "Prefer": "respond-async"},
                                 json={"items": [1]})
            assert mine.status == 202, mine.body
            await until(lambda: states(other.of("job.status", "ev-other-job"))[-1:] == ["succeeded"], 15,
                        "the other tenant's own job")
            assert {e["data"]["id"] for e in other.of("job.status")} == {"ev-other-job"}
            assert not steady.of("job.status", "ev-other-job")


async def test_capacity_events_and_bad_requests(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as admin, events(gw, OTHER) as other, \
            worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)

        def live(stream: Events) -> list[dict[str, Any]]:
            return [row for e in stream.of("capacity.update") for row in e["data"]["fleets"]
                    if row["pool"] == "default" and row["workers"] >= 1]

        try:
            await until(lambda: bool(live(admin)) and bool(live(other)), 20, "capacity events with the live worker")
        except AssertionError:
            raise AssertionError(f"admin saw {admin.events}, other saw {other.events}") from None
        assert "holders" in live(admin)[-1] and "holders" not in live(other)[-1]
        assert live(admin)[-1]["models"] == ["test/echo"]
        r = await gw.call("GET", "/v1/events", headers={**ADMIN, "Last-Event-ID": "not-a-number"})
        assert (r.status, r.body["error"]["code"]) == (400, "bad_request")
        r = await gw.call("GET", "/v1/events")
        assert (r.status, r.body["error"]["code"]) == (401, "unauthorized")
        # Each stream holds a consumer: a tenant has at most MAX_STREAMS_PER_TENANT open per gateway.
        held = [await gw.http.get(gw.url + "/v1/events", headers=ECHO_ONLY) for _ in range(MAX_STREAMS_PER_TENANT)]
        try:
            assert {resp.status for resp in held} == {200}
            r = await gw.call("GET", "/v1/events", headers=ECHO_ONLY)
            assert (r.status, r.body["error"]["code"]) == (429, "too_many_event_streams")
            assert (await gw.http.get(gw.url + "/v1/events", headers=OTHER)).status == 200  # another tenant's own cap
        finally:
            for resp in held:
                resp.close()


async def test_the_same_events_over_the_websocket_events_topic(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as sse:
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
            await ws.send_json({"type": "subscribe", "id": "e", "topic": "events"})
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            assert (await gw.infer(headers={"X-Request-ID": "ws-ev"})).status == 202
            got = await ws.receive_json(timeout=10)
            while got.get("event") != "job.status":
                got = await ws.receive_json(timeout=10)
            await until(lambda: bool(sse.of("job.status", "ws-ev")), 10, "the SSE event")
            first = sse.of("job.status", "ws-ev")[0]
            assert (got["id"], got["event_id"], got["data"]) == ("e", first["id"], first["data"])
            # Another tenant's subscription never sees it, and an admin cannot name another tenant here.
            await ws.send_json({"type": "subscribe", "id": "x", "topic": "events", "tenant": "other"})
            refused = await ws.receive_json(timeout=10)
            while refused.get("type") == "event":
                refused = await ws.receive_json(timeout=10)
            assert (refused["type"], refused["id"], refused["error"]["code"]) == ("error", "x", "bad_request")
        async with worker(nats_server.url, echo):
            await job_final(gw, "ws-ev")
            await until(lambda: states(sse.of("job.status", "ws-ev")) == ["queued", "running", "succeeded"], 15,
                        "every state over SSE")
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:  # resume after the first
            await ws.send_json({"type": "subscribe", "id": "r", "topic": "events", "last_event_id": first["id"]})
            seen: list[dict[str, Any]] = []
            while len([m for m in seen if m.get("event") == "job.status"]) < 2:
                seen.append(await ws.receive_json(timeout=10))
            jobs = [(m["event_id"], m["data"]["state"]) for m in seen if m.get("event") == "job.status"]
            assert jobs == [(e["id"], e["data"]["state"]) for e in sse.of("job.status", "ws-ev")[1:]]


async def test_the_sdk_follows_events_and_resumes_after_a_drop(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as sse, \
            AsyncClient(gw.url, "admin-key-0123456789abcdef") as sy:
        feed = sy.events()
        first_task = asyncio.ensure_future(feed.__anext__())
        await asyncio.sleep(0.5)  # the SDK's stream is open before the job changes
        assert (await gw.infer(headers={"X-Request-ID": "sdk-ev"})).status == 202
        first = await asyncio.wait_for(first_task, 15)
        while first.event != "job.status":
            first = await asyncio.wait_for(feed.__anext__(), 15)
        assert (first.data["id"], first.data["state"]) == ("sdk-ev", "queued")
        await feed.aclose()
        async with worker(nats_server.url, echo):
            await job_final(gw, "sdk-ev")
            await until(lambda: states(sse.of("job.status", "sdk-ev")) == ["queued", "running", "succeeded"], 15,
                        "every state over SSE")
        resumed = sy.events(last_event_id=first.id)
        got = []
        while len(got) < 2:
            event = await asyncio.wait_for(resumed.__anext__(), 15)
            if event.event == "job.status":
                got.append((event.id, event.data["state"]))
        await resumed.aclose()
        assert got == [(e["id"], e["data"]["state"]) for e in sse.of("job.status", "sdk-ev")[1:]]
