"""The learned cold-start ETA and `Prefer: wait` holds: real nats-server, real gateways, real workers."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson
from dataplane import ADMIN, copy_manifests, gateway, job_final, until, worker

from switchyard.client import AsyncClient
from switchyard.gateway.eta import lane_key
from switchyard.natsserver import NatsServer
from switchyard.subjects import COLDSTART_BUCKET, Lane

COLD = Lane("test/cold", "default", "cpu", "default")
COLD_UPSTREAM = """
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: cold}
spec:
  model: test/cold
  operations: [encode]
  machineProfiles: [cpu]
  timeoutSeconds: 30
  scaling: {coldStartSeconds: 42}
  workers: {service: cold}
"""


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


def manifests(tmp_path: Path) -> Path:
    d = copy_manifests(tmp_path / "manifests")
    with open(d / "upstreams.yaml", "a") as f:
        f.write(COLD_UPSTREAM)
    return d


async def _history(url: str, timeout: float = 10.0) -> list[float]:
    """The lane's measured cold starts, as the gateways keep them in the shared bucket."""
    nc = await nats.connect(url)
    try:
        kv = await nc.jetstream().key_value(COLDSTART_BUCKET)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return [float(x) for x in orjson.loads((await kv.get(f"h.{lane_key(COLD)}")).value)]
            except nats.js.errors.NotFoundError:
                if time.monotonic() > deadline:
                    raise AssertionError("no cold start recorded") from None
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def _infer(gw: Any, rid: str, prefer: str | None = None, model: str = "test/cold") -> Any:
    headers = {"X-Request-ID": rid, **({"Prefer": prefer} if prefer else {})}
    return await gw.infer(model, items=[{"text": rid}], headers=headers)


async def test_eta_default_then_learned_and_shared_by_replicas(nats_server: NatsServer, tmp_path: Path) -> None:
    d = manifests(tmp_path)
    async with gateway(nats_server.url, d) as a, gateway(nats_server.url, d) as b:
        # No measurement yet: the Upstream's coldStartSeconds.
        r = await _infer(a, "first")
        assert r.status == 202, r.body
        assert r.body["estimated_wait_s"] == 42 and r.headers["Retry-After"] == "42"
        job = await b.call("GET", "/v1/jobs/first", headers=ADMIN)
        assert job.body["state"] == "queued" and 0.1 <= job.body["estimated_wait_s"] <= 42
        # Another 202 on the same cold lane joins the same episode: both replicas count from its start.
        r = await _infer(b, "second")
        assert r.status == 202 and 0.1 <= r.body["estimated_wait_s"] <= 42

        await asyncio.sleep(3)  # the worker starts at least 3 s after the first demand
        async with worker(nats_server.url, echo, model="test/cold"):
            for rid in ("first", "second"):
                assert (await job_final(a, rid)).body["state"] == "succeeded"
            samples = await _history(nats_server.url)
        assert len(samples) == 1 and 3 <= samples[0] < 42, samples  # one replica recorded the episode
        await until(lambda: a.state.registry.serving(COLD) == 0 and b.state.registry.serving(COLD) == 0,
                    15, "the worker gone from both replicas")

        # The next cold start is estimated from the measured one, by either replica.
        async def learned(gw: Any, rid: str) -> float:
            r = await _infer(gw, rid)
            assert r.status == 202, r.body
            assert r.headers["Retry-After"] == str(math.ceil(r.body["estimated_wait_s"]))  # whole seconds, up
            return float(r.body["estimated_wait_s"])

        eta_a = await learned(a, "third")
        eta_b = await learned(b, "fourth")
        assert 3 <= eta_a < 42, eta_a
        assert abs(eta_a - eta_b) <= 1, (eta_a, eta_b)  # the same history; at most a second apart
        job = await a.call("GET", "/v1/jobs/fourth", headers=ADMIN)
        assert job.body["state"] == "queued" and 0.1 <= job.body["estimated_wait_s"] <= eta_a


