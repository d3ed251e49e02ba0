"""POST /v1/jobs/{id}/cancel against real NATS, gateway and workers: a queued job never runs, a
running job's worker hears of it through NATS and its handler stops, a finished job stays as it was."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dataplane import ADMIN, ECHO, blocking_handler, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}
ASYNC = {"Prefer": "respond-async"}


async def test_a_queued_job_that_is_cancelled_never_runs(nats_server: NatsServer) -> None:
    ran: list[Any] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        ran.append(ctx.request_id)
        return items

    async with gateway(nats_server.url) as gw:
        assert (await gw.infer(headers={"X-Request-ID": "q-1"})).status == 202  # no worker: queued
        r = await gw.call("POST", "/v1/jobs/q-1/cancel", headers=ADMIN)
        assert r.status == 200 and r.body["cancelled"] is True and r.body["state"] == "cancelled", r.body
        assert r.body["result"]["error"]["code"] == "cancelled"
        assert (await gw.infer(headers={"X-Request-ID": "q-2"})).status == 202
        async with worker(nats_server.url, record):
            assert (await job_final(gw, "q-2")).body["state"] == "succeeded"  # queued after q-1 on the lane
            await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 0, 10, "the lane is empty")
        assert ran == ["q-2"]  # q-1 was pulled and skipped, not run
        assert (await gw.call("GET", "/v1/jobs/q-1", headers=ADMIN)).body["state"] == "cancelled"


async def test_a_running_async_handler_is_cancelled_through_nats(nats_server: NatsServer) -> None:
    forever, started, stopped = blocking_handler()  # stopped: the cancel reached the handler on the worker

    async with gateway(nats_server.url) as gw, worker(nats_server.url, forever) as w:
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer(headers={**ASYNC, "X-Request-ID": "run-1"})).status == 202
        await asyncio.wait_for(started.wait(), 10)
        assert (await gw.call("GET", "/v1/jobs/run-1", headers=ADMIN)).body["state"] == "running"
        assert (await gw.call("POST", "/v1/jobs/run-1/cancel", headers=OTHER)).status == 404  # not theirs
        r = await gw.call("POST", "/v1/jobs/run-1/cancel", headers=ADMIN)
        assert r.status == 200 and r.body["cancelled"] is True
        await asyncio.wait_for(stopped.wait(), 10)
        await until(lambda: w.in_flight == 0, 10, "the worker let the item go")
        body = (await job_final(gw, "run-1")).body
        assert body["state"] == "cancelled" and body["attempts"] == 1
        # Cancelling it again is a no-op that says so.
        again = await gw.call("POST", "/v1/jobs/run-1/cancel", headers=ADMIN)
        assert again.status == 200 and again.body["cancelled"] is False and "already ended" in again.body["message"]
        # Nothing is redelivered: the item was terminated, not left for another attempt.
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 0, 10, "the lane is empty")


async def test_a_sync_handler_sees_ctx_cancelled(nats_server: NatsServer) -> None:
    seen = threading.Event()
    entered = threading.Event()

    def polite(items: list[Any], ctx: Any) -> list[Any]:
        entered.set()
        for _ in range(600):  # up to 60 s, checking between steps as docs/jobs.md says
            if ctx.cancelled:
                seen.set()
                return []
            threading.Event().wait(0.1)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, polite):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer(headers={**ASYNC, "X-Request-ID": "sync-1"})).status == 202
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        assert (await gw.call("POST", "/v1/jobs/sync-1/cancel", headers=ADMIN)).body["cancelled"] is True
        assert await asyncio.get_running_loop().run_in_executor(None, seen.wait, 10)
        assert (await job_final(gw, "sync-1")).body["state"] == "cancelled"


async def test_cancelling_a_finished_job_changes_nothing(nats_server: NatsServer) -> None:
    def echo(items: list[Any], ctx: Any) -> list[Any]:
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer(headers={**ASYNC, "X-Request-ID": "done-1"})).status == 202
        assert (await job_final(gw, "done-1")).body["state"] == "succeeded"
        r = await gw.call("POST", "/v1/jobs/done-1/cancel", headers=ADMIN)
        assert r.status == 200 and r.body["cancelled"] is False and r.body["state"] == "succeeded"
        assert (await gw.call("GET", "/v1/jobs/done-1", headers=ADMIN)).body["result"]["items"] == [{"text": "hi"}]
        assert (await gw.call("POST", "/v1/jobs/nope/cancel", headers=ADMIN)).status == 404


async def test_a_request_holding_a_job_that_is_cancelled_answers_409(nats_server: NatsServer) -> None:
    started = asyncio.Event()

    async def forever(items: list[Any], ctx: Any) -> list[Any]:
        started.set()
        await asyncio.sleep(3600)
        return items

    async with gateway(nats_server.url) as gw:
        held = asyncio.create_task(gw.infer(headers={"Prefer": "wait=20", "X-Request-ID": "held-1"}))
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 1, 10, "the job is queued")
        async with worker(nats_server.url, forever):
            await asyncio.wait_for(started.wait(), 15)
            assert (await gw.call("POST", "/v1/jobs/held-1/cancel", headers=ADMIN)).body["cancelled"] is True
            r = await asyncio.wait_for(held, 15)
            assert r.status == 409 and r.body["error"]["code"] == "cancelled", r.body
            assert r.headers.get("Preference-Applied") == "wait=20"


async def test_an_admin_cancels_and_deletes_another_tenants_job_by_naming_the_tenant(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.call("POST", "/v1/encode/test/echo", headers={**OTHER, "X-Request-ID": "theirs"},
                          json={"items": [1]})
        assert r.status == 202
        assert (await gw.call("POST", "/v1/jobs/theirs/cancel", headers=ADMIN)).status == 404  # not the admin's
        r = await gw.call("POST", "/v1/jobs/theirs/cancel?tenant=other", headers=ADMIN)
        assert r.status == 200 and r.body["cancelled"] is True
        assert (await gw.call("GET", "/v1/jobs/theirs", headers=OTHER)).body["state"] == "cancelled"
        # ?tenant= from a tenant's key is ignored: the call acts on its own job (here: deletes it).
        assert (await gw.call("DELETE", "/v1/jobs/theirs?tenant=admin", headers=OTHER)).status == 200
        assert (await gw.call("GET", "/v1/jobs/theirs", headers=OTHER)).status == 404
