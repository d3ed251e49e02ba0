"""Traffic shaping against real NATS, gateways and workers: weighted bundles, the circuit breaker,
aliases and fallbacks (issue 10 §5; docs/routing.md)."""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from cli_processes import installed_script, start, stop
from dataplane import ADMIN, OTHER, GatewayUnderTest, Reply, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer, free_port
from switchyard.subjects import WORK_STREAM, Lane

KEYS = """\
apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {name: shaping}
spec:
  auth:
    apiKeys:
      - {name: admin, secretRef: {name: keys, key: admin}, admin: true}
      - {name: other, secretRef: {name: keys, key: other}}
      - {name: primary-only, secretRef: {name: keys, key: primary-only}, models: [test/primary]}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData:
  admin: admin-key-0123456789abcdef
  other: other-key-0123456789abcdef
  primary-only: primary-only-key-0123456789
"""
UPSTREAMS = """\
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: split}
spec:
  model: test/split
  operations: [encode]
  machineProfiles: [cpu]
  bundles: [{name: stable, priority: 0, weight: 70}, {name: canary, priority: 1, weight: 30}]
  workers: {service: split}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: flaky}
spec:
  model: test/flaky
  operations: [encode]
  machineProfiles: [cpu]
  maxAttempts: 1
  timeoutSeconds: 20
  circuitBreaker: {consecutiveFailures: 3, coolOffSeconds: 2}
  workers: {service: flaky}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: streamy}
spec:
  model: test/streamy
  operations: [generate]
  machineProfiles: [cpu]
  maxAttempts: 1
  circuitBreaker: {consecutiveFailures: 2, coolOffSeconds: 600}
  workers: {service: streamy}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: fragile}
spec:
  model: test/fragile
  operations: [encode]
  machineProfiles: [cpu]
  maxAttempts: 1
  circuitBreaker: {consecutiveFailures: 2, coolOffSeconds: 600}
  fallback: {model: test/backup, afterSeconds: 600}
  workers: {service: fragile}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: primary}
spec:
  model: test/primary
  aliases: [primary-latest]
  operations: [encode]
  machineProfiles: [cpu]
  scaling: {coldStartSeconds: 600}
  fallback: {model: test/backup, afterSeconds: 30}
  workers: {service: primary}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: patient}
spec:
  model: test/patient
  operations: [encode]
  machineProfiles: [cpu]
  scaling: {coldStartSeconds: 600}
  fallback: {model: test/backup, afterSeconds: 900}
  workers: {service: patient}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: backup}
spec:
  model: test/backup
  operations: [encode]
  machineProfiles: [cpu]
  workers: {service: backup}
"""
PRIMARY_ONLY = {"Authorization": "Bearer primary-only-key-0123456789"}
SPLIT_IDS = [f"split-{i}" for i in range(200)]


def config_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "gateway.yaml").write_text(KEYS)
    (tmp_path / "upstreams.yaml").write_text(UPSTREAMS)
    return tmp_path


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


def vectors(items: list[Any], ctx: Any) -> list[Any]:
    return [[0.5, 0.25] for _ in items]  # an embedding each: what the OpenAI endpoint renders


async def encode(gw: GatewayUnderTest, model: str, headers: dict[str, str], text: str = "hi") -> Reply:
    return await gw.call("POST", f"/v1/encode/{model}", headers=headers, json={"items": [{"text": text}]})


@asynccontextmanager
async def gateway_process(nats_url: str, config: Path, tmp_path: Path) -> AsyncIterator[str]:
    """`switchyard gateway` as its own process: its base URL once /readyz answers 200."""
    port, mport = free_port(), free_port()
    proc = start([installed_script(), "gateway", "--config-dir", str(config), "--nats", nats_url,
                  "--port", str(port), "--metrics-port", str(mport), "--no-access-log"], tmp_path / "gw2.log")
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                assert proc.poll() is None, (tmp_path / "gw2.log").read_text()
                try:
                    async with http.get(url + "/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the gateway process never became ready")
        yield url
    finally:
        stop(proc)


