"""What survives: workers killed mid-request, NATS restarted, two gateways, config reloads."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from dataplane import ADMIN, ECHO, copy_manifests, gateway, job_final, kill, until, worker, worker_process

from switchyard.client import AsyncClient
from switchyard.natsserver import NatsServer


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_worker_sigkilled_mid_request_is_redelivered_and_answered_once(nats_server: NatsServer) -> None:
    # The first worker creates the lane consumer with a 1.5 s ack wait, then dies holding the item.
    doomed = worker_process(nats_server.url, "handlers_for_tests:slow_echo", "test/echo",
                            "--ack-wait", "1.5", "--worker-id", "doomed")
    try:
        async with gateway(nats_server.url) as gw:
            await gw.wait_for_workers(ECHO)
            request = asyncio.create_task(gw.infer(items=[{"text": "survive"}], params={"sleep": 30},
                                                   headers={"X-Request-ID": "kill-1"}))
            await until(lambda: any(b.in_flight for b in gw.state.registry.live()), 10, "item in flight")
            kill(doomed)
            answered: list[str] = []

            def rescue(items: list[Any], ctx: Any) -> list[Any]:
                answered.append(f"{ctx.request_id}#{ctx.attempt}")
                return items

            async with worker(nats_server.url, rescue) as w:
                r = await asyncio.wait_for(request, 20)
                await asyncio.sleep(2)  # long enough for a second redelivery, were there one
            assert r.status == 200, r.body
            assert r.body["items"] == [{"text": "survive"}] and r.body["worker"] == w.worker_id
            assert r.body["timing"]["attempt"] == 2
            assert answered == ["kill-1#2"]
    finally:
        kill(doomed)


async def test_nats_restart_503_during_outage_then_recovery_with_nothing_lost(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        # Accepted before the outage: three jobs with no worker yet.
        ids = [f"keep-{i}" for i in range(3)]
        for rid in ids:
            assert (await gw.infer(headers={"X-Request-ID": rid})).status == 202
        nats_server.stop()
        await until(lambda: not gw.state.dispatcher.connected, 10, "gateway sees NATS down")
        down = await gw.infer(headers={"X-Request-ID": "during"})
        assert down.status == 503 and down.body["error"]["code"] == "queue_unavailable"
        assert "Retry-After" in down.headers
        assert (await gw.call("GET", "/readyz")).status == 503
        nats_server.start()
        await until(lambda: gw.state.dispatcher.connected, 20, "gateway reconnected")
        assert (await gw.call("GET", "/readyz")).status == 200
        async with worker(nats_server.url, echo):
            for rid in ids:
                assert (await job_final(gw, rid)).body["state"] == "succeeded"
            await gw.wait_for_workers(ECHO)
            ok = await gw.infer(headers={"X-Request-ID": "after"})
            assert ok.status == 200


async def test_worker_survives_nats_restart(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo) as w:
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer()).status == 200
        await asyncio.get_running_loop().run_in_executor(None, nats_server.restart, 0.5)
        nc = gw.state.dispatcher.nc
        await until(lambda: nc.stats["reconnects"] >= 1 and gw.state.dispatcher.connected, 20,
                    "gateway reconnected")
        back = time.monotonic()
        await until(lambda: any(s.at > back for s in gw.state.registry._workers.values()), 20,
                    "a heartbeat sent after the restart")
        r = await gw.infer(headers={"X-Request-ID": "post-restart"})
        assert r.status == 200 and r.body["worker"] == w.worker_id


async def test_two_gateways_share_registry_jobs_and_queue(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as a, gateway(nats_server.url) as b:
        r = await a.infer(headers={"X-Request-ID": "shared-1"})
        assert r.status == 202
        # The same id through the other gateway is not queued twice.
        assert (await b.infer(headers={"X-Request-ID": "shared-1"})).status == 202
        calls: list[str] = []

        def count(items: list[Any], ctx: Any) -> list[Any]:
            calls.append(ctx.request_id)
            return items

        async with worker(nats_server.url, count):
            done = await job_final(b, "shared-1")  # polled on the gateway that did not accept it
            assert done.body["state"] == "succeeded"
            await a.wait_for_workers(ECHO)
            await b.wait_for_workers(ECHO)
            results = await asyncio.gather(*[(a if i % 2 else b).infer(items=[i]) for i in range(20)])
            assert [r.status for r in results] == [200] * 20
            assert [r.body["items"] for r in results] == [[i] for i in range(20)]
        assert calls.count("shared-1") == 1


async def test_config_reload_while_requests_are_in_flight(nats_server: NatsServer, tmp_path: Path) -> None:
    conf = copy_manifests(tmp_path / "conf")

    async def slow(items: list[Any], ctx: Any) -> list[Any]:
        await asyncio.sleep(1.0)
        return items

    async with gateway(nats_server.url, conf) as gw, worker(nats_server.url, slow, concurrency=8):
        await gw.wait_for_workers(ECHO)
        assert gw.state.holder.table.epoch == 1
        in_flight = [asyncio.create_task(gw.infer(items=[i])) for i in range(5)]
        await asyncio.sleep(0.2)
        text = (conf / "upstreams.yaml").read_text().replace("model: test/slow", "model: test/renamed")
        (conf / "upstreams.yaml").write_text(text)
        await until(lambda: gw.state.holder.table.epoch == 2, 10, "epoch 2 installed")
        assert [r.status for r in await asyncio.gather(*in_flight)] == [200] * 5
        assert (await gw.infer("test/renamed", headers={"X-Request-ID": "renamed"})).status == 202
        assert (await gw.infer("test/slow")).status == 404
        # A broken edit is refused; the previous table keeps serving.
        (conf / "upstreams.yaml").write_text(text.replace("timeoutSeconds: 20", "timeoutSeconds: -1"))
        await asyncio.sleep(1.0)
        assert gw.state.holder.table.epoch == 2
        assert (await gw.infer()).status == 200
        assert 'switchyard_gateway_config_reloads_total{outcome="rejected"}' in await gw.metrics()


async def test_sdk_against_the_real_gateway(nats_server: NatsServer) -> None:
    from switchyard.client import Accepted, IncompatibleBundle, UnknownModel

    async with gateway(nats_server.url) as gw:
        async with AsyncClient(gw.url, api_key=ADMIN["Authorization"].split()[1]) as client:
            accepted = await client.encode("test/echo", ["cold"])
            assert isinstance(accepted, Accepted)
            with pytest.raises(UnknownModel):
                await client.encode("no/model", ["x"])
            with pytest.raises(IncompatibleBundle):
                await client.encode("test/gpu", ["x"], bundle="nope")
            waiting = asyncio.create_task(client.encode("test/echo", ["warm"], wait_for_capacity=True,
                                                        capacity_timeout=30))
            await asyncio.sleep(0.5)
            async with worker(nats_server.url, echo):
                result = await waiting
                assert result.items == [{"text": "warm"}]
                job = await client.wait_for_job(accepted, timeout=20)
                assert job.items == [{"text": "cold"}]
                await gw.wait_for_workers(ECHO)
                direct = await client.encode("test/echo", [{"text": "hot"}])
                assert direct.items == [{"text": "hot"}]


async def test_sigterm_drains_a_worker_process(nats_server: NatsServer) -> None:
    proc = worker_process(nats_server.url, "handlers_for_tests:slow_echo", "test/echo")
    try:
        async with gateway(nats_server.url) as gw:
            await gw.wait_for_workers(ECHO)
            request = asyncio.create_task(gw.infer(params={"sleep": 1.5}))
            await until(lambda: any(b.in_flight for b in gw.state.registry.live()), 10, "item in flight")
            proc.send_signal(signal.SIGTERM)
            r = await asyncio.wait_for(request, 15)
            assert r.status == 200
            assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15) == 0
    finally:
        kill(proc)
