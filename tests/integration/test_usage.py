"""Usage accounting end to end: real nats-server, real gateways and workers, the ledger read back through
GET /v1/usage (JSON and CSV), the counters on /metrics and usage.anomaly events (docs/usage.md)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
import yaml
from dataplane import (
    ADMIN,
    ECHO,
    ECHO_ONLY,
    TENANT,
    GatewayUnderTest,
    copy_manifests,
    events,
    gateway,
    job_final,
    kill,
    until,
    worker,
    worker_process,
)

from switchyard.client import AsyncClient, Client, Forbidden, UsageRow
from switchyard.gateway import usage_api
from switchyard.jetstream import ensure_usage_stream
from switchyard.messages import Result, WorkItem
from switchyard.natsserver import NatsServer
from switchyard.subjects import USAGE_STREAM
from switchyard.worker import TransientError
from switchyard.worker.usage import UsageLedger, usage_record

GPUS = 2.0
ADMIN_KEY = ADMIN["Authorization"].split()[1]


async def counting(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    """A generator handler that reports tokens: 3 in and 2 out per item; fails its first attempt when asked."""
    if ctx.params.get("fail_first") and ctx.attempt == 1:
        raise TransientError("first attempt fails")
    for item in items:
        yield item
    ctx.usage = {"input_tokens": 3 * len(items), "output_tokens": 2 * len(items)}


def since() -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")


async def usage(gw: GatewayUnderTest, start: str, headers: dict[str, str] = ADMIN, **query: str) -> Any:
    q = "&".join(f"{k}={v}" for k, v in {"from": start, **query}.items())
    r = await gw.call("GET", f"/v1/usage?{q}", headers=headers)
    assert r.status == 200, r.body
    return r.body


async def settled(gw: GatewayUnderTest, start: str, requests: int, **query: str) -> list[dict[str, Any]]:
    """The rows once the ledger holds `requests` requests (a worker appends a record after it answered)."""
    rows: list[dict[str, Any]] = []

    async def count() -> int:
        nonlocal rows
        rows = (await usage(gw, start, **query))["usage"]
        return sum(r["requests"] for r in rows)

    for _ in range(200):
        if await count() >= requests:
            break
        await asyncio.sleep(0.1)
    assert sum(r["requests"] for r in rows) == requests, rows
    await asyncio.sleep(0.5)  # nothing more comes: a later look must not find more
    assert sum(r["requests"] for r in (await usage(gw, start, **query))["usage"]) == requests
    return rows


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_sync_streamed_and_202_jobs_are_counted_per_key(nats_server: NatsServer) -> None:
    start = since()
    async with gateway(nats_server.url) as gw, worker(nats_server.url, counting, gpus=GPUS):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer(op="generate", items=["a", "b"])).status == 200
        r = await gw.call("POST", "/v1/generate/test/echo", headers={**ADMIN, "Accept": "text/event-stream"},
                          json={"items": ["c", "d", "e"]})
        assert r.status == 200 and "event: done" in r.body
        job = await gw.call("POST", "/v1/generate/test/echo", headers={**ECHO_ONLY, "Prefer": "respond-async"},
                            json={"items": ["f"]})
        assert job.status == 202
        assert (await job_final(gw, job.body["job_id"], ECHO_ONLY)).body["state"] == "succeeded"

        rows = await settled(gw, start, 3, group_by="tenant,key,model,machine_profile")
        assert [(r["tenant"], r["key"], r["requests"], r["items"], r["input_tokens"], r["output_tokens"])
                for r in rows] == [("admin", "admin", 2, 5, 15, 10), ("echo-only", "echo-only", 1, 1, 3, 2)]
        for r in rows:
            assert r["model"] == "test/echo" and r["machine_profile"] == "cpu" and r["attempts"] == r["requests"]
            assert r["compute_seconds"] > 0 and r["gpu_seconds"] == pytest.approx(GPUS * r["compute_seconds"],
                                                                                   abs=1e-5)
        # One tenant only, and the default grouping (by tenant).
        only = await usage(gw, start, tenant="echo-only")
        assert only["group_by"] == ["tenant"] and [r["tenant"] for r in only["usage"]] == ["echo-only"]
        # The counters say the same (one gateway: its counts are the total), once it has read the ledger.
        text = ""

        async def counted() -> bool:
            nonlocal text
            text = await gw.metrics()
            return metric(text, "switchyard_usage_requests_total") == 3

        for _ in range(300):
            if await counted():
                break
            await asyncio.sleep(0.1)
        assert metric(text, "switchyard_usage_requests_total", tenant="admin") == 2
        assert metric(text, "switchyard_usage_items_total", tenant="echo-only", model="test/echo") == 1
        assert metric(text, "switchyard_usage_tokens_total", tenant="admin", direction="input") == 15
        assert metric(text, "switchyard_usage_gpu_seconds_total", tenant="admin", machine_profile="cpu") > 0
        assert "key=" not in "".join(line for line in text.splitlines() if line.startswith("switchyard_usage_"))


async def test_retried_attempts_count_once_as_a_request(nats_server: NatsServer) -> None:
    start = since()
    # The first worker makes the lane consumer with a short ack wait, then is SIGKILLed holding a 202 job:
    # it measured nothing, so its attempt leaves no record; the redelivery's attempt counts.
    doomed = worker_process(nats_server.url, "handlers_for_tests:slow_echo", "test/echo", "--ack-wait", "1.5")
    try:
        async with gateway(nats_server.url) as gw:
            await gw.wait_for_workers(ECHO)
            job = await gw.call("POST", "/v1/encode/test/echo", headers={**ECHO_ONLY, "Prefer": "respond-async"},
                                json={"items": ["x"], "params": {"sleep": 30}})
            assert job.status == 202
            await until(lambda: any(b.in_flight for b in gw.state.registry.live()), 20, "the item in flight")
            kill(doomed)
            async with worker(nats_server.url, counting, gpus=GPUS, nak_delay_s=0.05):
                final = await job_final(gw, job.body["job_id"], ECHO_ONLY, timeout=60)
                assert final.body["state"] == "succeeded" and final.body["attempts"] == 2
                rows = await settled(gw, start, 1, group_by="key")
                assert (rows[0]["key"], rows[0]["requests"], rows[0]["attempts"], rows[0]["items"]) == (
                    "echo-only", 1, 1, 1)
                # An attempt that failed and was retried held the worker too: two attempts, one request.
                assert (await gw.infer(op="generate", items=["a"], params={"fail_first": True})).status == 200
                rows = await settled(gw, start, 2, group_by="key")
                assert [(r["key"], r["requests"], r["attempts"], r["items"]) for r in rows] == [
                    ("admin", 1, 2, 1), ("echo-only", 1, 1, 1)]
    finally:
        kill(doomed)


BILLING = {"Authorization": "Bearer billing-key-0123456789abcdef"}


def with_usage(dest: Path, **spec: Any) -> Path:
    """The test manifests with spec.usage set, and a `billing` key (tenant billing) holding only readUsage."""
    path = copy_manifests(dest) / "gateway.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["spec"]["usage"] = spec
    docs[0]["spec"]["auth"]["apiKeys"].append({"name": "billing", "secretRef": {"name": "keys", "key": "billing"},
                                               "scopes": ["readUsage"]})
    docs[1]["stringData"]["billing"] = BILLING["Authorization"].split()[1]
    path.write_text(yaml.safe_dump_all(docs))
    return dest


async def test_two_gateways_count_exactly_and_one_anomaly_is_one_event(nats_server: NatsServer,
                                                                      tmp_path: Path) -> None:
    # A short window and a small minimum: a burst of 24 after one quiet request is 10x its baseline, while
    # a steady 2 a second from another key (20 a window, past the minimum) is never an anomaly.
    config = with_usage(tmp_path, anomaly={"windowSeconds": 10, "baselineSeconds": 60, "minRequests": 12})
    start = since()
    async with gateway(nats_server.url, config) as a, gateway(nats_server.url, config) as b, \
            worker(nats_server.url, counting, gpus=GPUS):
        await a.wait_for_workers(ECHO)
        await b.wait_for_workers(ECHO)
        async with events(a, ADMIN) as seen_a, events(b, ADMIN) as seen_b, events(a, ECHO_ONLY) as tenant_feed:
            stop = asyncio.Event()
            steady_sent = 0

            async def steady() -> None:  # the admin key, at a steady rate, through the other key's burst
                nonlocal steady_sent
                while not stop.is_set():
                    assert (await b.infer(items=["tick"])).status == 200
                    steady_sent += 1
                    await asyncio.sleep(0.5)

            ticker = asyncio.create_task(steady())
            assert (await a.infer(items=["first"], headers=ECHO_ONLY)).status == 200
            # The key needs a baseline: seen for at least one window before the current one (10 s each).
            await asyncio.sleep(21)
            replies = await asyncio.gather(*[(a if i % 2 else b).infer(items=[i], headers=ECHO_ONLY)
                                             for i in range(24)])
            assert all(r.status == 200 for r in replies)
            for gw in (a, b):  # both read the same ledger: the same totals, not doubled
                rows = await settled(gw, start, 25, tenant="echo-only")
                assert [(r["tenant"], r["requests"], r["items"]) for r in rows] == [("echo-only", 25, 25)]
            await until(lambda: seen_a.of("usage.anomaly") and seen_b.of("usage.anomaly"), 30,
                        "the anomaly event on both gateways' feeds")
            await asyncio.sleep(10.0)  # another window of the steady key's, judged against its baseline
            stop.set()
            await ticker
            assert steady_sent >= 20  # it ran throughout (about 2 a second when the machine keeps up)
            assert len(seen_a.of("usage.anomaly")) == 1 and len(seen_b.of("usage.anomaly")) == 1
            anomaly = seen_a.of("usage.anomaly")[0]
            assert anomaly == seen_b.of("usage.anomaly")[0]  # the same stored event, by id
            assert anomaly["data"]["tenant"] == "echo-only" and anomaly["data"]["key"] == "echo-only"
            assert anomaly["data"]["requests"] >= 12
            assert tenant_feed.of("usage.anomaly") == []  # usage is for keys that read usage only
        # Each record counted by one replica: the sum over replicas is the total, and one anomaly counted once.
        texts: list[str] = []
        for _ in range(300):
            texts = [await a.metrics(), await b.metrics()]
            if sum(metric(t, "switchyard_usage_requests_total", tenant="echo-only") for t in texts) >= 25:
                break
            await asyncio.sleep(0.1)
        assert sum(metric(t, "switchyard_usage_requests_total", tenant="echo-only") for t in texts) == 25
        assert sum(metric(t, "switchyard_usage_anomalies_total") for t in texts) == 1


async def test_usage_is_for_keys_that_read_usage_and_every_bad_input_is_refused(nats_server: NatsServer,
                                                                                monkeypatch: Any,
                                                                                tmp_path: Path) -> None:
    start = since()
    async with gateway(nats_server.url, with_usage(tmp_path)) as gw, worker(nats_server.url, counting):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer(items=["a"])).status == 200
        assert (await gw.infer(items=["b", "c"], headers=ECHO_ONLY)).status == 200
        await settled(gw, start, 2)
        # Another tenant's usage is nobody else's business: a tenant key gets 403, its own tenant's too.
        for headers in (TENANT, ECHO_ONLY):
            for query in (f"from={start}", f"from={start}&tenant=echo-only"):
                r = await gw.call("GET", f"/v1/usage?{query}", headers=headers)
                assert r.status == 403 and r.body["error"]["code"] == "forbidden", r.body
        r = await gw.call("GET", f"/v1/usage?from={start}")
        assert r.status == 401
        # The readUsage scope alone (no admin) reads every tenant's usage, and only that: not another's jobs.
        rows = (await usage(gw, start, headers=BILLING))["usage"]
        assert [(u["tenant"], u["requests"]) for u in rows] == [("admin", 1), ("echo-only", 1)]
        listed = await gw.call("GET", "/v1/jobs?tenant=echo-only", headers=BILLING)
        assert listed.status == 403, listed.body
        # The SDK, async and sync: typed rows, and Forbidden for a key that does not read usage.
        begin = dt.datetime.fromisoformat(start)
        async with AsyncClient(gw.url, api_key=ADMIN_KEY) as client:
            rows = await client.usage(begin, group_by=["tenant", "key"])
            assert [(u.tenant, u.key, u.requests, u.items, u.model) for u in rows] == [
                ("admin", "admin", 1, 1, None), ("echo-only", "echo-only", 1, 2, None)]
        async with AsyncClient(gw.url, api_key=ECHO_ONLY["Authorization"].split()[1]) as client:
            with pytest.raises(Forbidden):
                await client.usage(begin)

        def sync_usage() -> list[UsageRow]:
            with Client(gw.url, api_key=ADMIN_KEY) as client:
                return client.usage(begin, tenant="echo-only")

        assert [(u.tenant, u.requests) for u in await asyncio.to_thread(sync_usage)] == [("echo-only", 1)]
        # CSV: a header row, one row per tenant, parsed by the csv module; by format= and by Accept.
        for path, headers in ((f"/v1/usage?from={start}&format=csv&group_by=model,tenant", ADMIN),
                              (f"/v1/usage?from={start}&group_by=model,tenant", {**ADMIN, "Accept": "text/csv"})):
            async with gw.http.get(gw.url + path, headers=headers) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
                raw = await resp.read()
            assert b"\r\n" in raw
            table = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
            assert list(table[0]) == ["tenant", "model", "requests", "items", "attempts", "input_tokens",
                                      "output_tokens", "compute_seconds", "gpu_seconds"]
            assert [(t["tenant"], t["model"], t["requests"], t["items"]) for t in table] == [
                ("admin", "test/echo", "1", "1"), ("echo-only", "test/echo", "1", "2")]
        # A range that ends before the work: nothing.
        r = await usage(gw, "2026-01-01T00:00:00Z", to="2026-01-02T00:00:00Z")
        assert r["usage"] == [] and r["records"] == 0
        bad = {
            "": '"from" is required',
            "from=yesterday": "RFC 3339",
            "from=2026-11-01T00:00:00": "offset",
            f"from={start}&to=2020-01-01T00:00:00Z": "must be after",
            "from=2025-01-01T00:00:00Z&to=2025-03-01T00:00:00Z": "at most 31 days",
            f"from={start}&group_by=secret": "group_by",
            f"from={start}&format=xml": "format",
            f"from={start}&tenant=Not_A_Tenant": "tenant",
            f"from={start}&limit=5": "unknown query parameter",
        }
        for query, message in bad.items():
            r = await gw.call("GET", f"/v1/usage?{query}", headers=ADMIN)
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (query, r.body)
            assert message in r.body["error"]["message"], (query, r.body)
        r = await gw.call("GET", f"/v1/usage?from={start}&api_key=x", headers=ADMIN)
        assert r.status == 400  # a key in the URL is refused before anything else
        # Past the scan bound: 413 before reading anything. (The bound lowered for the test: a million records
        # are measured in bench/usage.py instead.)
        monkeypatch.setattr(usage_api, "MAX_SCAN", 1)
        r = await gw.call("GET", f"/v1/usage?from={start}", headers=ADMIN)
        assert r.status == 413 and r.body["error"]["code"] == "usage_range_too_large", r.body
        assert "holds 2 usage records" in r.body["error"]["message"]
        monkeypatch.setattr(usage_api, "MAX_SCAN", 2)
        assert (await gw.call("GET", f"/v1/usage?from={start}", headers=ADMIN)).status == 200


async def test_the_gateway_keeps_the_ledger_as_spec_usage_says(nats_server: NatsServer, tmp_path: Path) -> None:
    """spec.usage.retentionDays on the stream; a ledger a worker made first (default retention), or one the
    server lost, is put right by the gateway within seconds, and usage is still counted."""
    week = 7 * 86_400.0
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()

    async def max_age() -> float | None:
        try:
            return float((await js.stream_info(USAGE_STREAM)).config.max_age or 0.0)
        except nats.js.errors.NotFoundError:
            return None

    async def becomes(value: float) -> None:
        for _ in range(300):
            if await max_age() == value:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the ledger's max_age is {await max_age()}, not {value}")

    try:
        await ensure_usage_stream(js)  # a worker came first: the default retention
        assert await max_age() == 35 * 86_400.0
        start = since()
        async with gateway(nats_server.url, with_usage(tmp_path, retentionDays=7)) as gw, \
                worker(nats_server.url, counting):
            await becomes(week)
            await js.delete_stream(USAGE_STREAM)  # lost (a NATS server that lost its store)
            await becomes(week)
            await gw.wait_for_workers(ECHO)
            assert (await gw.infer(items=["after"])).status == 200
            assert [(r["tenant"], r["requests"]) for r in await settled(gw, start, 1)] == [("admin", 1)]
    finally:
        await nc.close()


async def test_a_record_nats_cannot_take_is_logged_as_lost_not_retried_forever(nats_server: NatsServer,
                                                                               caplog: Any) -> None:
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        ledger = UsageLedger(nc.jetstream(timeout=0.5), retry_s=1.0)
        item = WorkItem(id="r1", op="encode", model="test/echo", bundle="default", machine_profile="cpu",
                        pool="default", items=["x"], tenant="acme", key_name="acme-key")
        record = usage_record(item, Result(id="r1", ok=True, timing={"compute_ms": 5.0}), final=True, gpus=1.0,
                              worker="w")
        assert await ledger.append(record)  # made the ledger (no gateway yet) and stored it
        nats_server.stop()  # a real outage, not a stand-in
        assert not await ledger.append(record)
        assert ledger.lost == 1
        assert any(r.getMessage() == "usage record lost" and r.request_id == "r1" for r in caplog.records)
        nats_server.start()  # back, so the client closes cleanly
        await until(lambda: nc.is_connected, 20, "the client reconnected")
    finally:
        await nc.close()