async def resolved(http: aiohttp.ClientSession, url: str, request_id: str) -> dict[str, Any]:
    async with http.post(url + "/v1/configs/resolve", headers=ADMIN,
                         json={"model": "test/split", "op": "encode", "request_id": request_id}) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def test_weighted_split_is_exact_sticky_across_gateway_processes_and_shown(
        nats_server: NatsServer, tmp_path: Path) -> None:
    config = config_dir(tmp_path / "config")
    stable, canary = Lane("test/split", "stable", "cpu", "default"), Lane("test/split", "canary", "cpu", "default")
    async with gateway(nats_server.url, config) as gw, \
            worker(nats_server.url, echo, model="test/split", bundle="stable") as w_stable, \
            worker(nats_server.url, echo, model="test/split", bundle="canary") as w_canary:
        await gw.wait_for_workers(stable)
        await gw.wait_for_workers(canary)
        bundle_of = {w_stable.worker_id: "stable", w_canary.worker_id: "canary"}
        served: dict[str, str] = {}
        for rid in SPLIT_IDS:
            r = await encode(gw, "test/split", {**ADMIN, "X-Request-ID": rid})
            assert r.status == 200, r.body
            served[rid] = bundle_of[r.body["worker"]]
        counts = Counter(served.values())
        # A hash of tenant and request id: exact for a fixed set, and near 70/30.
        assert counts == {"stable": 133, "canary": 67}, counts
        assert abs(counts["stable"] / len(SPLIT_IDS) - 0.7) < 0.1
        # X-Bundle wins over the split.
        r = await encode(gw, "test/split", {**ADMIN, "X-Bundle": "canary", "X-Request-ID": "split-0"})
        assert r.status in (200, 409)  # split-0 was used above: a duplicate, never queued twice
        r = await encode(gw, "test/split", {**ADMIN, "X-Bundle": "canary", "X-Request-ID": "explicit-1"})
        assert r.status == 200 and bundle_of[r.body["worker"]] == "canary"

        async with gateway_process(nats_server.url, config, tmp_path) as url2, aiohttp.ClientSession() as http:
            for rid in SPLIT_IDS:  # another gateway process gives every id the bundle that served it
                shown = await resolved(http, url2, rid)
                assert shown["bundle"] == served[rid], rid
            assert shown["split"] == [{"bundle": "stable", "weight": 70}, {"bundle": "canary", "weight": 30}]
            assert shown["request_id"] == SPLIT_IDS[-1] and shown["outcome"] == "queue"
            # The split is scoped by tenant, as request ids are: another tenant's same ids land elsewhere.
            theirs = []
            for rid in SPLIT_IDS[:40]:
                async with http.post(url2 + "/v1/configs/resolve", headers=OTHER,
                                     json={"model": "test/split", "request_id": rid}) as resp:
                    theirs.append((await resp.json())["bundle"])
            assert theirs != [served[rid] for rid in SPLIT_IDS[:40]]
            async with http.post(url2 + "/v1/configs/resolve", headers=OTHER,
                                 json={"model": "test/split", "request_id": "x" * 129}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_request_id"


FAILING = {"on": True}
CALLS = Counter[str]()


def flaky(items: list[Any], ctx: Any) -> list[Any]:
    CALLS["all"] += 1
    if FAILING["on"] or any(it.get("text") == "poison" for it in items):
        raise RuntimeError("the model is broken")
    return items


async def last_seq(gw: GatewayUnderTest) -> int:
    return int((await gw.state.dispatcher.js.stream_info(WORK_STREAM)).state.last_seq)


async def circuits(gw: GatewayUnderTest) -> list[dict[str, Any]]:
    r = await gw.call("GET", "/health", headers=ADMIN)
    return [c for c in r.body["circuits"] if c["model"] == "test/flaky"]


async def test_breaker_opens_fails_fast_without_queueing_then_a_probe_closes_it(
        nats_server: NatsServer, tmp_path: Path) -> None:
    FAILING["on"] = True
    lane = Lane("test/flaky", "default", "cpu", "default")
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, worker(nats_server.url, flaky,
                                                                             model="test/flaky"):
        await gw.wait_for_workers(lane)
        for headers in (ADMIN, OTHER, ADMIN):  # three failures in a row, of two tenants: the lane's circuit
            r = await encode(gw, "test/flaky", headers)
            assert (r.status, r.body["error"]["code"]) == (502, "worker_error")
        assert [(c["tenant"], c["state"]) for c in await circuits(gw)] == [(None, "open")]
        seq, calls = await last_seq(gw), CALLS["all"]
        for headers in (ADMIN, OTHER, {**ADMIN, "Prefer": "respond-async"}):
            r = await encode(gw, "test/flaky", headers)
            assert (r.status, r.body["error"]["code"]) == (503, "circuit_open"), r.body
            assert 1 <= int(r.headers["Retry-After"]) <= 2
        assert (await last_seq(gw), CALLS["all"]) == (seq, calls)  # nothing queued, no handler ran
        assert 'switchyard_gateway_circuit_state{bundle="default",machine_profile="cpu",model="test/flaky",' \
               'pool="default"} 2.0' in await gw.metrics()

        FAILING["on"] = False  # the handler recovers; after the cool-off a probe goes through
        for _ in range(200):
            if [c["state"] for c in await circuits(gw)] == ["half_open"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the circuit never went half-open: {await circuits(gw)}")
        r = await encode(gw, "test/flaky", OTHER)
        assert r.status == 200, r.body
        assert [c["state"] for c in await circuits(gw)] == ["closed"]
        assert (await encode(gw, "test/flaky", ADMIN)).status == 200
        metrics = await gw.metrics()
        assert 'model="test/flaky",pool="default"} 0.0' in metrics
        assert 'switchyard_gateway_circuit_opened_total{bundle="default",machine_profile="cpu",' \
               'model="test/flaky",pool="default",scope="lane"} 1.0' in metrics


async def test_one_tenants_poison_inputs_do_not_shut_the_lane_for_others(
        nats_server: NatsServer, tmp_path: Path) -> None:
    FAILING["on"] = False
    lane = Lane("test/flaky", "default", "cpu", "default")
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, worker(nats_server.url, flaky,
                                                                             model="test/flaky"):
        await gw.wait_for_workers(lane)
        for _ in range(3):
            assert (await encode(gw, "test/flaky", OTHER, "poison")).status == 502
        r = await encode(gw, "test/flaky", OTHER)
        assert (r.status, r.body["error"]["code"]) == (503, "circuit_open")
        assert "this tenant" in r.body["error"]["message"]
        assert (await encode(gw, "test/flaky", ADMIN)).status == 200  # the other tenants' lane is open
        assert [(c["tenant"], c["state"]) for c in await circuits(gw)] == [(None, "closed"), ("other", "open")]


async def breaks_mid_stream(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    yield "one"
    raise RuntimeError("the model is broken")


async def test_streams_that_fail_count_toward_the_breaker(nats_server: NatsServer, tmp_path: Path) -> None:
    lane = Lane("test/streamy", "default", "cpu", "default")
    sse = {"Accept": "text/event-stream"}
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, worker(nats_server.url, breaks_mid_stream,
                                                                             model="test/streamy"):
        await gw.wait_for_workers(lane)
        for headers in (ADMIN, OTHER):
            async with gw.http.post(f"{gw.url}/v1/generate/test/streamy", json={"items": [{"prompt": "p"}]},
                                    headers={**headers, **sse}) as resp:
                assert resp.status == 200
                body = await resp.text()
            assert "event: error" in body and "worker_error" in body
        seq = await last_seq(gw)
        r = await gw.call("POST", "/v1/generate/test/streamy", headers={**ADMIN, **sse},
                          json={"items": [{"prompt": "p"}]})
        assert (r.status, r.body["error"]["code"]) == (503, "circuit_open")
        assert await last_seq(gw) == seq


async def test_alias_resolves_listed_and_named_in_the_answer(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, worker(nats_server.url, vectors,
                                                                             model="test/primary"):
        await gw.wait_for_workers(Lane("test/primary", "default", "cpu", "default"))
        r = await encode(gw, "primary-latest", ADMIN)
        assert (r.status, r.headers["X-Switchyard-Model"], r.body["model"]) == (200, "test/primary", "test/primary")
        r = await gw.call("POST", "/v1/embeddings", headers=PRIMARY_ONLY,
                          json={"model": "primary-latest", "input": "hi"})
        assert (r.status, r.headers["X-Switchyard-Model"], r.body["model"]) == (200, "test/primary", "test/primary")
        listed = await gw.call("GET", "/v1/models", headers=PRIMARY_ONLY)
        assert {m["id"] for m in listed.body["data"]} == {"test/primary", "primary-latest"}
        details = await gw.call("GET", "/v1/configs/models/primary-latest", headers=ADMIN)
        assert details.body["id"] == "test/primary" and details.body["aliases"] == ["primary-latest"]
        hidden = await encode(gw, "primary-latest", {"Authorization": "Bearer other-key-0123456789abcdef"})
        assert hidden.status == 200  # `other` may use every model; scopes name models, not aliases
        async with gw.http.ws_connect(gw.url + "/v1/ws", headers=ADMIN) as ws:  # the WebSocket names it too
            await ws.send_json({"type": "infer", "id": "m1", "op": "encode", "model": "primary-latest",
                                "items": [{"text": "hi"}]})
            answer = await ws.receive_json(timeout=30)
        assert (answer["type"], answer["result"]["model"]) == ("result", "test/primary"), answer


def test_alias_conflict_is_refused_at_load(tmp_path: Path) -> None:
    bad = config_dir(tmp_path / "bad")
    (bad / "more.yaml").write_text(UPSTREAMS.split("---")[0].replace("name: split", "name: another")
                                   .replace("model: test/split", "model: test/other")
                                   .replace("bundles:", "aliases: [primary-latest]\n  bundles:"))
    done = subprocess.run([installed_script(), "gateway", "--config-dir", str(bad), "--nats", "nats://127.0.0.1:1",
                           "--port", str(free_port()), "--metrics-port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    # The first Upstream by name keeps a contested alias; the other's is the issue that refuses the config.
    assert "Upstream/primary: spec.aliases[0]: alias 'primary-latest' already names 'test/other'" in done.stderr, \
        done.stderr


async def test_fallback_when_the_primary_cannot_start_in_time_only_for_keys_allowed_it(
        nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, worker(nats_server.url, vectors,
                                                                             model="test/backup"):
        await gw.wait_for_workers(Lane("test/backup", "default", "cpu", "default"))
        # The primary has no worker and a 600 s ETA, past afterSeconds (30): the backup serves.
        r = await encode(gw, "test/primary", ADMIN)
        assert (r.status, r.headers["X-Switchyard-Model"], r.body["model"]) == (200, "test/backup", "test/backup")
        r = await gw.call("POST", "/v1/embeddings", headers=ADMIN, json={"model": "primary-latest", "input": "hi"})
        assert (r.status, r.headers["X-Switchyard-Model"], r.body["model"]) == (200, "test/backup", "test/backup")
        # A key not allowed the backup is never routed to it: its request waits for the primary.
        held = await encode(gw, "test/primary", PRIMARY_ONLY)
        assert (held.status, held.headers["X-Switchyard-Model"]) == (202, "test/primary"), held.body
        # A fallback whose afterSeconds the ETA does not exceed is not used.
        patient = await encode(gw, "test/patient", ADMIN)
        assert (patient.status, patient.headers["X-Switchyard-Model"]) == (202, "test/patient")
        assert (await gw.call("POST", f"/v1/jobs/{patient.body['job_id']}/cancel", headers=ADMIN)).status == 200
        assert (await job_final(gw, patient.body["job_id"])).body["state"] == "cancelled"

        async with worker(nats_server.url, echo, model="test/primary"):
            await gw.wait_for_workers(Lane("test/primary", "default", "cpu", "default"))
            done = await job_final(gw, held.body["job_id"], headers=PRIMARY_ONLY, timeout=60)
            assert done.body["state"] == "succeeded" and done.body["model"] == "test/primary"
            r = await encode(gw, "test/primary", ADMIN)  # the primary is live: no fallback
            assert (r.status, r.headers["X-Switchyard-Model"]) == (200, "test/primary")
        await until(lambda: gw.state.registry.serving(Lane("test/primary", "default", "cpu", "default")) == 0,
                    30, "the primary's worker gone")


async def test_an_open_circuit_sends_requests_answered_now_to_the_fallback(
        nats_server: NatsServer, tmp_path: Path) -> None:
    FAILING["on"] = True
    async with gateway(nats_server.url, config_dir(tmp_path)) as gw, \
            worker(nats_server.url, flaky, model="test/fragile"), worker(nats_server.url, vectors, model="test/backup"):
        await gw.wait_for_workers(Lane("test/fragile", "default", "cpu", "default"))
        await gw.wait_for_workers(Lane("test/backup", "default", "cpu", "default"))
        for headers in (ADMIN, OTHER):  # the fragile lane is live: its own workers fail, twice, two tenants
            r = await encode(gw, "test/fragile", headers)
            assert (r.status, r.headers["X-Switchyard-Model"]) == (502, "test/fragile")
        calls = CALLS["all"]
        r = await encode(gw, "test/fragile", OTHER)  # its circuit is open: the fallback serves
        assert (r.status, r.headers["X-Switchyard-Model"], r.body["model"]) == (200, "test/backup", "test/backup")
        assert CALLS["all"] == calls  # the failing handler was not called
        queued = await encode(gw, "test/fragile", {**ADMIN, "Prefer": "respond-async"})
        assert (queued.status, queued.body["error"]["code"]) == (503, "circuit_open")  # a job asked for that model
    FAILING["on"] = False
