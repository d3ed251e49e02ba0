"""GET /v1/capacity against real NATS, gateway and workers: slots from the workers' heartbeats,
queued items from the stream, holders for admin keys only, and fleets outside a key's pools hidden."""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane import ADMIN, ECHO, ECHO_ONLY, TENANT, gateway, until, worker

from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}


async def test_capacity_counts_slots_use_queue_and_holders(nats_server: NatsServer) -> None:
    release = asyncio.Event()

    async def hold(items: list[Any], ctx: Any) -> list[Any]:
        await release.wait()
        return items

    async with gateway(nats_server.url) as gw:
        # Cold: one queued job and no worker.
        assert (await gw.infer(headers={"X-Request-ID": "cap-q"})).status == 202
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 1, 10, "the backlog is seen")
        cold = (await gw.call("GET", "/v1/capacity", headers=ADMIN)).body["fleets"]
        assert cold == [{"pool": "default", "machine_profile": "cpu", "bundle": "default", "models": ["test/echo"],
                         "workers": 0, "capacity": 0, "used": 0, "available": 0, "queued": 1,
                         "scaling": "scaling_up", "holders": {}}]

        async with worker(nats_server.url, hold, concurrency=3):
            await gw.wait_for_workers(ECHO)
            pending = [asyncio.create_task(gw.call("POST", "/v1/encode/test/echo", headers=OTHER,
                                                   json={"items": [i]})) for i in range(2)]

            def busy() -> bool:
                return sum(b.in_flight for b in gw.state.registry.live()) == 3

            await until(busy, 10, "three items in flight")
            await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 3, 10, "the stream holds the three")
            fleet = (await gw.call("GET", "/v1/capacity", headers=ADMIN)).body["fleets"][0]
            # Stored but in flight is not queued: nothing waits for a slot.
            assert (fleet["workers"], fleet["capacity"], fleet["used"], fleet["available"], fleet["queued"]) == (
                1, 3, 3, 0, 0)
            assert fleet["holders"] == {"admin": 1, "other": 2} and fleet["scaling"] == "serving"

            tenant_view = (await gw.call("GET", "/v1/capacity", headers=ECHO_ONLY)).body["fleets"]
            assert len(tenant_view) == 1 and "holders" not in tenant_view[0]
            assert tenant_view[0]["used"] == 3
            # The key limited to pool "tenant" sees no fleet of pool "default".
            assert (await gw.call("GET", "/v1/capacity", headers=TENANT)).body["fleets"] == []
            release.set()
            assert all(r.status == 200 for r in await asyncio.gather(*pending))
        assert (await gw.call("GET", "/v1/capacity", headers={"Authorization": "Bearer wrong"})).status == 401
