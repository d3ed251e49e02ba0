"""Planner run counts (gateway/planstats.py) against real NATS, real gateways and real workers: exact
per outcome, per tenant, with replicas racing, across a gateway restart, and when a gateway dies
between a run's final write and counting its end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from dataplane import ADMIN, ECHO, GatewayUnderTest, copy_manifests, gateway, job_final, worker
from test_openapi import _doc, check

from switchyard.gateway.planrun import LEASE_S, RunRecord
from switchyard.gateway.planstats import stats_key
from switchyard.jetstream import ensure_runs_bucket
from switchyard.messages import JobRecord
from switchyard.natsserver import NatsServer
from switchyard.subjects import PLANSTATS_BUCKET, job_key
from switchyard.worker.errors import PermanentError

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}

PLANNERS = """
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: pair}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a]}
---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: breaks}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {fail: true}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: held}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {hold: true}}
"""

release = asyncio.Event()


async def handler(items: list[Any], ctx: Any) -> list[Any]:
    if ctx.params.get("fail"):
        raise PermanentError("refused by the test handler")
    if ctx.params.get("hold"):
        await asyncio.wait_for(release.wait(), 30)
    return items


@pytest.fixture(autouse=True)
def _reset() -> None:
    global release
    release = asyncio.Event()


def manifests(tmp_path: Path) -> Path:
    config = copy_manifests(tmp_path / "config")
    (config / "planners.yaml").write_text(PLANNERS)
    return config


async def runs_of(gw: GatewayUnderTest, planner: str, headers: dict[str, str] = ADMIN) -> dict[str, Any]:
    listed = await gw.call("GET", "/v1/plans", headers=headers)
    assert listed.status == 200, listed.body
    return next(p["runs"] for p in listed.body["planners"] if p["name"] == planner)


async def counts_become(gw: GatewayUnderTest, planner: str, want: dict[str, int],
                        headers: dict[str, str] = ADMIN, timeout: float = 20.0) -> dict[str, Any]:
    """The counts once they equal `want` (the mirror follows the bucket through a watch)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = await runs_of(gw, planner, headers)
        if {k: runs[k] for k in want} == want:
            return runs
        assert time.monotonic() < deadline, (planner, runs, want)
        await asyncio.sleep(0.1)


def counts(started: int = 0, running: int = 0, succeeded: int = 0, failed: int = 0,
           cancelled: int = 0) -> dict[str, int]:
    return {"started": started, "running": running, "succeeded": succeeded, "failed": failed, "cancelled": cancelled}


async def test_outcomes_are_counted_per_tenant_and_survive_a_gateway_restart(nats_server: NatsServer,
                                                                            tmp_path: Path) -> None:
    config = manifests(tmp_path)
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, handler, concurrency=4):
        await gw.wait_for_workers(ECHO)
        assert await runs_of(gw, "pair") == {**counts(), "last_run_at": None, "last_failure": None}
        for i in range(2):
            r = await gw.call("POST", "/v1/plans/pair", headers={**ADMIN, "Prefer": "wait=20"},
                              json={"items": [i]})
            assert r.status == 200, r.body
        r = await gw.call("POST", "/v1/plans/breaks", headers={**ADMIN, "Prefer": "wait=20"}, json={"items": [1]})
        assert r.status == 422, r.body
        r = await gw.call("POST", "/v1/plans/held", headers={**ADMIN, "X-Request-ID": "to-cancel"},
                          json={"items": [1]})
        assert r.status == 202, r.body
        await counts_become(gw, "held", counts(started=1, running=1))
        assert (await gw.call("POST", "/v1/jobs/to-cancel/cancel", headers=ADMIN)).status == 200
        assert (await job_final(gw, "to-cancel")).body["state"] == "cancelled"
        # Another tenant's run of the same Planner: its own counts.
        r = await gw.call("POST", "/v1/plans/pair", headers={**OTHER, "Prefer": "wait=20"}, json={"items": [9]})
        assert r.status == 200, r.body

        pair = await counts_become(gw, "pair", counts(started=3, succeeded=3))
        assert pair["last_failure"] is None and pair["last_run_at"] > 0
        breaks = await counts_become(gw, "breaks", counts(started=1, failed=1))
        assert breaks["last_failure"]["step"] == "b" and breaks["last_failure"]["code"] == "invalid_input"
        await counts_become(gw, "held", counts(started=1, cancelled=1))
        # A tenant's key sees its own tenant's runs only: none of the admin's, nothing of who failed.
        assert await counts_become(gw, "pair", counts(started=1, succeeded=1), OTHER)
        other_breaks = await runs_of(gw, "breaks", OTHER)
        assert {k: other_breaks[k] for k in counts()} == counts() and other_breaks["last_failure"] is None
        # The answer matches its OpenAPI schema, with and without a last failure.
        check(await _doc(gw), await gw.call("GET", "/v1/plans", headers=ADMIN), "/v1/plans")
        # The counters are the bucket's, one record per (Planner, tenant), not a gateway's memory.
        kv = await gw.state.dispatcher.js.key_value(PLANSTATS_BUCKET)
        stored = orjson.loads((await kv.get(stats_key("pair", "other"))).value)
        assert (stored["planner"], stored["tenant"], stored["started"], stored["succeeded"]) == ("pair", "other", 1, 1)
    # A new gateway (the first one stopped) reads the same counts.
    async with gateway(nats_server.url, config) as again:
        assert (await runs_of(again, "pair")) == pair
        assert {k: (await runs_of(again, "breaks"))[k] for k in counts()} == counts(started=1, failed=1)


