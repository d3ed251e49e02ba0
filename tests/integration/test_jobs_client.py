"""The SDK's jobs methods against a real gateway, NATS and worker: respond_async, deadline_s,
list_jobs, cancel_job, delete_job, capacity and the dead-letter calls, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dataplane import ECHO, gateway, worker

from switchyard.client import (
    Accepted,
    AsyncClient,
    Client,
    DeadlineUnreachable,
    Forbidden,
    JobCancelled,
    JobNotFinished,
    UnknownJob,
)
from switchyard.natsserver import NatsServer

ADMIN_KEY = "admin-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_the_sdk_drives_the_jobs_api(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, AsyncClient(gw.url, ADMIN_KEY) as sy:
        with pytest.raises(DeadlineUnreachable):  # cold lane: the learned ETA is 180 s
            await sy.encode("test/echo", ["x"], deadline_s=10)
        queued = await sy.encode("test/echo", ["q"], request_id="sdk-q")
        assert isinstance(queued, Accepted) and queued.status == "provisioning"
        with pytest.raises(JobNotFinished):
            await sy.delete_job("sdk-q")
        job = await sy.cancel_job("sdk-q")
        assert job.state == "cancelled" and job.raw["cancelled"] is True
        with pytest.raises(JobCancelled):
            job.unwrap()

        async with worker(nats_server.url, echo, concurrency=2):
            await gw.wait_for_workers(ECHO)
            acc = await sy.encode("test/echo", ["a"], request_id="sdk-a", respond_async=True)
            assert isinstance(acc, Accepted) and acc.status == "queued"
            out = await sy.wait_for_job(acc, 20, poll_interval=0.1)
            assert out.items == [{"text": "a"}]
            fleets = await sy.capacity()
            assert fleets[0]["capacity"] == 2 and "holders" in fleets[0]

        page = await sy.list_jobs(limit=1)
        assert [j.id for j in page.jobs] == ["sdk-a"] and page.next_cursor
        rest = await sy.list_jobs(limit=1, cursor=page.next_cursor)
        assert [j.id for j in rest.jobs] == ["sdk-q"] and rest.next_cursor is None
        assert [j.id for j in (await sy.list_jobs(state=["cancelled"])).jobs] == ["sdk-q"]
        done = (await sy.list_jobs(state="succeeded")).jobs[0]
        assert done.attempts == 1 and done.created_at and done.started_at and done.kind == "item"
        await sy.delete_job("sdk-a")
        with pytest.raises(UnknownJob):
            await sy.job("sdk-a")
        assert (await sy.dead_letters())["dead_letters"] == []
        assert await sy.requeue_dead_letters([12345]) == [
            {"id": 12345, "requeued": False, "message": "no such dead letter (already re-queued?)"}]

        def tenant_side() -> None:  # the blocking client, from another tenant
            with Client(gw.url, OTHER_KEY) as other:
                assert other.list_jobs().jobs == []
                with pytest.raises(UnknownJob):
                    other.cancel_job("sdk-q")
                with pytest.raises(Forbidden):
                    other.dead_letters()

        await asyncio.to_thread(tenant_side)
