"""Tenant isolation, tried as a hostile tenant would: another tenant's jobs and request ids.

Real nats-server, the production gateway app and worker runtime. The keys come from
tests/integration/manifests/gateway.yaml: `admin` (admin scope), `other` and
`other-rotated` (one tenant, two keys), `echo-only` (limited to test/echo).
"""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane import ADMIN, ECHO, ECHO_ONLY, gateway, job_final, worker

from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}
OTHER_ROTATED = {"Authorization": "Bearer other-rotated-key-0123456789"}


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_a_job_is_readable_only_by_its_tenant(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.infer(items=["mine"], headers={**ECHO_ONLY, "X-Request-ID": "job-a"})
        assert r.status == 202, r.body
        # Another tenant's key: 404, the same answer as for a job that never existed.
        other = await gw.call("GET", "/v1/jobs/job-a", headers=OTHER)
        never = await gw.call("GET", "/v1/jobs/no-such-job", headers=OTHER)
        assert other.status == never.status == 404
        assert other.body["error"]["code"] == never.body["error"]["code"] == "unknown_job"
        # The owner reads it; so does an admin key, naming the tenant.
        assert (await gw.call("GET", "/v1/jobs/job-a", headers=ECHO_ONLY)).body["state"] == "queued"
        admin = await gw.call("GET", "/v1/jobs/job-a?tenant=echo-only", headers=ADMIN)
        assert admin.status == 200 and admin.body["state"] == "queued"
        # A non-admin key cannot borrow the tenant parameter.
        assert (await gw.call("GET", "/v1/jobs/job-a?tenant=echo-only", headers=OTHER)).status == 404
        async with worker(nats_server.url, echo):
            await job_final(gw, "job-a", ECHO_ONLY)
        # Still not readable by the other tenant once it holds a result.
        assert (await gw.call("GET", "/v1/jobs/job-a", headers=OTHER)).status == 404


async def test_keys_of_one_tenant_share_its_jobs(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        assert (await gw.infer(headers={**OTHER, "X-Request-ID": "rotate-1"})).status == 202
        r = await gw.call("GET", "/v1/jobs/rotate-1", headers=OTHER_ROTATED)
        assert r.status == 200 and r.body["state"] == "queued"


async def test_the_same_request_id_from_two_tenants_is_two_jobs(nats_server: NatsServer) -> None:
    ran: list[tuple[str, Any]] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        ran.append((ctx.request_id, items))
        return items

    async with gateway(nats_server.url) as gw:
        a = await gw.infer(items=["from-a"], headers={**ECHO_ONLY, "X-Request-ID": "shared-id"})
        b = await gw.infer(items=["from-b"], headers={**OTHER, "X-Request-ID": "shared-id"})
        assert a.status == b.status == 202
        info = await gw.state.dispatcher.js.stream_info("SWITCHYARD_WORK")
        assert info.state.messages == 2  # B's work was queued, not dropped as A's duplicate
        async with worker(nats_server.url, record):
            ra = await job_final(gw, "shared-id", ECHO_ONLY)
            rb = await job_final(gw, "shared-id", OTHER)
    assert ra.body["result"]["items"] == ["from-a"]
    assert rb.body["result"]["items"] == ["from-b"]
    assert sorted(items for _, items in ran) == [["from-a"], ["from-b"]]


async def test_a_reused_request_id_never_overwrites_its_job(nats_server: NatsServer) -> None:
    """Past the dedup window a reused id used to queue again and overwrite the finished job."""
    async with gateway(nats_server.url) as gw:
        assert (await gw.infer(items=["first"], headers={"X-Request-ID": "reuse-1"})).status == 202
        async with worker(nats_server.url, echo):
            first = await job_final(gw, "reuse-1")
        assert first.body["result"]["items"] == ["first"]
        # Forget the stream's dedup entries, as the end of the 120 s window would.
        js = gw.state.dispatcher.js
        config = (await js.stream_info("SWITCHYARD_WORK")).config
        await js.delete_stream("SWITCHYARD_WORK")
        await js.add_stream(config)
        again = await gw.infer(items=["second"], headers={"X-Request-ID": "reuse-1"})
        assert again.status == 202 and again.headers["Location"] == "/v1/jobs/reuse-1"
        info = await gw.state.dispatcher.js.stream_info("SWITCHYARD_WORK")
        assert info.state.messages == 0  # nothing queued for the reused id
        after = await gw.call("GET", "/v1/jobs/reuse-1", headers=ADMIN)
        assert after.body["state"] == "succeeded" and after.body["result"]["items"] == ["first"]


async def test_concurrent_duplicates_on_a_202_lane_all_get_the_same_202(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        replies = await asyncio.gather(*[
            gw.infer(items=["once"], headers={"X-Request-ID": "burst-1"}) for _ in range(50)])
        assert [r.status for r in replies] == [202] * 50, [(r.status, r.body) for r in replies]
        assert {r.headers["Location"] for r in replies} == {"/v1/jobs/burst-1"}
        assert {r.body["job_id"] for r in replies} == {"burst-1"}
        info = await gw.state.dispatcher.js.stream_info("SWITCHYARD_WORK")
        assert info.state.messages == 1
        calls: list[str] = []

        def count(items: list[Any], ctx: Any) -> list[Any]:
            calls.append(ctx.request_id)
            return items

        async with worker(nats_server.url, count):
            done = await job_final(gw, "burst-1")
    assert done.body["state"] == "succeeded" and calls == ["burst-1"]


async def test_health_detail_needs_an_admin_key(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        for headers in ({}, OTHER, ECHO_ONLY):
            r = await gw.call("GET", "/health", headers=headers)
            assert r.status == 200 and r.body == {"status": "healthy"}, r.body
        assert (await gw.call("GET", "/health", headers={"Authorization": "Bearer wrong-wrong-wrong-1"})).status == 401
        full = await gw.call("GET", "/health", headers=ADMIN)
        assert full.body["worker_count"] == 1 and full.body["workers"][0]["models"] == ["test/echo"]


async def test_a_key_sees_only_the_models_it_may_call(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        models = await gw.call("GET", "/v1/configs/models", headers=ECHO_ONLY)
        assert [m["id"] for m in models.body["details"]] == ["test/echo"]
        ids = await gw.call("GET", "/v1/configs/models", headers=ECHO_ONLY)
        assert ids.body["models"] == ["test/echo"]
        hidden = await gw.call("GET", "/v1/configs/models/test/gpu", headers=ECHO_ONLY)
        assert hidden.status == 404 and hidden.body["error"]["code"] == "unknown_model"
        bundles = await gw.call("GET", "/v1/configs/bundles", headers=ECHO_ONLY)
        assert {b["name"]: b["models"] for b in bundles.body["bundles"]} == {"default": ["test/echo"]}
        assert (await gw.call("GET", "/v1/configs/bundles/special", headers=ECHO_ONLY)).status == 404
        everything = await gw.call("GET", "/v1/configs/models", headers=ADMIN)
        assert everything.body["models"] == ["test/echo", "test/gpu", "test/slow"]