async def test_two_gateways_racing_runs_of_one_planner_count_every_run_once(nats_server: NatsServer,
                                                                           tmp_path: Path) -> None:
    config = manifests(tmp_path)
    per_gateway = 12
    async with gateway(nats_server.url, config) as one, gateway(nats_server.url, config) as two, \
            worker(nats_server.url, handler, concurrency=8):
        await one.wait_for_workers(ECHO)
        await two.wait_for_workers(ECHO)

        async def run(gw: GatewayUnderTest, i: int) -> int:
            r = await gw.call("POST", "/v1/plans/pair", headers={**ADMIN, "Prefer": "wait=60"}, json={"items": [i]})
            return r.status

        statuses = await asyncio.gather(*(run(gw, i) for i in range(per_gateway) for gw in (one, two)))
        assert statuses == [200] * (2 * per_gateway)
        total = 2 * per_gateway
        for gw in (one, two):  # both replicas show the same, exact counts
            await counts_become(gw, "pair", counts(started=total, succeeded=total))


async def test_a_run_whose_gateway_died_before_counting_its_end_is_counted_once(nats_server: NatsServer,
                                                                                tmp_path: Path) -> None:
    """The state a gateway SIGKILLed between its final run record and its count leaves behind, written
    into the real buckets: the run ended, its start counted, its end not marked counted. Another gateway
    takes it over when its lease lapses, finishes its job record and counts the end; for a second run the
    count had landed (the same message id was written) before the gateway died: it is not counted again."""
    config = manifests(tmp_path)
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, handler, concurrency=4):
        await gw.wait_for_workers(ECHO)
        r = await gw.call("POST", "/v1/plans/pair", headers={**ADMIN, "Prefer": "wait=20", "X-Request-ID": "done"},
                          json={"items": [1]})
        assert r.status == 200, r.body
        await counts_become(gw, "pair", counts(started=1, succeeded=1))
        js = gw.state.dispatcher.js
        runs = await ensure_runs_bucket(js)
        done = RunRecord.decode((await runs.get(job_key("admin", "done"))).value)
        jobs = gw.state.dispatcher.jobs
        stats = gw.state.plan_runs.stats

        async def orphan(run_id: str, end_counted: bool) -> None:
            """A run `run_id` as a dead gateway leaves it: final in sy_runs, still running in sy_jobs."""
            key = job_key("admin", run_id)
            job = JobRecord.decode((await jobs.get(job_key("admin", "done"))).value)
            job.id, job.state, job.result = run_id, "running", None
            await jobs.create(key, job.encode())
            run = RunRecord(**{**{f: getattr(done, f) for f in RunRecord.__slots__}, "id": run_id})
            run.counted, run.owner, run.lease_until = "start", "dead-gateway", time.time() - LEASE_S
            await stats.started(run.planner, run.tenant, key, run.created_at)
            if end_counted:
                await stats.ended(run.planner, run.tenant, key, run.created_at, "succeeded", None, run.ended_at)
            await runs.create(key, run.encode())

        await orphan("orphan-1", end_counted=False)
        await orphan("orphan-2", end_counted=True)
        for run_id in ("orphan-1", "orphan-2"):
            job = await job_final(gw, run_id, timeout=30)
            assert job.body["state"] == "succeeded" and job.body["result"]["items"] == r.body["items"]

            async def marked() -> bool:
                return RunRecord.decode((await runs.get(job_key("admin", run_id))).value).counted == "end"

            deadline = time.monotonic() + 20
            while not await marked():
                assert time.monotonic() < deadline, f"{run_id} never marked counted"
                await asyncio.sleep(0.1)
        await counts_become(gw, "pair", counts(started=3, succeeded=3))
        await asyncio.sleep(2 * LEASE_S)  # no later sweep counts them again
        await counts_become(gw, "pair", counts(started=3, succeeded=3))