async def test_prefer_wait_answers_200_when_a_worker_starts_within_the_hold(nats_server: NatsServer,
                                                                             tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        held = asyncio.create_task(_infer(gw, "held-1", "wait=25"))
        await until(lambda: gw.state.holds.held(COLD) == 1, 10, "the request held")
        async with worker(nats_server.url, echo, model="test/cold"):
            r = await asyncio.wait_for(held, 30)
            assert r.status == 200, r.body
            assert r.headers["Preference-Applied"] == "wait=25"
            assert r.body["items"] == [{"text": "held-1"}]
            # It was a job all along: exactly one final state, the one answered.
            job = await job_final(gw, "held-1")
            assert job.body["state"] == "succeeded" and job.body["result"]["items"] == [{"text": "held-1"}]
            # With a live worker there is nothing to hold: the synchronous path, no Preference-Applied.
            r = await _infer(gw, "live-1", "wait=25")
            assert r.status == 200 and "Preference-Applied" not in r.headers


async def test_prefer_wait_answers_202_after_the_hold_and_the_job_still_runs(nats_server: NatsServer,
                                                                              tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        t0 = time.monotonic()
        r = await _infer(gw, "late-1", "respond-async, wait=1")
        assert r.status == 202, r.body
        assert r.headers["Preference-Applied"] == "wait=1" and time.monotonic() - t0 >= 1
        assert r.body["job_id"] == "late-1" and r.body["estimated_wait_s"] >= 1
        # The hold is capped by the Upstream's timeoutSeconds (test/slow: 1 s).
        r = await _infer(gw, "capped-1", "wait=600", model="test/slow")
        assert r.status == 202 and r.headers["Preference-Applied"] == "wait=1"
        # Malformed or zero preferences are ignored (RFC 7240): a 202 at once, nothing applied.
        for i, prefer in enumerate(["wait=soon", "wait=-1", "wait", "wait=0", "wait=1.5"]):
            r = await _infer(gw, f"ignored-{i}", prefer)
            assert r.status == 202 and "Preference-Applied" not in r.headers, prefer
        # A resend of the held request gets the same job, without holding again.
        r = await _infer(gw, "late-1", "wait=1")
        assert r.status == 202 and r.body["job_id"] == "late-1" and "Preference-Applied" not in r.headers
        async with worker(nats_server.url, echo, model="test/cold"):
            job = await job_final(gw, "late-1")
            assert job.body["state"] == "succeeded" and job.body["result"]["items"] == [{"text": "late-1"}]


async def test_holds_per_lane_are_bounded(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        gw.state.holds.limit = 2
        held = [asyncio.create_task(_infer(gw, f"held-{i}", "wait=20")) for i in range(2)]
        await until(lambda: gw.state.holds.held(COLD) == 2, 10, "two requests held")
        r = await _infer(gw, "over", "wait=20")  # over the bound: the 202 at once
        assert r.status == 202 and "Preference-Applied" not in r.headers
        assert all(not t.done() for t in held)
        async with worker(nats_server.url, echo, model="test/cold"):
            for t in held:
                r = await asyncio.wait_for(t, 30)
                assert r.status == 200 and r.headers["Preference-Applied"] == "wait=20"
            assert (await job_final(gw, "over")).body["state"] == "succeeded"
        assert gw.state.holds.held(COLD) == 0


async def test_sdk_wait_for_capacity_holds_then_polls(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        # A worker starting within the hold: the answer is the 200 of the held request itself.
        async with AsyncClient(gw.url, api_key=ADMIN["Authorization"].split()[1], timeout=30) as sy:
            call = asyncio.create_task(sy.encode("test/cold", "a", wait_for_capacity=True, capacity_timeout=60))
            await until(lambda: gw.state.holds.held(COLD) == 1, 10, "the SDK's request held")
            async with worker(nats_server.url, echo, model="test/cold"):
                out = await asyncio.wait_for(call, 30)
        assert out.items == [{"text": "a"}] and out.job_id is None  # not from polling the job
        await until(lambda: gw.state.registry.serving(COLD) == 0, 15, "the worker gone")

        # A worker starting after the hold (timeout 7: a 2 s hold): the SDK falls back to polling the job.
        async with AsyncClient(gw.url, api_key=ADMIN["Authorization"].split()[1], timeout=7) as sy:
            call = asyncio.create_task(sy.encode("test/cold", "b", wait_for_capacity=True, capacity_timeout=60,
                                                 poll_interval=0.5))
            await until(lambda: gw.state.holds.held(COLD) == 1, 10, "the SDK's request held")
            await until(lambda: gw.state.holds.held(COLD) == 0, 10, "the hold over")
            async with worker(nats_server.url, echo, model="test/cold"):
                out = await asyncio.wait_for(call, 30)
        assert out.items == [{"text": "b"}] and out.job_id


async def test_a_resent_request_on_a_live_lane_teaches_no_cold_start(nats_server: NatsServer, tmp_path: Path) -> None:
    """A duplicate of a 202 job, resent once a worker is live, reads the ETA; it opens no episode."""
    async with gateway(nats_server.url, manifests(tmp_path)) as gw:
        assert (await _infer(gw, "resent")).status == 202
        await asyncio.sleep(1)
        async with worker(nats_server.url, echo, model="test/cold"):
            assert (await job_final(gw, "resent")).body["state"] == "succeeded"
            assert len(await _history(nats_server.url)) == 1
            again = await _infer(gw, "resent")  # inside the dedup window: the same job's 202
            assert again.status == 202 and again.body["job_id"] == "resent"
            await asyncio.sleep(1)  # several watch ticks: a spurious episode would be recorded by now
            kv = gw.state.dispatcher.coldstart
            assert len(await _history(nats_server.url)) == 1
            try:
                await kv.get(f"ep.{lane_key(COLD)}")
                raise AssertionError("an episode was opened for a lane with a live worker")
            except nats.js.errors.NotFoundError:
                pass
