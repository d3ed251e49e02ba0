"""spec.policy on one real gateway (real nats-server, a real worker): token reservations settled to the
worker's usage (streams included), quotas, limits per client IP and per tier, the RateLimit headers, the
`defaults` transform, and custom stages from an entry point (a test-only distribution put on sys.path)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dataplane import ECHO, gateway, job_final, until, worker
from policy_manifests import bearer, policy_config
from test_grpc import grpc_gateway

from switchyard.gateway.policy.ledger import LEASE_IDLE_S
from switchyard.natsserver import NatsServer

DAY = 86_400
STAGES = """      - name: defaults
        params: {max_tokens: 100}
      - name: limits
        limits:
          - {name: tpm, kind: tokens, per: key, limit: 3000, windowSeconds: 86400, tiers: [tok]}
          - {name: daily-items, kind: items, per: tenant, period: day, limit: 5, tiers: [quota]}
          - {name: per-ip, kind: requests, per: ip, limit: 3, windowSeconds: 86400, tiers: [ipt]}"""

USAGE = {"input_tokens": 10, "output_tokens": 5}


async def reporting(items: list[Any], ctx: Any) -> AsyncIterator[Any]:
    """Streams its items back with the max_tokens it got, reporting 15 tokens per request."""
    ctx.usage = dict(USAGE)
    await asyncio.sleep(float(ctx.params.get("sleep", 0)))
    for item in items:
        yield {"max_tokens": ctx.params.get("max_tokens"), "item": item}


def same_day(started: float) -> None:
    if int(started // DAY) != int(time.time() // DAY):
        pytest.skip("the test straddled a UTC midnight: its daily windows changed under it")


def rate_limit(headers: dict[str, str]) -> dict[str, dict[str, int]]:
    """RateLimit: "name";r=1;t=2, ... as {name: {r: 1, t: 2}}."""
    out: dict[str, dict[str, int]] = {}
    for member in headers["RateLimit"].split(", "):
        name, *params = member.split(";")
        out[name.strip('"')] = {k: int(v) for k, v in (p.split("=") for p in params)}
    return out


async def test_policy_limits_on_one_gateway(nats_server: NatsServer, tmp_path: Path) -> None:
    started = time.time()
    async with gateway(nats_server.url, policy_config(tmp_path / "config", STAGES)) as gw, \
            worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)

        # Tokens: the first request reserves its declared maximum plus its input's bytes ...
        r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 1000})
        assert r.status == 200, r.body
        assert r.headers["RateLimit-Policy"] == '"tpm";q=3000;w=86400'
        reserved = 1000 + len(b'[{"text":"hi"}]')
        assert rate_limit(r.headers)["tpm"]["r"] == 3000 - reserved
        assert 0 < rate_limit(r.headers)["tpm"]["t"] <= DAY
        # ... and settles to the 15 tokens the worker reported: without settling, the third would be refused.
        for _ in range(5):
            r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 1000})
            assert r.status == 200, r.body
        # Streams settle at their final chunk.
        for _ in range(3):
            async with gw.http.post(gw.url + "/v1/generate/test/echo", json={"items": [{"text": "hi"}],
                                    "params": {"max_tokens": 1000}},
                                    headers={**bearer("tokens"), "Accept": "text/event-stream"}) as resp:
                body = await resp.text()
                assert resp.status == 200, body
                assert "event: done" in body and '"input_tokens":10' in body
                assert resp.headers["RateLimit-Policy"] == '"tpm";q=3000;w=86400'
        # The defaults stage: a request without max_tokens gets the Gateway's 100 (and is reserved as such).
        r = await gw.infer(op="generate", headers=bearer("tokens"))
        assert r.status == 200 and r.body["items"][0]["max_tokens"] == 100
        # A request that can never fit is refused as bad input, not as a wait.
        r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 2990})
        assert r.status == 400 and r.body["error"]["code"] == "bad_request"
        assert "can never be admitted" in r.body["error"]["message"]
        # What is left after 10 settled requests (150 tokens) still takes a 2,800-token reservation.
        r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 2800})
        assert r.status == 200, r.body
        # An encode request is not counted by a tokens limit.
        r = await gw.infer(headers=bearer("tokens"))
        assert r.status == 200 and "RateLimit" not in r.headers

        # A daily quota of 5 items per tenant: 3, then 3 more is past it.
        r = await gw.infer(headers=bearer("quota"), items=[1, 2, 3])
        assert r.status == 200 and rate_limit(r.headers)["daily-items"]["r"] == 2
        r = await gw.infer(headers=bearer("quota"), items=[4, 5, 6])
        assert r.status == 429 and r.body["error"]["code"] == "quota_exceeded"
        midnight = (int(time.time()) // DAY + 1) * DAY
        assert abs(int(r.headers["Retry-After"]) - (midnight - time.time())) <= 5
        assert rate_limit(r.headers)["daily-items"]["r"] == 0
        r = await gw.infer(headers=bearer("quota"), items=[4, 5])  # what is left still fits
        assert r.status == 200

        # Per client IP: two keys of tier ipt from the same address share 3 requests.
        assert (await gw.infer(headers=bearer("ip-a"))).status == 200
        assert (await gw.infer(headers=bearer("ip-b"))).status == 200
        assert (await gw.infer(headers=bearer("ip-a"))).status == 200
        r = await gw.infer(headers=bearer("ip-b"))
        assert r.status == 429 and r.body["error"]["code"] == "rate_limited"
        assert "per ip" in r.body["error"]["message"]
        assert r.headers["RateLimit-Policy"] == '"per-ip";q=3;w=86400'
        assert 0 < int(r.headers["Retry-After"]) <= DAY

        # Per tier: a key of another tier is under none of these limits (and gets no RateLimit headers).
        for _ in range(6):
            r = await gw.infer(headers=bearer("other"), items=[1, 2, 3])
            assert r.status == 200 and "RateLimit" not in r.headers

        # The OpenAI API goes through the same chain.
        async with gw.http.post(gw.url + "/v1/embeddings", json={"model": "test/echo", "input": "x"},
                                headers=bearer("ip-a")) as resp:
            assert resp.status == 429, await resp.text()
            assert (await resp.json())["error"]["code"] == "rate_limited"

        metrics = await gw.metrics()
        assert 'switchyard_gateway_policy_decisions_total{limit="per-ip",outcome="limited",tenant="ip-b"} 1.0' \
            in metrics
        same_day(started)


async def test_a_long_request_settles_after_its_block_was_given_back(nats_server: NatsServer,
                                                                     tmp_path: Path) -> None:
    """The replica gives an idle block back (LEASE_IDLE_S) while a request runs; the request's unused
    reservation still comes back when it settles."""
    started = time.time()
    async with gateway(nats_server.url, policy_config(tmp_path / "config", STAGES)) as gw, \
            worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)
        reserved = 1000 + len(b'[{"text":"hi"}]')
        r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 1000,
                                                                           "sleep": LEASE_IDLE_S + 1.5})
        assert r.status == 200 and rate_limit(r.headers)["tpm"]["r"] == 3000 - reserved
        r = await gw.infer(op="generate", headers=bearer("tokens"), params={"max_tokens": 1000})
        assert r.status == 200
        assert rate_limit(r.headers)["tpm"]["r"] == 3000 - sum(USAGE.values()) - reserved
        same_day(started)


PLANNER = """---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: twice}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a]}
"""


async def test_a_planner_run_passes_the_chain(nats_server: NatsServer, tmp_path: Path) -> None:
    """A run is one request whose items count once per step: it cannot be used to get round a quota."""
    config = policy_config(tmp_path / "config", STAGES)
    with (config / "gateway.yaml").open("a") as f:
        f.write(PLANNER)
    started = time.time()
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)
        # Daily quota of 5 items per tenant: 2 items through 2 steps are 4 ...
        r = await gw.call("POST", "/v1/plans/twice", headers={**bearer("quota"), "X-Request-ID": "run-1"},
                          json={"items": [1, 2]})
        assert r.status == 202, r.body
        assert rate_limit(r.headers)["daily-items"]["r"] == 1
        # ... so another run of 2 items is refused before anything is recorded, and 1 item still fits.
        r = await gw.call("POST", "/v1/plans/twice", headers={**bearer("quota"), "X-Request-ID": "run-2"},
                          json={"items": [3, 4]})
        assert r.status == 429 and r.body["error"]["code"] == "quota_exceeded", r.body
        r = await gw.call("GET", "/v1/jobs/run-2", headers=bearer("quota"))
        assert r.status == 404 and r.body["error"]["code"] == "unknown_job"
        assert (await gw.infer(headers=bearer("quota"), items=[5])).status == 200
        final = await job_final(gw, "run-1", headers=bearer("quota"))
        assert final.body["state"] == "succeeded", final.body
    same_day(started)


async def test_a_gateway_that_stops_gives_its_block_back(nats_server: NatsServer, tmp_path: Path) -> None:
    """A replica stopping cleanly (SIGTERM) gives back the block it leased: another admits the whole limit."""
    stages = ("      - name: limits\n        limits:\n"
              "          - {name: per-key, kind: requests, per: key, limit: 40, windowSeconds: 86400}")
    config = policy_config(tmp_path / "config", stages)
    started = time.time()
    async with worker(nats_server.url, reporting):
        async with gateway(nats_server.url, config) as first:
            await first.wait_for_workers(ECHO)
            r = await first.infer(headers=bearer("other"))
            assert r.status == 200 and rate_limit(r.headers)["per-key"]["r"] == 39
            assert first.state.policy.ledger.leases  # it holds a block beyond this request
        async with gateway(nats_server.url, config) as second:
            await second.wait_for_workers(ECHO)
            answers = [(await second.infer(headers=bearer("other"))).status for _ in range(40)]
            assert answers == [200] * 39 + [429], answers
    same_day(started)


async def test_limited_requests_fail_closed_while_nats_is_away(nats_server: NatsServer, tmp_path: Path) -> None:
    """NATS away: a request that needs the counters gets 503 limits_unavailable (never admitted uncounted);
    one no limit applies to fails on the queue as before; counting resumes when NATS is back."""
    stages = ("      - name: limits\n        limits:\n"
              "          - {name: per-key, kind: requests, per: key, limit: 100, windowSeconds: 86400,"
              " tiers: [default]}")
    async with gateway(nats_server.url, policy_config(tmp_path / "config", stages)) as gw, \
            worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)
        nats_server.stop()
        await until(lambda: not gw.state.dispatcher.connected, 30, "the gateway sees NATS gone")
        r = await gw.infer(headers=bearer("other"))  # tier default: limited, and no block held yet
        assert r.status == 503 and r.body["error"]["code"] == "limits_unavailable", r.body
        assert r.headers["Retry-After"] == "2"
        r = await gw.infer(headers=bearer("tokens"))  # tier tok: no limit applies
        assert r.status == 503 and r.body["error"]["code"] == "queue_unavailable", r.body
        nats_server.start()
        await until(lambda: gw.state.dispatcher.connected, 60, "the gateway back on NATS")
        deadline = time.monotonic() + 60
        while (r := await gw.infer(headers=bearer("other"))).status != 200:
            assert r.status in (202, 503) and time.monotonic() < deadline, (r.status, r.body)
            await asyncio.sleep(0.5)
        assert rate_limit(r.headers)["per-key"]["r"] < 100


# -- custom stages --------------------------------------------------------------------------------

PLUGIN = '''
from switchyard.errors import ApiError


def factory(config):
    word = config["refuse"]
    if not isinstance(word, str):
        raise ValueError("refuse must be a string")

    async def stage(request):
        if request.params.get("word") == word:
            raise ApiError("forbidden", f"the word {word!r} is not allowed by the policy")
        request.headers["X-Checked"] = "yes"
    return stage
'''


@pytest.fixture
def test_plugin(tmp_path: Path) -> Iterator[None]:
    """A test-only distribution with an entry point in the group switchyard.policy, put on sys.path
    (importlib.metadata finds it as it finds an installed package)."""
    site = tmp_path / "site"
    dist = site / "switchyard_test_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: switchyard-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[switchyard.policy]\nword-filter = switchyard_test_plugin:factory\n")
    (site / "switchyard_test_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(site))
    try:
        yield
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("switchyard_test_plugin", None)


async def test_a_custom_stage_from_an_entry_point_runs_in_the_chain(nats_server: NatsServer, tmp_path: Path,
                                                                     test_plugin: None) -> None:
    stages = "      - name: word-filter\n        config: {refuse: boom}"
    async with gateway(nats_server.url, policy_config(tmp_path / "config", stages)) as gw, \
            worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(headers=bearer("other"), params={"word": "boom"})
        assert r.status == 403 and "'boom' is not allowed" in r.body["error"]["message"]
        r = await gw.infer(headers=bearer("other"), params={"word": "fine"})
        assert r.status == 200, r.body


async def test_a_stage_that_is_not_installed_refuses_inference(nats_server: NatsServer, tmp_path: Path) -> None:
    stages = "      - name: not-installed-anywhere\n        config: {}"
    async with gateway(nats_server.url, policy_config(tmp_path / "config", stages)) as gw, \
            worker(nats_server.url, reporting):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(headers=bearer("other"))
        assert r.status == 503 and r.body["error"]["code"] == "policy_unavailable"
        assert "'not-installed-anywhere', which is not installed" in r.body["error"]["message"]
        # /health says so: degraded for anyone, the reason for a key that may read the fleet.
        assert (await gw.call("GET", "/health")).body == {"status": "degraded"}
        detail = (await gw.call("GET", "/health", headers=bearer("admin"))).body
        assert detail["status"] == "degraded" and detail["policy"]["stages"] == ["not-installed-anywhere"]
        assert "which is not installed" in detail["policy"]["broken"]


async def test_grpc_and_websocket_refusals_carry_the_same_code(nats_server: NatsServer, tmp_path: Path) -> None:
    """The chain runs in the core: gRPC answers RESOURCE_EXHAUSTED (code and retry-after in the trailers),
    the WebSocket the request's error frame; both for one limit counted across the protocols."""
    stages = ("      - name: limits\n        limits:\n"
              "          - {name: per-ip, kind: requests, per: ip, limit: 2, windowSeconds: 86400, tiers: [ipt]}")
    async with grpc_gateway(nats_server.url, policy_config(tmp_path / "config", stages)) as g, \
            worker(nats_server.url, reporting):
        await g.gw.wait_for_workers(ECHO)
        ip_a = tuple((k.lower(), v) for k, v in bearer("ip-a").items())
        assert (await g.infer(ip_a)).WhichOneof("outcome") == "result"
        async with g.gw.http.ws_connect(g.gw.url + "/v1/ws", headers=bearer("ip-b")) as ws:
            await ws.send_json({"type": "infer", "id": "one", "op": "encode", "model": "test/echo",
                                "items": [{"text": "hi"}]})
            ok = await asyncio.wait_for(ws.receive_json(), 30)
            assert ok["type"] == "result" and ok["id"] == "one", ok
            await ws.send_json({"type": "infer", "id": "two", "op": "encode", "model": "test/echo",
                                "items": [{"text": "hi"}]})
            refused = await asyncio.wait_for(ws.receive_json(), 30)
            assert refused["type"] == "error" and refused["id"] == "two", refused
            assert refused["error"]["code"] == "rate_limited"
        code, details, trailers = await g.refused(g.infer(ip_a))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 'per-ip'" in details
        assert trailers["switchyard-error-code"] == "rate_limited" and int(trailers["retry-after"]) >= 1
