"""Planner runs against real NATS, a real gateway and real workers (issue 11, "Planners run").

The DAG `diamond`: `a` (request items) -> `b` and `c` in parallel (a's items) -> `d` (one map per item
keyed by b and c). Workers run the `tag` handler below in process: it wraps each item with the step's
tag, so the answer shows exactly which input reached which step.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from dataplane import ADMIN, ECHO, ECHO_ONLY, GatewayUnderTest, copy_manifests, gateway, job_final, until, worker

from switchyard.client import Accepted, AsyncClient
from switchyard.gateway.plans import run_steps
from switchyard.natsserver import NatsServer
from switchyard.subjects import job_key
from switchyard.worker.errors import PermanentError

PLANNERS = """
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: diamond}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {tag: a}}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {tag: b}}
    - {name: c, model: test/echo, operation: encode, dependsOn: [a], params: {tag: c}}
    - {name: d, model: test/echo, operation: generate, dependsOn: [b, c], params: {tag: d}}
  output: d
---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: on-gpu}
spec:
  steps:
    - {name: only, model: test/gpu, operation: encode}
"""

calls: Counter[str] = Counter()  # request id ("<run>/<step>") -> times its handler ran
both_started = asyncio.Event()
started: set[str] = set()
release = asyncio.Event()
cancelled: set[str] = set()  # request ids whose handler was cancelled where it awaited


async def tag(items: list[Any], ctx: Any) -> list[Any]:
    """Wraps each item with the step's tag. `b` and `c` wait until both run (proof that they run at
    once: one waiting for the other to end would never see it start); `fail` fails for good;
    `hold` waits for the test's release."""
    calls[ctx.request_id] += 1
    t = ctx.params.get("tag")
    if ctx.params.get("together"):
        started.add(t)
        if {"b", "c"} <= started:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 15)
    if ctx.params.get("fail"):
        raise PermanentError("refused by the test handler")
    if ctx.params.get("hold"):
        try:
            await asyncio.wait_for(release.wait(), 30)
        except asyncio.CancelledError:
            cancelled.add(ctx.request_id)  # the worker stopped it: the job was cancelled
            raise
    return [{"tag": t, "in": item} for item in items]


def manifests(tmp_path: Path, extra: str = "") -> Path:
    config = copy_manifests(tmp_path / "config")
    (config / "planners.yaml").write_text(PLANNERS + extra)
    return config


@pytest.fixture(autouse=True)
def _reset() -> None:
    global both_started, release
    both_started, release = asyncio.Event(), asyncio.Event()  # an Event binds to the loop of its first wait
    calls.clear()
    started.clear()
    cancelled.clear()


def wrapped(tag_: str, inner: Any) -> dict[str, Any]:
    return {"tag": tag_, "in": inner}


