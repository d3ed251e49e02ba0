"""Lane consumers no worker pulls from are removed by nats-server; the lane's items wait for the next worker."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from switchyard.jetstream import LANE_INACTIVE_S, ensure_work_stream, lane_consumer_config
from switchyard.messages import Result, WorkItem
from switchyard.natsserver import NatsServer
from switchyard.subjects import WORK_STREAM, Lane
from switchyard.worker import Worker, WorkerConfig
from switchyard.worker.handlers import echo

LANE = Lane(model="org/expiring", bundle="default", machine_profile="cpu", pool="default")


async def exists(nc: NATS) -> bool:
    try:
        await nc.jetstream().consumer_info(WORK_STREAM, LANE.consumer)
        return True
    except NotFoundError:
        return False


async def gone(nc: NATS) -> bool:
    return not await exists(nc)


async def until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.1)


async def test_an_idle_lane_consumer_goes_and_its_items_wait_for_the_next_worker(
        nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    await ensure_work_stream(js)
    # As a worker made it, with a threshold short enough for a test.
    await js.add_consumer(WORK_STREAM, lane_consumer_config(LANE, inactive_s=1.0))
    results: asyncio.Queue[Result] = asyncio.Queue()
    inbox = nats_client.new_inbox()

    async def on_result(msg) -> None:  # type: ignore[no-untyped-def]
        await results.put(Result.decode(msg.data))

    await nats_client.subscribe(inbox, cb=on_result)
    config = WorkerConfig(nats_url=nats_server.url, handler=echo, model=LANE.model, heartbeat_interval_s=0.2,
                          drain_timeout_s=5)

    # A worker that is running but idle holds no pull request (worker/fairness.py pulls only what a ring or
    # a scan says is there), so the server removes the consumer even then; the worker makes it again when
    # an item comes (below, for the next worker).
    worker = Worker(config)
    await asyncio.wait_for(worker.start(), 15)
    await until(lambda: gone(nats_client))
    await asyncio.wait_for(worker.stop(drain_timeout_s=5), 20)

    # No worker and no consumer: an item sent meanwhile stays in the stream.
    item = WorkItem(id=uuid.uuid4().hex, op="encode", model=LANE.model, bundle=LANE.bundle,
                    machine_profile=LANE.machine_profile, pool=LANE.pool, reply=inbox, items=["kept"])
    await js.publish(LANE.subject, item.encode(), timeout=5)
    assert not await exists(nats_client)
    assert (await js.stream_info(WORK_STREAM, subjects_filter=LANE.subject)).state.subjects == {LANE.subject: 1}

    # The next worker of the lane creates it again, with the standard threshold, and gets the item.
    worker = Worker(config)
    await asyncio.wait_for(worker.start(), 15)
    try:
        result = await asyncio.wait_for(results.get(), 15)
        assert result.id == item.id and result.ok
        info = await js.consumer_info(WORK_STREAM, LANE.consumer)
        assert info.config.inactive_threshold == LANE_INACTIVE_S
    finally:
        await asyncio.wait_for(worker.stop(drain_timeout_s=5), 20)


