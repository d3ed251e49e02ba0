"""The metrics the dashboard and the alerts read, by value: real nats-server, gateways and workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
from dataplane import ECHO, copy_manifests, gateway, job_final, until, worker
from prometheus_client.parser import text_string_to_metric_families

from switchyard.natsserver import NatsServer
from switchyard.subjects import WORK_STREAM, Lane
from switchyard.worker import TransientError

COLD = Lane("test/cold", "default", "cpu", "default")
UPSTREAMS = """
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: cold}
spec:
  model: test/cold
  operations: [encode]
  machineProfiles: [cpu]
  timeoutSeconds: 30
  scaling: {coldStartSeconds: 40}
  workers: {service: cold}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: flaky}
spec:
  model: test/flaky
  operations: [encode]
  machineProfiles: [cpu]
  timeoutSeconds: 30
  maxAttempts: 2
  workers: {service: flaky}
"""
GROUP = {"pool": "default", "machine_profile": "cpu", "bundle": "default"}


def manifests(tmp_path: Path) -> Path:
    d = copy_manifests(tmp_path / "manifests")
    with open(d / "upstreams.yaml", "a") as f:
        f.write(UPSTREAMS)
    return d


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by its name and label set."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scraped(gw: Any, name: str, **labels: str) -> float | None:
    return value(await gw.metrics(), name, **labels)


async def until_metric(gw: Any, name: str, ok: Any, what: str, timeout: float = 15.0, **labels: str) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = await scraped(gw, name, **labels)
        if v is not None and ok(v):
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {name}{labels} = {v}")
        await asyncio.sleep(0.2)


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_queue_age_and_stream_usage_follow_the_stream(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        before_first = time.time()
        for rid in ("age-1", "age-2"):
            r = await gw.infer(items=[{"text": rid}], headers={"X-Request-ID": rid})
            assert r.status == 202, r.body
        # The oldest item ages while it waits: at least 2 s once 2 s have passed since it was sent.
        await until(lambda: time.time() - before_first >= 2.5, 5, "2.5 s after the first item")
        age = await until_metric(gw, "switchyard_gateway_queue_oldest_age_seconds", lambda v: v >= 2.0,
                                 "the oldest item's age", **GROUP)
        assert age <= time.time() - before_first + 0.5, age  # never older than the item itself
        assert await scraped(gw, "switchyard_gateway_pending_demand", **GROUP) == 2

        # Usage and limits are what JetStream itself reports for the work stream.
        nc = await nats.connect(nats_server.url)
        try:
            info = await nc.jetstream().stream_info(WORK_STREAM)
        finally:
            await nc.close()
        text = await gw.metrics()
        assert value(text, "switchyard_gateway_stream_used", resource="bytes") == info.state.bytes > 0
        assert value(text, "switchyard_gateway_stream_used", resource="messages_per_lane") == 2
        assert value(text, "switchyard_gateway_stream_limit", resource="bytes") == info.config.max_bytes == 1024**3
        assert value(text, "switchyard_gateway_stream_limit", resource="messages_per_lane") == 100_000

        # Drained: the age and the demand go to zero (not a stale value), and so does the usage.
        async with worker(nats_server.url, echo):
            for rid in ("age-1", "age-2"):
                assert (await job_final(gw, rid)).body["state"] == "succeeded"
            await until_metric(gw, "switchyard_gateway_queue_oldest_age_seconds", lambda v: v == 0,
                               "the age back at zero", **GROUP)
            await until_metric(gw, "switchyard_gateway_stream_used", lambda v: v == 0, "the fullest lane empty",
                               resource="messages_per_lane")
            assert await scraped(gw, "switchyard_gateway_pending_demand", **GROUP) == 0


async def test_live_workers_per_fleet_and_back_to_zero(nats_server: NatsServer) -> None:
    fleet = {**GROUP, "model": "test/echo"}
    async with gateway(nats_server.url) as gw:
        async with worker(nats_server.url, echo), worker(nats_server.url, echo):
            await gw.wait_for_workers(ECHO, 2)
            await until_metric(gw, "switchyard_gateway_workers_live", lambda v: v == 2, "two live workers",
                               **fleet)
            assert (await gw.infer()).status == 200  # latency is kept per endpoint and machine profile
            assert await scraped(gw, "switchyard_gateway_request_latency_seconds_count",
                                 endpoint="/v1/{op}/{model}", machine_profile="cpu") == 1
        # Both gone: the fleet reports zero workers, which the "stuck at zero" alert reads.
        await until_metric(gw, "switchyard_gateway_workers_live", lambda v: v == 0, "zero live workers", **fleet)


async def test_ready_follows_nats(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        assert await scraped(gw, "switchyard_gateway_ready") == 1
        nats_server.stop()
        await until_metric(gw, "switchyard_gateway_ready", lambda v: v == 0, "not ready without NATS")
        assert (await gw.call("GET", "/readyz")).status == 503  # the gauge says what /readyz answers
        nats_server.start()
        await until_metric(gw, "switchyard_gateway_ready", lambda v: v == 1, "ready again", timeout=30)


async def test_cold_start_and_eta_accuracy_are_exported_once(nats_server: NatsServer, tmp_path: Path) -> None:
    d = manifests(tmp_path)
    fleet = {**GROUP, "model": "test/cold"}
    async with gateway(nats_server.url, d) as a, gateway(nats_server.url, d) as b:
        r = await a.infer("test/cold", items=[{"text": "x"}], headers={"X-Request-ID": "cold-1"})
        assert r.status == 202 and r.body["estimated_wait_s"] == 40, r.body  # the Upstream's coldStartSeconds
        started = time.time()
        await until(lambda: time.time() - started >= 2, 5, "2 s of cold start")
        async with worker(nats_server.url, echo, model="test/cold"):
            assert (await job_final(a, "cold-1")).body["state"] == "succeeded"

            async def counts() -> tuple[float, float]:
                return tuple([await scraped(gw, "switchyard_gateway_cold_start_seconds_count", **fleet) or 0
                              for gw in (a, b)])  # type: ignore[return-value]

            deadline = time.monotonic() + 15
            while sum(await counts()) < 1:
                assert time.monotonic() < deadline, "no cold start exported"
                await asyncio.sleep(0.2)
            assert sorted(await counts()) == [0, 1]  # one replica recorded it: the sum over replicas is 1
        texts = [await a.metrics(), await b.metrics()]
        text = next(t for t in texts if value(t, "switchyard_gateway_cold_start_seconds_count", **fleet) == 1)
        measured = value(text, "switchyard_gateway_cold_start_seconds_sum", **fleet)
        assert measured is not None and 2 <= measured < 40, measured
        # The ETA given at the start was 40 s: the ratio is the measured time over it.
        assert value(text, "switchyard_gateway_cold_start_eta_ratio_count", **fleet) == 1
        ratio = value(text, "switchyard_gateway_cold_start_eta_ratio_sum", **fleet)
        assert ratio is not None and abs(ratio - measured / 40) < 1e-9, (ratio, measured)


async def test_dead_letters_count_items_that_used_up_their_attempts(nats_server: NatsServer,
                                                                    tmp_path: Path) -> None:
    lane = {**GROUP, "model": "test/flaky"}
    calls: list[str] = []

    def flaky(items: list[Any], ctx: Any) -> list[Any]:
        calls.append(items[0]["text"])
        if items[0]["text"] == "never":
            raise TransientError("always failing", retry_after=0.05)
        return items

    d = manifests(tmp_path)
    async with gateway(nats_server.url, d) as a, gateway(nats_server.url, d) as b:
        async with worker(nats_server.url, flaky, model="test/flaky"):
            await a.wait_for_workers(Lane("test/flaky", "default", "cpu", "default"))
            bad = await a.infer("test/flaky", items=[{"text": "never"}])
            assert bad.status == 502 and bad.body["error"]["code"] == "worker_error", bad.body
            good = await a.infer("test/flaky", items=[{"text": "fine"}])
            assert good.status == 200, good.body
        assert calls.count("never") == 2  # maxAttempts: 2

        async def total() -> float:
            return sum([await scraped(gw, "switchyard_gateway_dead_letters_total", **lane) or 0 for gw in (a, b)])

        deadline = time.monotonic() + 10
        while await total() < 1:
            assert time.monotonic() < deadline, "no dead letter counted"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # a second advisory, or a second replica counting the same one, would show now
        assert await total() == 1  # counted once across the replicas, and not for the item that succeeded


async def test_refusals_are_counted_by_their_error_code(nats_server: NatsServer, tmp_path: Path) -> None:
    from limits_manifests import manifests_with

    config = manifests_with(tmp_path, gateway={"queue": {"maxMessagesPerLane": 1}, "maxRequestBodyBytes": 4096})
    endpoint = "/v1/{op}/{model}"
    async with gateway(nats_server.url, config) as gw:
        assert (await gw.infer(headers={"X-Request-ID": "q-1"})).status == 202
        full = await gw.infer(headers={"X-Request-ID": "q-2"})
        assert full.status == 503 and full.body["error"]["code"] == "queue_full", full.body
        big = await gw.infer(items=[{"text": "x" * 8192}])
        assert big.status == 413 and big.body["error"]["code"] == "payload_too_large", big.body
        text = await gw.metrics()
        assert value(text, "switchyard_gateway_errors_total", endpoint=endpoint, code="queue_full") == 1
        assert value(text, "switchyard_gateway_errors_total", endpoint=endpoint, code="payload_too_large") == 1
        # The 202 is no error: nothing else was counted on that endpoint.
        assert sum(v for (name, labels), v in samples(text).items()
                   if name == "switchyard_gateway_errors_total" and ("endpoint", endpoint) in labels) == 2


async def test_a_redelivery_past_max_attempts_is_a_dead_letter(nats_server: NatsServer) -> None:
    """The holder of the last attempt died (never acked): the next worker fails it at once, counted once."""
    from switchyard.jetstream import ensure_work_stream, lane_consumer_config
    from switchyard.messages import WorkItem

    lane = {**GROUP, "model": "test/echo"}
    async with gateway(nats_server.url) as gw:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_work_stream(js)
            await js.add_consumer(WORK_STREAM, lane_consumer_config(ECHO, ack_wait_s=1.0))
            item = WorkItem(id="died-1", op="encode", model=ECHO.model, bundle=ECHO.bundle,
                            machine_profile=ECHO.machine_profile, pool=ECHO.pool, reply=None, items=["x"],
                            max_attempts=1)
            await js.publish(ECHO.subject, item.encode(), timeout=5)
            holder = await js.pull_subscribe_bind(ECHO.consumer, stream=WORK_STREAM)
            assert len(await holder.fetch(1, timeout=5)) == 1  # taken and never acked: its holder "died"
            await holder.unsubscribe()
        finally:
            await nc.close()
        calls: list[Any] = []

        def record(items: list[Any], ctx: Any) -> list[Any]:
            calls.append(items)
            return items

        async with worker(nats_server.url, record):
            await until_metric(gw, "switchyard_gateway_dead_letters_total", lambda v: v == 1, "one dead letter",
                               **lane)
        assert calls == []  # delivery 2 of an item allowed 1 attempt is failed, not run
