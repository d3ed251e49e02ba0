"""A draining worker leaves the live set at once: new work takes the 202 path and runs on its replacement."""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane import ECHO, gateway, job_final, until, worker

from switchyard.natsserver import NatsServer
from switchyard.worker import Worker, WorkerConfig


async def slow_echo(items: list[Any], ctx: Any) -> list[Any]:
    await asyncio.sleep(float(ctx.params.get("sleep", 0)))
    return items


async def test_request_during_a_drain_gets_202_and_runs_on_the_replacement(nats_server: NatsServer) -> None:
    # A long heartbeat interval: only the beat sent when the drain starts can tell the gateway in time.
    draining = Worker(WorkerConfig(nats_url=nats_server.url, handler=slow_echo, model="test/echo",
                                   heartbeat_interval_s=10))
    await draining.start()
    async with gateway(nats_server.url) as gw:
        try:
            await gw.wait_for_workers(ECHO)
            in_flight = asyncio.create_task(gw.infer(items=["first"], params={"sleep": 8},
                                                     headers={"X-Request-ID": "drain-1"}))
            await until(lambda: draining.in_flight == 1, 10, "the slow item is in flight")
            stopping = asyncio.create_task(draining.stop())
            # Well before the item in flight ends (and the worker deletes its heartbeat), the gateway knows.
            await until(lambda: gw.state.registry.serving(ECHO) == 0, 5, "the draining worker left the live set")
            assert draining.in_flight == 1
            r = await gw.infer(items=["second"], headers={"X-Request-ID": "drain-2"})
            assert r.status == 202, r.body
            assert r.body["job_id"] == "drain-2"
            first = await in_flight  # the drain lets the item in flight finish
            assert first.status == 200 and first.body["items"] == ["first"]
            await stopping
            async with worker(nats_server.url, slow_echo):
                done = await job_final(gw, "drain-2")
            assert done.body["state"] == "succeeded" and done.body["result"]["items"] == ["second"]
        finally:
            await draining.stop()


async def test_heartbeat_says_draining(nats_server: NatsServer, nats_client: Any) -> None:
    from switchyard.gateway.registry import KV_PREFIX
    from switchyard.messages import Heartbeat

    w = Worker(WorkerConfig(nats_url=nats_server.url, handler=slow_echo, model="test/echo", heartbeat_interval_s=10))
    beats: list[Heartbeat] = []

    async def on_beat(msg: Any) -> None:
        if msg.data:  # the delete marker at the end of stop() has no body
            beats.append(Heartbeat.decode(msg.data))

    # Seen as the gateways see beats (registry.py): a subscription to the bucket's subjects, which
    # gets every put. A KV watcher would not do: the bucket keeps one revision per key, and with
    # nothing in flight stop() deletes the key a few milliseconds after the draining beat, so a
    # watcher's consumer that is a little late (a loaded machine) skips straight to the delete.
    await nats_client.subscribe(f"{KV_PREFIX}{w.config.heartbeat_key}", cb=on_beat)
    await nats_client.flush()
    await w.start()
    await until(lambda: len(beats) >= 1, 5, "the start beat")
    assert not beats[-1].draining
    await w.stop()
    # stop() sent the draining beat before it returned (then deleted the key): this waits for delivery only.
    await until(lambda: any(b.draining for b in beats), 5, "a draining beat")
    assert beats[-1].draining  # the last word before the key went away
