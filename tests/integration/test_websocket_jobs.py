"""The jobs API over GET /v1/ws (`"async": true`, job.get, jobs.list, job.cancel, job.delete), tried as a
hostile tenant. Real nats-server, the production gateway and the worker runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from dataplane import ECHO, ECHO_ONLY, GatewayUnderTest, blocking_handler, gateway, until, worker
from test_websocket import OTHER, infer, receive

from switchyard.gateway import websocket
from switchyard.natsserver import NatsServer

FINAL = ("succeeded", "failed", "expired", "cancelled")


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


class Socket:
    """One connection; `call` sends a message and returns the answer with its id (nothing else is in flight)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.n = ws, 0

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        self.n += 1
        msg_id = f"m{self.n}"
        await self.ws.send_json({"type": type_, "id": msg_id, **fields})
        answer = await receive(self.ws)
        assert answer["id"] == msg_id, answer
        return answer

    async def ids(self, **fields: Any) -> list[str]:
        answer = await self.call("jobs.list", **fields)
        assert answer["type"] == "jobs", answer
        return [j["id"] for j in answer["jobs"]]

    async def final(self, job_id: str, timeout: float = 20) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            answer = await self.call("job.get", job_id=job_id)
            assert answer["type"] == "job", answer
            if answer["job"]["state"] in FINAL:
                return answer["job"]
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} not final after {timeout}s: {answer}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def socket(gw: GatewayUnderTest, headers: dict[str, str]) -> AsyncIterator[Socket]:
    async with gw.http.ws_connect(gw.url + "/v1/ws", headers=headers) as ws:
        yield Socket(ws)


def refused(answer: dict[str, Any], status: int, code: str) -> bool:
    return answer["type"] == "error" and answer["status"] == status and answer["error"]["code"] == code


async def test_async_with_a_live_worker_answers_a_job_the_worker_runs(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo), socket(gw, ECHO_ONLY) as s:
        await gw.wait_for_workers(ECHO)
        await s.ws.send_json(infer("a1", text="later", request_id="wa-1", **{"async": True}))
        acc = await receive(s.ws)
        assert acc["type"] == "accepted" and acc["job_id"] == "wa-1" and acc["status"] == "queued", acc
        job = await s.final("wa-1")
        assert job["state"] == "succeeded" and job["result"]["items"] == [{"text": "later"}]
        # Without the flag the same live lane answers at once, and says so.
        await s.ws.send_json(infer("a2", request_id="wa-2"))
        assert (await receive(s.ws))["type"] == "result"
        # `async` with `wait`: the result when it comes within the hold (Prefer: respond-async, wait=N).
        await s.ws.send_json(infer("a3", request_id="wa-3", wait=10, **{"async": True}))
        assert (await receive(s.ws))["type"] == "result"
        assert (await s.final("wa-3"))["state"] == "succeeded"  # a job all the same
        # Refused, with nothing queued: a job that streams, the flag misspelled or not a boolean.
        for bad in ({"stream": True, "async": True}, {"respond_async": True}, {"async": "yes"}, {"async": 1}):
            await s.ws.send_json(infer("bad", request_id="wa-bad", **bad))
            assert refused(await receive(s.ws), 400, "bad_request"), bad
        assert "wa-bad" not in await s.ids()


