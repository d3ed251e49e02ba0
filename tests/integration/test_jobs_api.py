"""The jobs API against real NATS, gateway and workers: respond-async, GET /v1/jobs (isolation,
filters, pages), the richer GET /v1/jobs/{id}, DELETE, and job deadlines (refused at admission,
or expired in the queue)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dataplane import ADMIN, ECHO, copy_manifests, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}
OTHER_ROTATED = {"Authorization": "Bearer other-rotated-key-0123456789"}
ASYNC = {"Prefer": "respond-async"}


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_respond_async_answers_202_with_a_live_worker_and_the_job_succeeds(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(headers={**ASYNC, "X-Request-ID": "async-1"}, items=[{"text": "a"}])
        assert r.status == 202, r.body
        assert r.headers["Preference-Applied"] == "respond-async"
        assert r.headers["Location"] == "/v1/jobs/async-1"
        assert r.body["status"] == "queued" and r.body["job_id"] == "async-1"
        done = await job_final(gw, "async-1")
        body = done.body
        assert body["state"] == "succeeded" and body["result"]["items"] == [{"text": "a"}]
        assert body["kind"] == "item" and body["op"] == "encode" and body["attempts"] == 1
        assert body["created_at"] <= body["started_at"] <= body["updated_at"]
        # Without the preference, a live lane still answers at once with the result.
        sync = await gw.infer(items=[{"text": "b"}])
        assert sync.status == 200 and sync.body["items"] == [{"text": "b"}]
        # With wait=N too (RFC 7240 4.3): the answer when it comes within N s, and the job keeps it.
        both = await gw.infer(headers={"Prefer": "respond-async, wait=10", "X-Request-ID": "async-2"}, items=["c"])
        assert both.status == 200 and both.body["items"] == ["c"] and both.headers["Preference-Applied"] == "wait=10"
        assert (await job_final(gw, "async-2")).body["result"]["items"] == ["c"]


async def test_list_jobs_is_per_tenant_filtered_and_paged(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        for i in range(3):  # no worker: queued jobs
            assert (await gw.infer(headers={"X-Request-ID": f"adm-{i}"})).status == 202
        assert (await gw.call("POST", "/v1/encode/test/echo", headers={**OTHER, "X-Request-ID": "oth-0"},
                              json={"items": [1]})).status == 202
        # The same id from another tenant is another job.
        assert (await gw.call("POST", "/v1/encode/test/echo", headers={**OTHER, "X-Request-ID": "adm-0"},
                              json={"items": [2]})).status == 202

        mine = await gw.call("GET", "/v1/jobs", headers=ADMIN)
        assert mine.status == 200
        assert [j["id"] for j in mine.body["jobs"]] == ["adm-2", "adm-1", "adm-0"]  # newest first
        assert all(j["state"] == "queued" for j in mine.body["jobs"]) and mine.body["next_cursor"] is None
        theirs = await gw.call("GET", "/v1/jobs", headers=OTHER_ROTATED)  # another key of tenant "other"
        assert sorted(j["id"] for j in theirs.body["jobs"]) == ["adm-0", "oth-0"]
        assert {j["result"] for j in theirs.body["jobs"]} == {None}
        # A tenant cannot read, list, cancel or delete another's jobs: the same 404 as none.
        assert (await gw.call("GET", "/v1/jobs/adm-1", headers=OTHER)).status == 404
        assert (await gw.call("POST", "/v1/jobs/adm-1/cancel", headers=OTHER)).status == 404
        assert (await gw.call("DELETE", "/v1/jobs/adm-1", headers=OTHER)).status == 404
        refused = await gw.call("GET", "/v1/jobs?tenant=admin", headers=OTHER)
        assert refused.status == 403 and refused.body["error"]["code"] == "forbidden"
        # An admin names the tenant.
        seen = await gw.call("GET", "/v1/jobs?tenant=other", headers=ADMIN)
        assert sorted(j["id"] for j in seen.body["jobs"]) == ["adm-0", "oth-0"]

        page1 = await gw.call("GET", "/v1/jobs?limit=2", headers=ADMIN)
        assert [j["id"] for j in page1.body["jobs"]] == ["adm-2", "adm-1"] and page1.body["next_cursor"]
        page2 = await gw.call("GET", f"/v1/jobs?limit=2&cursor={page1.body['next_cursor']}", headers=ADMIN)
        assert [j["id"] for j in page2.body["jobs"]] == ["adm-0"] and page2.body["next_cursor"] is None

        assert (await gw.call("GET", "/v1/jobs?state=succeeded", headers=ADMIN)).body["jobs"] == []
        assert len((await gw.call("GET", "/v1/jobs?state=queued,running", headers=ADMIN)).body["jobs"]) == 3
        assert (await gw.call("GET", "/v1/jobs?model=test/gpu", headers=ADMIN)).body["jobs"] == []
        assert (await gw.call("GET", "/v1/jobs?since=9999999999", headers=ADMIN)).body["jobs"] == []
        assert len((await gw.call("GET", "/v1/jobs?until=9999999999", headers=ADMIN)).body["jobs"]) == 3
        for bad in ("state=done", "limit=0", "limit=501", "limit=x", "since=-1", "since=nan", "cursor=zz",
                    "priority=1", "kind=batch", "limit=%C2%B2", "state=,", "since=1e400"):
            r = await gw.call("GET", f"/v1/jobs?{bad}", headers=ADMIN)
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (bad, r.body)

        queued = await gw.call("GET", "/v1/jobs/adm-0", headers=ADMIN)
        assert queued.body["queue_position"] == 0 and queued.body["estimated_wait_s"] > 0
        assert (await gw.call("GET", "/v1/jobs/adm-2", headers=ADMIN)).body["queue_position"] == 2


async def test_delete_removes_a_finished_job_only(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        assert (await gw.infer(headers={"X-Request-ID": "del-1"})).status == 202
        open_job = await gw.call("DELETE", "/v1/jobs/del-1", headers=ADMIN)
        assert open_job.status == 409 and open_job.body["error"]["code"] == "job_not_finished"
        async with worker(nats_server.url, echo):
            assert (await job_final(gw, "del-1")).body["state"] == "succeeded"
        gone = await gw.call("DELETE", "/v1/jobs/del-1", headers=ADMIN)
        assert gone.status == 200 and gone.body == {"id": "del-1", "deleted": True}
        assert (await gw.call("GET", "/v1/jobs/del-1", headers=ADMIN)).status == 404
        assert (await gw.call("DELETE", "/v1/jobs/del-1", headers=ADMIN)).status == 404
        assert "del-1" not in [j["id"] for j in (await gw.call("GET", "/v1/jobs", headers=ADMIN)).body["jobs"]]


async def test_a_deadline_shorter_than_the_eta_is_refused_and_nothing_is_queued(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        # No worker: the learned ETA is the Upstream's cold start (180 s by default).
        r = await gw.infer(headers={"X-Job-Deadline": "30", "X-Request-ID": "dl-1"})
        assert r.status == 422 and r.body["error"]["code"] == "deadline_unreachable", r.body
        assert (await gw.call("GET", "/v1/jobs/dl-1", headers=ADMIN)).status == 404
        assert gw.state.demand.by_lane.get(ECHO, 0) == 0
        for bad in ("0", "-5", "1.5", "soon", "604801"):
            r = await gw.infer(headers={"X-Job-Deadline": bad})
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (bad, r.body)
        r = await gw.infer(headers={"X-Job-Deadline": "7200"})  # past the jobs TTL (3600 s)
        assert r.status == 400 and "TTL" in r.body["error"]["message"]
        ok = await gw.infer(headers={"X-Job-Deadline": "600", "X-Request-ID": "dl-2"})
        assert ok.status == 202
        job = (await gw.call("GET", "/v1/jobs/dl-2", headers=ADMIN)).body
        assert 599 < job["deadline"] - job["created_at"] < 601


async def test_a_job_whose_deadline_passes_in_the_queue_ends_expired(nats_server: NatsServer) -> None:
    release = asyncio.Event()

    async def busy(items: list[Any], ctx: Any) -> list[Any]:
        if items == ["block"]:
            await release.wait()
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, busy, concurrency=1):
        await gw.wait_for_workers(ECHO)
        first = await gw.infer(headers={**ASYNC, "X-Request-ID": "blocker"}, items=["block"])
        assert first.status == 202
        await until(lambda: any(b.in_flight for b in gw.state.registry.live()), 10, "the blocker runs")
        # A live lane's ETA is ~1 s: a 2 s deadline is admitted, then passes behind the blocker.
        late = await gw.infer(headers={**ASYNC, "X-Job-Deadline": "2", "X-Request-ID": "late"}, items=["x"])
        assert late.status == 202, late.body
        await asyncio.sleep(2.5)
        release.set()
        body = (await job_final(gw, "late")).body
        assert body["state"] == "expired" and body["result"]["error"]["code"] == "deadline_exceeded"
        assert (await job_final(gw, "blocker")).body["state"] == "succeeded"


async def test_a_synchronous_answer_is_fetched_again_by_its_request_id(nats_server: NatsServer) -> None:
    calls: list[Any] = []

    def counted(items: list[Any], ctx: Any) -> list[Any]:
        calls.append(items)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, counted):
        await gw.wait_for_workers(ECHO)
        first = await gw.infer(headers={"X-Request-ID": "sync-1"}, items=["once"])
        assert first.status == 200 and first.body["items"] == ["once"]

        async def fetched() -> Any:
            for _ in range(100):  # kept in the background, after the answer went out
                r = await gw.call("GET", "/v1/jobs/sync-1", headers=ADMIN)
                if r.status == 200:
                    return r
                await asyncio.sleep(0.05)
            raise AssertionError("the synchronous result was never kept")

        again = await fetched()
        assert again.body["state"] == "succeeded" and again.body["result"]["items"] == ["once"]
        assert again.body["result"]["worker"] == first.body["worker"]
        assert (await gw.call("GET", "/v1/jobs/sync-1", headers=OTHER)).status == 404  # the admin tenant's
        # The same request again is not run again: the refusal says where the answer is.
        retry = await gw.infer(headers={"X-Request-ID": "sync-1"}, items=["once"])
        assert retry.status == 409 and "GET /v1/jobs/sync-1" in retry.body["error"]["message"]
        assert calls == [["once"]]
        # Not a job: not listed, not cancellable, not deletable.
        assert (await gw.call("GET", "/v1/jobs", headers=ADMIN)).body["jobs"] == []
        assert (await gw.call("DELETE", "/v1/jobs/sync-1", headers=ADMIN)).status == 404


async def test_the_gateway_ttls_apply_to_the_buckets_that_exist(nats_server: NatsServer, tmp_path: Path) -> None:
    config = copy_manifests(tmp_path / "config")
    async with gateway(nats_server.url, config) as gw:
        js = gw.state.dispatcher.js

        async def max_ages() -> tuple[float, float]:
            return ((await js.stream_info("KV_sy_jobs")).config.max_age,
                    (await js.stream_info("KV_sy_results")).config.max_age)

        assert await max_ages() == (3600.0, 300.0)
        results = (await js.stream_info("KV_sy_results")).config
        assert results.max_bytes == 256 * 1024 * 1024 and results.discard == "old"  # bounded, newest kept
        text = (config / "gateway.yaml").read_text()
        (config / "gateway.yaml").write_text(text.replace(
            "  maxRequestBodyBytes: 4096\n",
            "  maxRequestBodyBytes: 4096\n  jobs: {resultTtlSeconds: 120, syncResultTtlSeconds: 60}\n"))
        for _ in range(200):
            if await max_ages() == (120.0, 60.0):
                break
            await asyncio.sleep(0.05)
        assert await max_ages() == (120.0, 60.0)
        assert (await js.stream_info("SWITCHYARD_WORK")).config.max_age == 120.0 + 3600.0


async def test_a_synchronous_request_keeps_to_its_deadline(nats_server: NatsServer) -> None:
    async def slow(items: list[Any], ctx: Any) -> list[Any]:
        await asyncio.sleep(float(ctx.params.get("sleep", 0)))
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, slow):
        await gw.wait_for_workers(ECHO)
        fast = await gw.infer(headers={"X-Job-Deadline": "5"}, items=["f"])
        assert fast.status == 200 and fast.body["items"] == ["f"]
        # Past the Upstream's 20 s timeout would be a 504 too; the deadline makes it 1 s.
        late = await gw.infer(headers={"X-Job-Deadline": "1"}, items=["s"], params={"sleep": 3})
        assert late.status == 504 and late.body["error"]["code"] == "deadline_exceeded", late.body
        too_long = await gw.infer(headers={"X-Job-Deadline": "7200"}, items=["t"])
        assert too_long.status == 400 and "TTL" in too_long.body["error"]["message"]