async def run(gw: GatewayUnderTest, planner: str, items: list[Any], headers: dict[str, str] | None = None,
              params: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {"items": items}
    if params is not None:
        body["params"] = params
    return await gw.call("POST", f"/v1/plans/{planner}", headers={**ADMIN, **(headers or {})}, json=body)


async def test_a_diamond_runs_its_parallel_branch_and_answers_the_output_step(nats_server: NatsServer,
                                                                             tmp_path: Path) -> None:
    extra = """---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: together}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {tag: a}}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {tag: b, together: true}}
    - {name: c, model: test/echo, operation: encode, dependsOn: [a], params: {tag: c, together: true}}
    - {name: d, model: test/echo, operation: generate, dependsOn: [b, c], params: {tag: d}}
  output: d
"""
    async with gateway(nats_server.url, manifests(tmp_path, extra)) as gw, \
            worker(nats_server.url, tag, concurrency=4):
        await gw.wait_for_workers(ECHO)
        r = await run(gw, "together", ["x", "y"], {"Prefer": "wait=20", "X-Request-ID": "run-1"})
        assert r.status == 200, r.body
        assert r.headers["Preference-Applied"] == "wait=20"
        a = [wrapped("a", "x"), wrapped("a", "y")]
        assert r.body["items"] == [wrapped("d", {"b": wrapped("b", a[i]), "c": wrapped("c", a[i])}) for i in range(2)]
        assert r.body["id"] == "run-1" and r.body["planner"] == "together"
        assert [(s["name"], s["state"], s["job_id"]) for s in r.body["steps"]] == [
            (n, "succeeded", f"run-1/{n}") for n in "abcd"]
        assert dict(calls) == {f"run-1/{n}": 1 for n in "abcd"}
        # The run is a job: kind plan, its output as its result.
        job = await job_final(gw, "run-1")
        assert job.body["state"] == "succeeded"
        assert (job.body["kind"], job.body["op"]) == ("plan", "together")
        assert [(s["name"], s["state"]) for s in job.body["steps"]] == [(n, "succeeded") for n in "abcd"]
        assert job.body["result"]["items"] == r.body["items"]
        # The same request id again is the same run: nothing runs twice.
        again = await run(gw, "together", ["x", "y"], {"X-Request-ID": "run-1"})
        assert again.status == 202 and again.body["job_id"] == "run-1"
        assert [s["state"] for s in again.body["steps"]] == ["succeeded"] * 4
        assert sum(calls.values()) == 4
        # GET /v1/plans counts runs and outcomes: the key's own tenant's, every tenant's for an admin.
        other = {"Authorization": "Bearer other-key-0123456789abcdef"}

        async def runs_of(headers: dict[str, str]) -> dict[str, int]:
            listed = await gw.call("GET", "/v1/plans", headers=headers)
            runs = next(p["runs"] for p in listed.body["planners"] if p["name"] == "together")
            return {k: runs[k] for k in ("started", "running", "succeeded", "failed", "cancelled")}

        deadline = asyncio.get_running_loop().time() + 10
        while (await runs_of(ADMIN))["succeeded"] != 1:
            assert asyncio.get_running_loop().time() < deadline, await runs_of(ADMIN)
            await asyncio.sleep(0.1)
        assert await runs_of(ADMIN) == {"started": 1, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0}
        assert await runs_of(other) == {"started": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        # The SDK: the same run through AsyncClient.run_plan, held for its result.
        async with AsyncClient(gw.url, "admin-key-0123456789abcdef") as sy:
            out = await sy.run_plan("together", ["x", "y"], request_id="run-sdk", wait_for_result=True, timeout=30)
            a = [wrapped("a", {"text": v}) for v in "xy"]  # the SDK sends a str as {"text": str}
            assert out.items == [wrapped("d", {"b": wrapped("b", a[i]), "c": wrapped("c", a[i])}) for i in range(2)]
            assert out.job_id == "run-sdk"
            assert "together" in [p["name"] for p in await sy.plans()]
            accepted = await sy.run_plan("on-gpu", "z", request_id="run-sdk-2")  # no gpu worker: queued
            assert isinstance(accepted, Accepted) and accepted.job_id == "run-sdk-2"


async def test_without_a_worker_the_run_waits_with_its_steps_queued_then_completes(nats_server: NatsServer,
                                                                                   tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        r = await run(gw, "diamond", [1], {"X-Request-ID": "cold-run"})
        assert r.status == 202, r.body
        assert r.headers["Location"] == "/v1/jobs/cold-run"
        assert r.body["status"] == "running"
        first = r.body["steps"][0]
        assert first["name"] == "a" and first["state"] == "queued" and first["estimated_wait_s"] > 0
        assert [s["state"] for s in r.body["steps"][1:]] == ["pending"] * 3
        async with worker(nats_server.url, tag, concurrency=4):
            job = await job_final(gw, "cold-run", timeout=30)
        assert job.body["state"] == "succeeded"
        a = wrapped("a", 1)
        assert job.body["result"]["items"] == [wrapped("d", {"b": wrapped("b", a), "c": wrapped("c", a)})]
        assert [s["state"] for s in job.body["steps"]] == ["succeeded"] * 4


async def test_a_failed_step_fails_the_run_names_it_and_cancels_its_siblings(nats_server: NatsServer,
                                                                            tmp_path: Path) -> None:
    extra = """---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: breaks}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {tag: a}}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {tag: b, together: true, fail: true}}
    - {name: c, model: test/echo, operation: encode, dependsOn: [a], params: {tag: c, together: true, hold: true}}
    - {name: d, model: test/echo, operation: generate, dependsOn: [b, c], params: {tag: d}}
  output: d
"""
    async with gateway(nats_server.url, manifests(tmp_path, extra)) as gw, \
            worker(nats_server.url, tag, concurrency=4):
        await gw.wait_for_workers(ECHO)
        r = await run(gw, "breaks", ["x"], {"Prefer": "wait=20", "X-Request-ID": "bad-run"})
        assert r.status == 422, r.body  # b's invalid_input, named
        assert r.body["error"]["code"] == "invalid_input"
        assert "step 'b'" in r.body["error"]["message"]
        steps = {s["name"]: s for s in await run_steps(gw.state, job_key("admin", "bad-run")) or []}
        assert steps["a"]["state"] == "succeeded"
        assert steps["b"]["state"] == "failed" and "step 'b'" in steps["b"]["error"]["message"]
        assert steps["c"]["state"] == "cancelled"  # was running: cancelled, not waited for
        assert steps["d"]["state"] == "cancelled"  # never queued
        release.set()  # c's handler ends now: its result does not overwrite the cancel
        await asyncio.sleep(0.5)
        job = await job_final(gw, "bad-run")
        assert job.body["state"] == "failed"
        assert "step 'b'" in job.body["result"]["error"]["message"]
        steps = {s["name"]: s for s in job.body["steps"]}
        assert steps["c"]["state"] == "cancelled" and steps["b"]["state"] == "failed"
        assert "bad-run/d" not in calls


async def test_bad_requests_and_other_keys(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        r = await run(gw, "nope", [1])
        assert (r.status, r.body["error"]["code"]) == (404, "unknown_planner")
        r = await run(gw, "diamond", [1], {"X-Bundle": "default"})
        assert (r.status, r.body["error"]["code"]) == (400, "bad_request")
        assert "X-Bundle" in r.body["error"]["message"]
        for body in ({"items": []}, {"items": [1], "extra": 1}, [1]):
            r = await gw.call("POST", "/v1/plans/diamond", headers=ADMIN, json=body)
            assert (r.status, r.body["error"]["code"]) == (400, "bad_request"), body
        # A pinned pool without a worker: refused before anything is recorded.
        r = await run(gw, "diamond", [1], {"X-Pool": "default", "X-Request-ID": "pinned"})
        assert (r.status, r.body["error"]["code"]) == (503, "no_capacity")
        assert (await gw.call("GET", "/v1/jobs/pinned", headers=ADMIN)).status == 404
        # A key limited to test/echo neither sees nor runs the Planner on test/gpu.
        listed = await gw.call("GET", "/v1/plans", headers=ECHO_ONLY)
        assert [p["name"] for p in listed.body["planners"]] == ["diamond"]
        assert listed.body["planners"][0]["output"] == "d"
        r = await gw.call("POST", "/v1/plans/on-gpu", headers=ECHO_ONLY, json={"items": [1]})
        assert (r.status, r.body["error"]["code"]) == (403, "forbidden")
        admin = await gw.call("GET", "/v1/plans", headers=ADMIN)
        assert [p["name"] for p in admin.body["planners"]] == ["diamond", "on-gpu"]
        # A request id that names an ordinary job is not a run.
        assert (await gw.infer(headers={"X-Request-ID": "taken"})).status == 202
        r = await run(gw, "diamond", [1], {"X-Request-ID": "taken"})
        assert (r.status, r.body["error"]["code"]) == (409, "duplicate_request")
        # Tenants never share run ids: the other tenant's same id is its own run, and it cannot read ours.
        r = await run(gw, "diamond", [1], {"X-Request-ID": "shared-id"})
        assert r.status == 202
        other = {"Authorization": "Bearer other-key-0123456789abcdef"}
        assert (await gw.call("GET", "/v1/jobs/shared-id", headers=other)).status == 404
        r = await gw.call("POST", "/v1/plans/diamond", headers={**other, "X-Request-ID": "shared-id"},
                          json={"items": [2]})
        assert r.status == 202 and r.body["steps"][0]["state"] == "queued"
        assert await run_steps(gw.state, job_key("other", "shared-id")) is not None


async def test_cancelling_a_run_cancels_its_running_step_on_its_worker(nats_server: NatsServer,
                                                                       tmp_path: Path) -> None:
    extra = """---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: long}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {tag: a, hold: true}}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {tag: b}}
"""
    async with gateway(nats_server.url, manifests(tmp_path, extra)) as gw, \
            worker(nats_server.url, tag, concurrency=4):
        await gw.wait_for_workers(ECHO)
        assert (await run(gw, "long", [1], {"X-Request-ID": "stop-me"})).status == 202
        await until(lambda: calls["stop-me/a"] == 1, 15, "step a running")
        other = {"Authorization": "Bearer other-key-0123456789abcdef"}
        assert (await gw.call("POST", "/v1/jobs/stop-me/cancel", headers=other)).status == 404  # not theirs
        r = await gw.call("POST", "/v1/jobs/stop-me/cancel", headers=ADMIN)
        assert r.status == 200, r.body
        await until(lambda: "stop-me/a" in cancelled, 15, "the worker cancelling step a's handler")
        job = await gw.call("GET", "/v1/jobs/stop-me", headers=ADMIN)
        assert job.body["state"] == "cancelled"
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            job = await gw.call("GET", "/v1/jobs/stop-me", headers=ADMIN)
            steps = {s["name"]: s["state"] for s in job.body["steps"]}
            if steps == {"a": "cancelled", "b": "cancelled"}:
                break
            assert asyncio.get_running_loop().time() < deadline, steps
            await asyncio.sleep(0.1)
        assert "stop-me/b" not in calls


async def test_a_run_too_large_for_one_nats_message_is_refused_and_leaves_nothing(nats_server: NatsServer,
                                                                                   tmp_path: Path) -> None:
    config = manifests(tmp_path)
    gw_yaml = config / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text().replace("maxRequestBodyBytes: 4096", "maxRequestBodyBytes: 4194304"))
    async with gateway(nats_server.url, config) as gw:
        limit = gw.state.dispatcher.nc.max_payload  # the server's max_payload (1 MiB by default)
        big = ["x" * 1000] * (limit // 1000 + 10)  # the request fits the body limit, the run record does not
        r = await run(gw, "diamond", big, {"X-Request-ID": "too-big"})
        assert (r.status, r.body["error"]["code"]) == (413, "payload_too_large"), r.body
        assert (await gw.call("GET", "/v1/jobs/too-big", headers=ADMIN)).status == 404
        # Just under: accepted (its steps then carry the items through the queue as any item does).
        r = await run(gw, "diamond", ["x" * 1000] * (limit // 1000 - 100), {"X-Request-ID": "fits"})
        assert r.status == 202, r.body