async def test_jobs_list_shows_the_keys_tenant_only_with_the_http_filters_and_cursor(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, socket(gw, ECHO_ONLY) as mine, socket(gw, OTHER) as theirs:
        for i in range(3):  # no worker: every job stays queued
            await mine.ws.send_json(infer(f"i{i}", request_id=f"j-{i}"))
            assert (await receive(mine.ws))["type"] == "accepted"
            await asyncio.sleep(0.01)  # distinct creation times: "newest first" is well defined
        for rid in ("j-0", "o-1"):  # j-0 again, in another tenant: another job
            await theirs.ws.send_json(infer(rid, request_id=rid))
            assert (await receive(theirs.ws))["type"] == "accepted"
        assert await mine.ids() == ["j-2", "j-1", "j-0"]
        assert await theirs.ids() == ["o-1", "j-0"]

        page1 = await mine.call("jobs.list", limit=2)
        assert [j["id"] for j in page1["jobs"]] == ["j-2", "j-1"] and page1["next_cursor"]
        page2 = await mine.call("jobs.list", limit=2, cursor=page1["next_cursor"])
        assert [j["id"] for j in page2["jobs"]] == ["j-0"] and page2["next_cursor"] is None
        assert await theirs.ids(cursor=page1["next_cursor"]) == []  # a position, not a grant

        assert await mine.ids(state=["succeeded"]) == []
        assert await mine.ids(state=["queued", "running"]) == ["j-2", "j-1", "j-0"]
        assert await mine.ids(model="test/gpu") == [] and await mine.ids(kind="plan") == []
        assert await mine.ids(since=9999999999) == [] and len(await mine.ids(until=9999999999)) == 3

        async with socket(gw, {"Authorization": "Bearer admin-key-0123456789abcdef"}) as admin:
            assert await admin.ids(tenant="echo-only") == ["j-2", "j-1", "j-0"]
            assert refused(await admin.call("jobs.list", tenant="a.b"), 400, "bad_request")
        assert refused(await theirs.call("jobs.list", tenant="echo-only"), 403, "forbidden")
        assert len(await mine.ids(limit=500)) == 3  # the largest page
        for bad in ({"state": ["done"]}, {"state": "queued"}, {"limit": 0}, {"limit": 501}, {"limit": 2.5},
                    {"limit": 10**30}, {"limit": True},
                    {"kind": "batch"}, {"since": -1}, {"until": -5}, {"cursor": "zz"}, {"cursor": "x" * 600},
                    {"state": ["queued"] * 17}, {"priority": 1}):
            assert refused(await mine.call("jobs.list", **bad), 400, "bad_request"), bad


async def test_a_cancelled_queued_job_never_runs_and_another_tenant_cannot_touch_it(nats_server: NatsServer) -> None:
    ran: list[str] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        ran.append(ctx.request_id)
        return items

    async with gateway(nats_server.url) as gw, socket(gw, ECHO_ONLY) as mine, socket(gw, OTHER) as theirs:
        async def hostile() -> list[dict[str, Any]]:
            out = []
            for op in ("job.get", "job.cancel", "job.delete"):
                answer = await theirs.call(op, job_id="q-1")
                out.append({k: v for k, v in answer.items() if k != "id"})
            return out

        before = await hostile()  # q-1 does not exist yet
        assert all(a["status"] == 404 and a["error"]["code"] == "unknown_job" for a in before), before
        await mine.ws.send_json(infer("i1", request_id="q-1"))
        assert (await receive(mine.ws))["type"] == "accepted"
        assert await hostile() == before  # exactly what an unknown id gets
        assert refused(await theirs.call("job.cancel", job_id="q-1", tenant="echo-only"), 404, "unknown_job")

        open_ = await mine.call("job.delete", job_id="q-1")
        assert refused(open_, 409, "job_not_finished") and "queued" in open_["error"]["message"]
        out = await mine.call("job.cancel", job_id="q-1")
        assert out["type"] == "job" and out["cancelled"] is True and out["job"]["state"] == "cancelled", out
        assert out["job"]["result"]["error"]["code"] == "cancelled" and out["message"] == "the job will not run"

        await mine.ws.send_json(infer("i2", request_id="q-2"))
        assert (await receive(mine.ws))["type"] == "accepted"
        async with worker(nats_server.url, record):
            assert (await mine.final("q-2"))["state"] == "succeeded"  # queued behind q-1 on the lane
            await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 0, 10, "the lane is empty")
        assert ran == ["q-2"]  # q-1 was pulled and skipped, never run

        again = await mine.call("job.cancel", job_id="q-1")
        assert again["cancelled"] is False and "already ended" in again["message"]
        assert await hostile() == before
        assert await mine.call("job.delete", job_id="q-1") == {"type": "deleted", "id": f"m{mine.n}",
                                                               "job_id": "q-1"}
        assert refused(await mine.call("job.get", job_id="q-1"), 404, "unknown_job")
        for bad in ("", "a/b", "x" * 200, "theirs.q-1"):  # as over HTTP and gRPC: no such job
            assert refused(await mine.call("job.cancel", job_id=bad), 404, "unknown_job"), bad
        for bad in ({}, {"job_id": 1}, {"job_id": "x" * 1025}):
            assert refused(await mine.call("job.cancel", **bad), 400, "bad_request"), bad
        # A stream's `cancel` is not a job's: it names a request in flight on this connection.
        assert refused(await mine.call("cancel"), 404, "not_found")


async def test_cancelling_a_running_job_stops_its_handler_on_the_worker(nats_server: NatsServer) -> None:
    forever, started, stopped = blocking_handler()  # stopped: the cancel reached the handler on the worker

    async with gateway(nats_server.url) as gw, worker(nats_server.url, forever) as w, socket(gw, ECHO_ONLY) as s:
        await gw.wait_for_workers(ECHO)
        await s.ws.send_json(infer("r1", request_id="run-1", **{"async": True}))
        assert (await receive(s.ws))["status"] == "queued"
        await asyncio.wait_for(started.wait(), 10)
        assert (await s.call("job.get", job_id="run-1"))["job"]["state"] == "running"
        async with socket(gw, OTHER) as theirs:
            assert refused(await theirs.call("job.cancel", job_id="run-1"), 404, "unknown_job")
        assert not stopped.is_set()
        out = await s.call("job.cancel", job_id="run-1")
        assert out["cancelled"] is True and "told to stop" in out["message"]
        await asyncio.wait_for(stopped.wait(), 10)
        await until(lambda: w.in_flight == 0, 10, "the worker let the item go")
        job = await s.final("run-1")
        assert job["state"] == "cancelled" and job["attempts"] == 1


async def test_job_calls_count_against_the_in_flight_limit(nats_server: NatsServer, monkeypatch: Any) -> None:
    # A lower limit, so the test need not hold 32 requests: the rule is the same at any size.
    monkeypatch.setattr(websocket, "MAX_IN_FLIGHT", 2)
    async with gateway(nats_server.url) as gw, socket(gw, ECHO_ONLY) as s:
        # No worker: each request holds (Prefer: wait=30) and stays in flight.
        await s.ws.send_json(infer("h1", wait=30))
        await s.ws.send_json(infer("h2", wait=30))
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 2, 10, "both requests queued")
        assert refused(await s.call("jobs.list"), 429, "too_many_in_flight")
        async with worker(nats_server.url, echo):
            assert {(await receive(s.ws))["id"] for _ in range(2)} == {"h1", "h2"}
        assert (await s.call("jobs.list"))["type"] == "jobs"
