"""Priority classes and fair share between tenants on one lane (issue 10 §4), against a real nats-server,
the real gateway and the real worker runtime: the order a worker starts items in is recorded by its handler.

A "batch" is what one worker holds at once: its concurrency. The promise: a higher class, or another
tenant, waits for at most one batch of what was queued before it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from dataplane import GatewayUnderTest, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer
from switchyard.subjects import WORK_STREAM, Lane

MODEL = "test/fair"
LANE = Lane(MODEL, "default", "cpu", "default")
A = {"Authorization": "Bearer fair-tenant-a-key-0123456789"}  # tier pro: may send X-Priority
A_GOLD = {"Authorization": "Bearer fair-tenant-a-gold-0123456789"}  # the same tenant, tier gold: high
B = {"Authorization": "Bearer fair-tenant-b-key-0123456789"}  # tier default: normal, may not send it
OPS = {"Authorization": "Bearer fair-ops-admin-key-0123456789"}  # admin: dead letters

CONFIG = f"""apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {{name: fair}}
spec:
  auth:
    apiKeys:
      - {{name: a, secretRef: {{name: keys, key: a}}, tier: pro}}
      - {{name: a-gold, secretRef: {{name: keys, key: a-gold}}, tenant: a, tier: gold}}
      - {{name: b, secretRef: {{name: keys, key: b}}}}
      - {{name: ops, secretRef: {{name: keys, key: ops}}, admin: true}}
  priority:
    tiers: {{gold: high}}
    headerTiers: [pro]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
  a: {A["Authorization"][7:]}
  a-gold: {A_GOLD["Authorization"][7:]}
  b: {B["Authorization"][7:]}
  ops: {OPS["Authorization"][7:]}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {{name: fair}}
spec:
  model: {MODEL}
  operations: [encode]
  machineProfiles: [cpu]
  timeoutSeconds: 60
  maxAttempts: 2
  workers: {{service: fair}}
"""


class Served:
    """The handler: records the tag of each item as it starts, then takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.order: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, items: list[Any], ctx: Any) -> list[Any]:
        with self._lock:
            self.order.append(items[0]["text"])
        time.sleep(self.seconds)
        return items


