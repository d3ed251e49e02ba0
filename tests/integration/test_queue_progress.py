"""job.progress against real NATS, a real gateway and a real worker: jobs waiting on a cold lane are
told their queue position and ETA over SSE and the WebSocket events topic, see them move when a
worker starts, and hear nothing more once running; another tenant sees none of it. Also the progress
lease between replicas, the 202 of a hold that ran out, and the SDK's on_progress."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import orjson
import pytest
from dataplane import ADMIN, OTHER, Events, events, gateway, job_final, until, worker
from handlers_for_tests import slow_echo

import switchyard.gateway.progress as progress_module
from switchyard.client import Accepted, AsyncClient, Job
from switchyard.gateway.events import PROGRESS
from switchyard.gateway.progress import (
    LEASE_KEY,
    LEASE_S,
    POSITION_SCAN_MAX,
    PROGRESS_EVERY_S,
    RESEND_S,
    take_lease,
)
from switchyard.jetstream import ensure_coldstart_bucket
from switchyard.natsserver import NatsServer
from switchyard.worker.handlers import echo

MINE = ["cold-0", "cold-1", "cold-2"]
WAITING = ("queued",)


def progress(stream: Events, job: str) -> list[dict[str, Any]]:
    return [e["data"] for e in stream.of("job.progress", job)]


def after_it_moved_on(stream: Events, job: str) -> list[dict[str, Any]]:
    """job.progress events of `job` that came after its first job.status saying it no longer waits."""
    moved = False
    late = []
    for e in stream.events:
        if e["data"].get("id") != job:
            continue
        if e["event"] == "job.status" and e["data"]["state"] not in WAITING:
            moved = True
        elif e["event"] == "job.progress" and moved:
            late.append(e["data"])
    return late


async def test_followers_see_position_and_eta_move_until_the_job_runs(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as mine, events(gw, OTHER) as theirs, \
            gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:
        await ws.send_json({"type": "subscribe", "id": "e", "topic": "events"})
        assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
        over_ws: list[dict[str, Any]] = []

        async def read_ws() -> None:
            while True:
                over_ws.append(await ws.receive_json())

        reader = asyncio.create_task(read_ws())
        try:
            # Three jobs of ours on the cold lane, then one of another tenant behind them.
            for job in MINE:
                r = await gw.infer(headers={"X-Request-ID": job}, params={"sleep": 2.5})
                assert r.status == 202, r.body
            r = await gw.call("POST", "/v1/encode/test/echo", headers={**OTHER, "X-Request-ID": "cold-theirs"},
                              json={"items": [{"text": "hi"}], "params": {"sleep": 2.5}})
            assert r.status == 202, r.body
            await until(lambda: all(progress(mine, job) for job in MINE) and progress(theirs, "cold-theirs"),
                        20, "the first job.progress of every job")
            first = {job: progress(mine, job)[0] for job in MINE}
            # Tenants take turns on a lane (docs/fairness.md): ours first, theirs, then our other two.
            assert [first[job]["queue_position"] for job in MINE] == [0, 2, 3]
            for event in first.values():
                assert event["state"] == "queued" and event["model"] == "test/echo"
                assert event["estimated_wait_s"] > 1  # the lane is cold: the learned (here default) ETA
            # The other tenant sees its own job, counted behind our first, and not one of our ids; we never see its.
            assert progress(theirs, "cold-theirs")[0]["queue_position"] == 1
            assert {e["data"]["id"] for e in theirs.events if e["event"].startswith("job.")} == {"cold-theirs"}
            assert not mine.of("job.progress", "cold-theirs") and not mine.of("job.status", "cold-theirs")
            # The SSE events have no id (a snapshot, not history): Last-Event-ID never points at one.
            assert all(e["id"] is None for e in mine.of("job.progress"))

            # The WebSocket events topic carries the same events, with event_id null.
            def ws_progress(job: str) -> list[dict[str, Any]]:
                return [m["data"] for m in over_ws if m.get("event") == "job.progress" and m["data"]["id"] == job]

            await until(lambda: all(ws_progress(job) for job in MINE), 15, "job.progress over the WebSocket")
            assert [ws_progress(job)[0]["queue_position"] for job in MINE] == [0, 2, 3]
            assert all(m["event_id"] is None and m["id"] == "e" for m in over_ws if m.get("event") == "job.progress")
            assert not [m for m in over_ws if m.get("data", {}).get("id") == "cold-theirs"]

            # A worker (one item at a time) starts: positions move up and the ETA falls before each job runs.
            async with worker(nats_server.url, slow_echo, concurrency=1):
                for job in MINE:
                    await job_final(gw, job, timeout=60)
                await job_final(gw, "cold-theirs", OTHER, timeout=60)
                last = progress(mine, "cold-2")
                assert min(e["queue_position"] for e in last) < 2, last
                assert min(e["estimated_wait_s"] for e in last) < first["cold-2"]["estimated_wait_s"], last
                assert any(e["estimated_wait_s"] == 1.0 for e in last), last  # "in line": a worker is live
                # <= 1: which tenant a starting worker serves first is not fixed, so theirs may run first.
                assert min(e["queue_position"] for e in progress(theirs, "cold-theirs")) <= 1
                # Once running (then final), a job hears no more progress, on either transport.
                for job in MINE:
                    assert not after_it_moved_on(mine, job), mine.events
                await until(lambda: all(mine.of("job.status", job)[-1:] and
                                        mine.of("job.status", job)[-1]["data"]["state"] == "succeeded"
                                        for job in MINE), 15, "the final job.status events")
                count = len(mine.of("job.progress")), len(over_ws)
                await asyncio.sleep(RESEND_S + 2 * PROGRESS_EVERY_S)  # a pass would have repeated them by now
                assert len(mine.of("job.progress")) == count[0]
                assert not [m for m in over_ws[count[1]:] if m.get("event") == "job.progress"]
        finally:
            reader.cancel()




async def test_one_replica_holds_the_progress_lease(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        kv = await ensure_coldstart_bucket(nc.jetstream())
        now = 1_000_000.0
        assert await take_lease(kv, "gw-a", now)
        assert not await take_lease(kv, "gw-b", now + 1)  # held: b stays quiet
        assert await take_lease(kv, "gw-a", now + 2)  # the holder renews
        assert not await take_lease(kv, "gw-b", now + 2 + LEASE_S - 0.1)
        assert await take_lease(kv, "gw-b", now + 2 + LEASE_S + 0.1)  # a stopped renewing: b takes over
        assert not await take_lease(kv, "gw-a", now + 2 + LEASE_S + 0.2)
        # Two replicas racing for one lapse: the compare-and-set lets exactly one win.
        later = now + 100
        won = await asyncio.gather(take_lease(kv, "gw-c", later), take_lease(kv, "gw-d", later))
        assert sorted(won) == [False, True]
        assert (await kv.get(LEASE_KEY)).value is not None
    finally:
        await nc.close()


async def test_two_gateways_one_computes_progress(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as a, gateway(nats_server.url) as b, events(b, ADMIN) as follower:
        assert (await a.infer(headers={"X-Request-ID": "twice"})).status == 202
        await until(lambda: len(progress(follower, "twice")) >= 2, 30, "two job.progress events")
        passes = [gw.running._runners[0].app[PROGRESS] for gw in (a, b)]
        # Whichever holds the lease sends; the other reads no lane and publishes nothing.
        assert sorted(p.published > 0 for p in passes) == [False, True]
        holder = orjson.loads((await a.state.dispatcher.coldstart.get(LEASE_KEY)).value)["owner"]
        assert holder == (a if passes[0].published else b).state.instance


async def test_a_hold_that_runs_out_answers_where_the_job_stands(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        assert (await gw.infer(headers={"X-Request-ID": "ahead"})).status == 202
        r = await gw.infer(headers={"X-Request-ID": "held", "Prefer": "wait=1"})
        assert r.status == 202 and r.headers["Preference-Applied"] == "wait=1", r.body
        assert (r.body["queue_position"], r.body["events"]) == (1, "/v1/events")
        assert r.body["estimated_wait_s"] > 1
        # A 202 without a hold reads no lane (it is on the admission path): GET /v1/jobs/{id} has the position.
        r = await gw.infer(headers={"X-Request-ID": "third"})
        assert "queue_position" not in r.body and r.body["events"] == "/v1/events"
        job = await gw.call("GET", "/v1/jobs/third", headers=ADMIN)
        assert (job.body["state"], job.body["queue_position"]) == ("queued", 2)
        assert "queue_note" not in job.body


async def test_the_sdk_reports_progress_while_it_waits(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, AsyncClient(gw.url, "admin-key-0123456789abcdef") as sy:
        polled: list[Job] = []
        held: list[Job] = []

        async def on_held(job: Job) -> None:  # a coroutine function is awaited
            held.append(job)

        # A job followed with wait_for_job, then a request held through the cold start (Prefer: wait) behind it.
        accepted = await sy.encode("test/echo", ["first"], request_id="sdk-job", respond_async=True)
        assert isinstance(accepted, Accepted) and accepted.raw["events"] == "/v1/events"
        following = asyncio.create_task(sy.wait_for_job(accepted, 60, poll_interval=0.5, on_progress=polled.append))
        holding = asyncio.create_task(sy.encode("test/echo", ["second"], request_id="sdk-held", wait_for_capacity=True,
                                                capacity_timeout=60, poll_interval=0.5, on_progress=on_held))
        await until(lambda: len(polled) >= 2 and len(held) >= 2, 30, "two progress callbacks of each")
        # The same figures pushed: AsyncClient.events() yields job.progress, without an id.
        feed = sy.events()
        pushed = await asyncio.wait_for(feed.__anext__(), 15)
        while pushed.event != "job.progress" or pushed.data["id"] != "sdk-held":
            pushed = await asyncio.wait_for(feed.__anext__(), 15)
        await feed.aclose()
        assert (pushed.id, pushed.data["queue_position"]) == (None, 1)
        assert {(j.id, j.state, j.queue_position) for j in polled} == {("sdk-job", "queued", 0)}
        assert {(j.id, j.state, j.queue_position) for j in held} == {("sdk-held", "queued", 1)}
        assert all(j.estimated_wait_s and j.estimated_wait_s > 1 for j in polled + held)
        async with worker(nats_server.url, echo):
            first = await asyncio.wait_for(following, 30)
            second = await asyncio.wait_for(holding, 30)
        assert first.items == [{"text": "first"}] and second.items == [{"text": "second"}]
        assert all(j.state != "succeeded" for j in polled + held)  # called until final, never with the result


async def test_a_job_past_the_counted_depth_says_so(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as follower:
        for i in range(POSITION_SCAN_MAX):
            assert (await gw.infer(headers={"X-Request-ID": f"deep-{i}"})).status == 202
        assert (await gw.infer(headers={"X-Request-ID": "deepest"})).status == 202
        job = await gw.call("GET", "/v1/jobs/deepest", headers=ADMIN)
        assert job.body["queue_position"] is None
        assert job.body["queue_note"] == f"more than {POSITION_SCAN_MAX} items ahead"
        last = await gw.call("GET", f"/v1/jobs/deep-{POSITION_SCAN_MAX - 1}", headers=ADMIN)
        assert last.body["queue_position"] == POSITION_SCAN_MAX - 1 and "queue_note" not in last.body
        # A pass reads the lane 50 deep, so it sends the 50th job its position and cannot name the 51st.
        await until(lambda: bool(progress(follower, f"deep-{POSITION_SCAN_MAX - 1}")), 15, "the 50th job's progress")
        assert progress(follower, f"deep-{POSITION_SCAN_MAX - 1}")[0]["queue_position"] == POSITION_SCAN_MAX - 1
        assert not progress(follower, "deepest")


async def test_lanes_past_one_pass_budget_are_read_in_the_next(nats_server: NatsServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "MAX_READS_PER_PASS", POSITION_SCAN_MAX)  # one lane a pass
    async with gateway(nats_server.url) as gw, events(gw, ADMIN) as follower:
        for model in ("test/echo", "test/slow"):  # two lanes
            r = await gw.infer(model, headers={"X-Request-ID": f"lane-{model[5:]}"})
            assert r.status == 202, r.body
        await until(lambda: bool(progress(follower, "lane-echo")) and bool(progress(follower, "lane-slow")), 20,
                    "progress on both lanes, one a pass")
        assert progress(follower, "lane-echo")[0]["queue_position"] == 0
        assert progress(follower, "lane-slow")[0]["queue_position"] == 0
