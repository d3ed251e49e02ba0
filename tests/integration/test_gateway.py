"""The data path end to end: real nats-server, the gateway app, the worker runtime."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dataplane import ADMIN, ECHO, ECHO_ONLY, TENANT, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer
from switchyard.subjects import Lane
from switchyard.worker import PermanentError, TransientError


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_round_trip(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo) as w:
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(items=[{"text": "a"}, {"text": "b"}], headers={"X-Request-ID": "rt-1"})
        assert r.status == 200, r.body
        assert r.headers["X-Request-ID"] == "rt-1"
        assert r.body["id"] == "rt-1" and r.body["model"] == "test/echo"
        assert r.body["items"] == [{"text": "a"}, {"text": "b"}]
        assert r.body["worker"] == w.worker_id
        assert r.body["timing"]["attempt"] == 1
        # A generated request id is echoed too.
        r = await gw.infer()
        assert r.status == 200 and r.headers["X-Request-ID"] == r.body["id"]


async def test_profile_params_reach_the_worker(nats_server: NatsServer) -> None:
    seen: list[dict[str, Any]] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        seen.append({"params": ctx.params, "profile": ctx.profile, "bundle": ctx.bundle, "mp": ctx.machine_profile})
        return items

    lane = Lane("test/gpu", "special", "a100-80gb", "default")
    async with gateway(nats_server.url) as gw, worker(nats_server.url, record, model="test/gpu",
                                                       bundle="special", machine_profile="a100-80gb"):
        await gw.wait_for_workers(lane)
        r = await gw.infer("test/gpu:sparse", headers={"X-Machine-Profile": "a100-80gb"}, params={"k": 1})
        assert r.status == 200, r.body
    assert seen == [{"params": {"output": "sparse", "k": 1}, "profile": "sparse", "bundle": "special",
                     "mp": "a100-80gb"}]


async def test_202_then_completion_when_a_worker_starts_later(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.infer(items=[{"text": "later"}], headers={"X-Request-ID": "late-1"})
        assert r.status == 202, r.body
        assert r.headers["Location"] == "/v1/jobs/late-1" and int(r.headers["Retry-After"]) > 0
        assert r.body["status"] == "provisioning" and r.body["job_id"] == "late-1"
        assert (r.body["machine_profile"], r.body["bundle"], r.body["pool"]) == ("cpu", "default", "default")
        assert r.body["estimated_wait_s"] > 0
        job = await gw.call("GET", "/v1/jobs/late-1", headers=ADMIN)
        assert job.status == 200 and job.body["state"] == "queued"
        # Demand is exported for KEDA while the item waits.
        await until(lambda: gw.state.demand.by_lane.get(ECHO) == 1, 10, "pending demand of 1")
        assert 'switchyard_gateway_pending_demand{bundle="default",machine_profile="cpu",pool="default"} 1.0' \
            in await gw.metrics()
        async with worker(nats_server.url, echo):
            done = await job_final(gw, "late-1")
        assert done.body["state"] == "succeeded"
        assert done.body["result"]["items"] == [{"text": "later"}]
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 0, 10, "demand drained")


async def test_same_request_id_twice_is_queued_once(nats_server: NatsServer) -> None:
    calls: list[str] = []

    def count(items: list[Any], ctx: Any) -> list[Any]:
        calls.append(ctx.request_id)
        return items

    async with gateway(nats_server.url) as gw:
        first = await gw.infer(headers={"X-Request-ID": "dup-1"})
        second = await gw.infer(headers={"X-Request-ID": "dup-1"})
        assert (first.status, second.status) == (202, 202)
        assert second.body["job_id"] == "dup-1"
        async with worker(nats_server.url, count):
            await job_final(gw, "dup-1")
            await gw.wait_for_workers(ECHO)
            # With a worker live, a repeat of an awaited id is refused, not re-run.
            ok = await gw.infer(headers={"X-Request-ID": "dup-2"})
            again = await gw.infer(headers={"X-Request-ID": "dup-2"})
            assert ok.status == 200
            assert again.status == 409 and again.body["error"]["code"] == "duplicate_request"
            await asyncio.sleep(0.5)
    assert calls == ["dup-1", "dup-2"]


async def test_pinned_pool_without_worker_is_503_and_queues_nothing(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.infer(headers={"X-Pool": "tenant", "X-Request-ID": "pin-1"})
        assert r.status == 503 and r.body["error"]["code"] == "no_capacity"
        assert int(r.headers["Retry-After"]) > 0
        assert (await gw.call("GET", "/v1/jobs/pin-1", headers=ADMIN)).status == 404
        info = await gw.state.dispatcher.js.stream_info("SWITCHYARD_WORK")
        assert info.state.messages == 0


async def test_tenant_key_runs_in_its_own_pool(nats_server: NatsServer) -> None:
    lane = Lane("test/echo", "default", "cpu", "tenant")
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo, pool="tenant") as w:
        await gw.wait_for_workers(lane)
        r = await gw.infer(headers=TENANT)
        assert r.status == 200 and r.body["worker"] == w.worker_id
        r = await gw.infer(headers={**TENANT, "X-Pool": "default"})
        assert r.status == 403 and r.body["error"]["code"] == "forbidden"


async def test_deadline_gives_504_and_the_item_ends_expired(nats_server: NatsServer) -> None:
    calls: list[str] = []

    async def slow(items: list[Any], ctx: Any) -> list[Any]:
        calls.append(ctx.request_id)
        await asyncio.sleep(3)
        return items

    lane = Lane("test/slow", "default", "cpu", "default")
    async with gateway(nats_server.url) as gw, worker(nats_server.url, slow, model="test/slow", concurrency=1):
        await gw.wait_for_workers(lane)
        first = asyncio.create_task(gw.infer("test/slow", headers={"X-Request-ID": "slow-1"}))
        await asyncio.sleep(0.2)
        second = await gw.infer("test/slow", headers={"X-Request-ID": "slow-2"})  # waits behind slow-1
        assert second.status == 504 and second.body["error"]["code"] == "deadline_exceeded"
        assert (await first).status == 504
        # slow-2 was still queued at its deadline: the worker skips it rather than run it late.
        await until(lambda: gw.state.demand.by_lane.get(lane, 0) == 0, 15, "slow lane drained")
    assert calls == ["slow-1"]


async def test_worker_errors_map_to_status_codes(nats_server: NatsServer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    secret = "GPU fell over in /srv/models/secret.bin with token sk-live-123"

    def picky(items: list[Any], ctx: Any) -> list[Any]:
        if items == ["bad"]:
            raise PermanentError("items must not be 'bad'")
        if items == ["flaky"]:
            raise TransientError(secret)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, picky, nak_delay_s=0.05):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(items=["bad"])
        assert r.status == 422 and r.body["error"] == {"code": "invalid_input", "message": "items must not be 'bad'"}
        r = await gw.infer(items=["flaky"], headers={"X-Request-ID": "flaky-1"})
        assert r.status == 502 and r.body["error"]["code"] == "worker_error"
        # Exception text may hold paths and tokens: the client gets a generic message and an error id...
        text = str(r.body)
        assert "GPU fell over" not in text and "sk-live" not in text and "/srv" not in text
        assert "3 attempt" in r.body["error"]["message"]
        error_id = r.body["error"]["error_id"]
        # ...and the worker's log holds the detail under that id, with the request id.
        [line] = [rec for rec in caplog.records if getattr(rec, "error_id", None) == error_id]
        assert line.error == secret and line.request_id == "flaky-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("call,status,code", [
    (dict(headers={"Authorization": ""}), 401, "unauthorized"),
    (dict(headers={"Authorization": "Bearer nope-nope-nope-nope"}), 401, "unauthorized"),
    (dict(headers={"Authorization": "Token x"}), 401, "unauthorized"),
    (dict(headers=ECHO_ONLY, model="test/gpu"), 403, "forbidden"),
    (dict(headers=TENANT, extra={"X-Pool": "default"}), 403, "forbidden"),
    (dict(model="no/such-model"), 404, "unknown_model"),
    (dict(model="test/gpu:nope"), 404, "unknown_model"),
    (dict(extra={"X-Pool": "nope"}), 404, "unknown_pool"),
    (dict(op="fly"), 404, "not_found"),
    (dict(op="generate", model="test/gpu"), 400, "unsupported_operation"),
    (dict(extra={"X-Machine-Profile": "h100"}), 400, "unknown_machine_profile"),
    (dict(model="test/gpu", extra={"X-Bundle": "nope"}), 409, "incompatible_bundle"),
    (dict(extra={"X-Request-ID": "bad id!"}), 400, "invalid_request_id"),
    (dict(data=b"{not json"), 400, "invalid_json"),
    (dict(data=b""), 400, "invalid_json"),
    (dict(data=b"[1, 2]"), 400, "bad_request"),
    (dict(data=b'{"items": []}'), 400, "bad_request"),
    (dict(data=b'{"items": "x"}'), 400, "bad_request"),
    (dict(data=b'{"items": [1], "params": []}'), 400, "bad_request"),
    (dict(data=b'{"items": [1], "extra": 1}'), 400, "bad_request"),
    (dict(data=b'{"items": ["' + b"x" * 5000 + b'"]}'), 413, "payload_too_large"),
])
async def test_bad_input_gets_status_code_and_clear_message(nats_server: NatsServer, call: dict, status: int,
                                                           code: str) -> None:
    async with gateway(nats_server.url) as gw:
        headers = {**ADMIN, **call.get("headers", {}), **call.get("extra", {})}
        path = f"/v1/{call.get('op', 'encode')}/{call.get('model', 'test/echo')}"
        if "data" in call:
            r = await gw.call("POST", path, headers={**headers, "Content-Type": "application/json"},
                              data=call["data"])
        else:
            r = await gw.call("POST", path, headers=headers, json={"items": [{"text": "x"}]})
        assert r.status == status, r.body
        assert r.body["error"]["code"] == code
        assert len(r.body["error"]["message"]) > 10
        assert "X-Request-ID" in r.headers


async def test_chunked_body_over_the_limit_is_413(nats_server: NatsServer) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    async with gateway(nats_server.url) as gw:
        r = await gw.call("POST", "/v1/encode/test/echo", headers=ADMIN, data=chunks())
        assert r.status == 413 and r.body["error"]["code"] == "payload_too_large"


async def test_read_endpoints(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        models = await gw.call("GET", "/v1/configs/models", headers=ADMIN)
        assert models.status == 200
        by_id = {m["id"]: m for m in models.body["details"]}
        assert by_id["test/echo"]["live_workers"] == 1 and by_id["test/gpu"]["live_workers"] == 0
        assert (await gw.call("GET", "/v1/configs/models", headers=ADMIN)).body["models"] == \
            ["test/echo", "test/gpu", "test/slow"]
        one = await gw.call("GET", "/v1/configs/models/test/gpu", headers=ADMIN)
        assert one.status == 200 and one.body["default_machine_profile"] == "l4"
        assert (await gw.call("GET", "/v1/configs/models/x/y", headers=ADMIN)).status == 404
        bundles = await gw.call("GET", "/v1/configs/bundles", headers=ADMIN)
        assert {b["name"]: b["live_workers"] for b in bundles.body["bundles"]} == {"default": 1, "special": 0}
        res = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN, json={"model": "test/gpu:sparse"})
        assert res.status == 200
        assert (res.body["bundle"], res.body["outcome"]) == ("special", "provision_202")
        res = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN, json={"model": "test/echo"})
        assert res.body["outcome"] == "queue" and res.body["live_workers"] == 1
        assert (await gw.call("POST", "/v1/configs/models", headers=ADMIN, json={})).status == 405
        assert (await gw.call("GET", "/v1/models")).status == 401
        health = await gw.call("GET", "/health", headers=ADMIN)  # the detail needs an admin key
        assert health.body["worker_count"] == 1 and health.body["live_machine_profiles"] == ["cpu"]
        assert health.body["configured_machine_profiles"] == ["a100-80gb", "cpu", "l4"]
        assert (await gw.call("GET", "/healthz")).status == 200
        assert (await gw.call("GET", "/readyz")).status == 200
        info = await gw.state.dispatcher.js.stream_info("SWITCHYARD_WORK")
        assert info.state.messages == 0  # resolve queued nothing


async def test_cors(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        pre = await gw.call("OPTIONS", "/v1/encode/test/echo", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        assert pre.status == 204 and pre.headers["Access-Control-Allow-Origin"] == "http://app.example"
        allowed = {h.strip() for h in pre.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"Authorization", "X-API-Key", "X-Priority", "X-Job-Deadline"} <= allowed  # every header read
        bad = await gw.call("OPTIONS", "/v1/encode/test/echo", headers={"Origin": "http://evil.example"})
        assert bad.status == 403 and "Access-Control-Allow-Origin" not in bad.headers
        r = await gw.call("GET", "/v1/models", headers={**ADMIN, "Origin": "http://app.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"RateLimit", "RateLimit-Policy", "Deprecation", "Sunset", "X-Switchyard-Model"} <= exposed


async def test_metrics(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer()).status == 200
        await asyncio.sleep(2.5)  # one refresh of the worker gauges
        text = await gw.metrics()
        assert ('switchyard_gateway_requests_total{endpoint="/v1/{op}/{model}",machine_profile="cpu",status="200"} 1.0'
                in text)
        assert "switchyard_gateway_nats_connected 1.0" in text
        assert "switchyard_gateway_config_epoch 1.0" in text
        assert ('switchyard_gateway_workers_live{bundle="default",machine_profile="cpu",model="test/echo",'
                'pool="default"} 1.0' in text)
        assert "switchyard_gateway_worker_in_flight{" in text
        assert "switchyard_gateway_request_latency_seconds_bucket" in text