@asynccontextmanager
async def stack(nats_url: str, tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    (tmp_path / "all.yaml").write_text(CONFIG)
    async with gateway(nats_url, tmp_path) as gw:
        yield gw


async def queue(gw: GatewayUnderTest, headers: dict[str, str], tag: str, priority: str | None = None) -> str:
    h = {**headers, "Prefer": "respond-async", **({"X-Priority": priority} if priority else {})}
    r = await gw.call("POST", f"/v1/encode/{MODEL}", headers=h, json={"items": [{"text": tag}]})
    assert r.status == 202, (r.status, r.body)
    return str(r.body["job_id"])


async def queue_many(gw: GatewayUnderTest, headers: dict[str, str], prefix: str, n: int,
                     priority: str | None = None) -> list[str]:
    jobs: list[str] = []
    for start in range(0, n, 25):
        jobs += await asyncio.gather(*(queue(gw, headers, f"{prefix}{i}", priority)
                                       for i in range(start, min(n, start + 25))))
    return jobs


async def test_a_higher_class_is_served_before_the_lower_class_backlog(nats_server: NatsServer,
                                                                       tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as gw:
        await queue_many(gw, A, "low", 40, priority="low")
        await queue(gw, A, "normal")  # no header, tier pro: normal
        served = Served(0.0)
        async with worker(nats_server.url, served, model=MODEL, concurrency=1):
            await until(lambda: len(served.order) >= 41, 60, "the backlog served")
        # Everything waited when the worker started: the normal item first, then the low ones.
        assert served.order[0] == "normal"
        assert sorted(served.order[1:]) == sorted(f"low{i}" for i in range(40))

        served = Served(0.1)
        await queue_many(gw, A, "low", 40, priority="low")
        async with worker(nats_server.url, served, model=MODEL, concurrency=2):
            await until(lambda: len(served.order) >= 4, 60, "the worker busy on the low backlog")
            gold = await queue(gw, A_GOLD, "gold")  # the same tenant, tier gold: high without a header
            asked = await queue(gw, A, "asked", priority="HIGH")  # tier pro may ask, in any case
            # Counted once both are stored (their 202s are back): what started while the requests were on
            # their way is not the scheduler's doing, and on a loaded machine that can be a few items.
            before = len(served.order)
            await job_final(gw, gold, headers=A, timeout=60)
            await job_final(gw, asked, headers=A, timeout=60)
            order = list(served.order)
        # Started after both were queued and before them: at most the batch in hand (concurrency 2).
        assert order.index("gold") - before <= 2 and order.index("asked") - before <= 3, order


async def test_one_item_of_a_tenant_waits_at_most_a_batch_behind_another_tenants_burst(
        nats_server: NatsServer, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as gw:
        await queue_many(gw, A, "a", 300)
        served = Served(0.02)
        async with worker(nats_server.url, served, model=MODEL, concurrency=2):
            await until(lambda: len(served.order) >= 10, 60, "the worker busy on A's burst")
            job = await queue(gw, B, "b")
            before = len(served.order)  # once B's item is stored, as above
            await job_final(gw, job, headers=B, timeout=60)
            order = list(served.order)
            # A's burst still waits (most of it) while B is already done: B went ahead of it.
            left = (await gw.state.dispatcher.js.stream_info(WORK_STREAM, subjects_filter=LANE.queues)).state.messages
        assert order.index("b") - before <= 2, order[before:before + 10]
        assert left > 200
        # And B sees its own record; A cannot read it (job keys are per tenant).
        assert (await gw.call("GET", f"/v1/jobs/{job}", headers=A)).status == 404


async def test_x_priority_needs_a_tier_allowed_to_send_it(nats_server: NatsServer, tmp_path: Path) -> None:
    async with stack(nats_server.url, tmp_path) as gw:
        url = f"/v1/encode/{MODEL}"
        body = {"items": [{"text": "x"}]}
        r = await gw.call("POST", url, headers={**B, "X-Priority": "high"}, json=body)
        assert r.status == 403 and r.body["error"]["code"] == "forbidden"
        assert "X-Priority" in r.body["error"]["message"] and "headerTiers" in r.body["error"]["message"]
        # Not even to lower itself: the class is the tier's, and nothing was queued.
        r = await gw.call("POST", url, headers={**B, "X-Priority": "low"}, json=body)
        assert r.status == 403
        r = await gw.call("POST", url, headers={**A, "X-Priority": "urgent"}, json=body)
        assert r.status == 400 and r.body["error"]["code"] == "bad_request"
        assert "high, normal, low" in r.body["error"]["message"]
        # The OpenAI endpoint reads the same header.
        r = await gw.call("POST", "/v1/embeddings", headers={**B, "X-Priority": "high"},
                          json={"model": MODEL, "input": "x"})
        assert r.status == 403 and r.body["error"]["code"] == "forbidden"
        info = await gw.state.dispatcher.js.stream_info(WORK_STREAM)
        assert info.state.messages == 0


async def test_items_wait_on_a_queue_per_class_and_tenant(nats_server: NatsServer, tmp_path: Path) -> None:
    """The subject layout behind it: KEDA's demand still counts every item of the lane."""
    async with stack(nats_server.url, tmp_path) as gw:
        await queue(gw, A, "1", priority="low")
        await queue(gw, A_GOLD, "2")
        await queue(gw, B, "3")
        await queue(gw, B, "4")
        js = gw.state.dispatcher.js
        subjects = (await js.stream_info(WORK_STREAM, subjects_filter=LANE.queues)).state.subjects
        assert subjects == {LANE.queue("low", "a"): 1, LANE.queue("high", "a"): 1, LANE.queue("normal", "b"): 2}
        await gw.state.demand.poll(js)
        assert gw.state.demand.by_lane == {LANE: 4}
        async with aiohttp.ClientSession() as http, http.get(gw.metrics_url) as resp:
            text = await resp.text()
        assert 'switchyard_gateway_pending_demand{bundle="default",machine_profile="cpu",pool="default"} 4.0' in text


async def test_a_dead_letter_is_counted_on_its_lane_and_requeued_to_its_own_queue(nats_server: NatsServer,
                                                                                   tmp_path: Path) -> None:
    """The MSG_TERMINATED advisory names a queue's consumer; the letter keeps the queue, so a re-queued
    item keeps its class and tenant."""
    def broken(items: list[Any], ctx: Any) -> list[Any]:
        raise RuntimeError("down")

    async with stack(nats_server.url, tmp_path) as gw:
        job = await queue(gw, A, "doomed", priority="low")
        async with worker(nats_server.url, broken, model=MODEL, nak_delay_s=0.05):
            assert (await job_final(gw, job, headers=A, timeout=60)).body["state"] == "failed"
            letters: list[dict[str, Any]] = []

            async def found() -> bool:
                letters[:] = (await gw.call("GET", "/v1/deadletters", headers=OPS)).body["dead_letters"]
                return bool(letters)

            deadline = time.monotonic() + 30
            while not await found():
                assert time.monotonic() < deadline, "no dead letter"
                await asyncio.sleep(0.1)
            counted = ('switchyard_gateway_dead_letters_total{bundle="default",machine_profile="cpu",'
                       'model="test/fair",pool="default"} 1.0')
            await until_async(lambda: _metric_has(gw, counted), 30, "the dead letter counted on its lane")
        assert [(d["tenant"], d["job_id"]) for d in letters] == [("a", job)]
        r = await gw.call("POST", "/v1/deadletters/requeue", headers=OPS, json={"ids": [letters[0]["id"]]})
        assert r.status == 200 and r.body["requeued"][0]["requeued"] is True
        js = gw.state.dispatcher.js
        subjects = (await js.stream_info(WORK_STREAM, subjects_filter=LANE.queues)).state.subjects
        assert subjects == {LANE.queue("low", "a"): 1}


async def _metric_has(gw: GatewayUnderTest, line: str) -> bool:
    return line in await gw.metrics()


async def until_async(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for: {what}"
        await asyncio.sleep(0.1)
