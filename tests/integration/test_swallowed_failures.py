"""Failures a background loop swallows are logged, and not once a round: the demand poll, the
worker registry's resync and the pools bucket's resync, against a real nats-server that stops."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.aio.client import Client as NATS

from switchyard.gateway.demand import Demand
from switchyard.gateway.kvpools import KvPoolStore
from switchyard.gateway.metrics import Metrics
from switchyard.gateway.registry import Registry
from switchyard.jetstream import ensure_work_stream, ensure_workers_bucket
from switchyard.natsserver import NatsServer


def _failures(caplog: pytest.LogCaptureFixture, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == f"{what} failed"]


async def test_demand_poll_logs_a_failure_once_while_it_repeats(
        nats_server: NatsServer, nats_client: NATS, caplog: pytest.LogCaptureFixture) -> None:
    js = nats_client.jetstream(timeout=1.0)
    await ensure_work_stream(js)
    demand = Demand(Metrics())
    caplog.set_level(logging.INFO, logger="switchyard.gateway.demand")
    await demand.refresh(js)
    assert _failures(caplog, "demand poll") == []  # NATS up: nothing to say

    nats_server.stop()
    await demand.refresh(js)
    await demand.refresh(js)
    logged = _failures(caplog, "demand poll")
    assert len(logged) == 1, "the second failure of the same kind within a minute is left out"
    assert logged[0].levelno == logging.WARNING
    assert logged[0].__dict__["stream"] == "SWITCHYARD_WORK"
    assert logged[0].__dict__["error_type"] in {"TimeoutError", "ConnectionClosedError", "NoRespondersError"}

    # Back: a poll that works forgets the failure, so the next outage is logged at once again.
    nats_server.start()
    await _connected(nats_client)
    await demand.refresh(js)
    assert len(_failures(caplog, "demand poll")) == 1
    nats_server.stop()
    await demand.refresh(js)
    assert len(_failures(caplog, "demand poll")) == 2
    nats_server.start()  # for the fixture's close


async def test_registry_resync_logs_nats_away(
        nats_server: NatsServer, nats_client: NATS, caplog: pytest.LogCaptureFixture) -> None:
    js = nats_client.jetstream(timeout=1.0)
    kv = await ensure_workers_bucket(js)
    registry = Registry()
    caplog.set_level(logging.INFO, logger="switchyard.gateway.registry")
    await registry.start(nats_client, kv)  # an empty bucket is no failure
    assert _failures(caplog, "worker registry resync") == []

    nats_server.stop()
    await asyncio.wait_for(registry.resync(), 60)  # returns: the next reconnect reads it all again
    logged = _failures(caplog, "worker registry resync")
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert logged[0].__dict__["bucket"] == "sy_workers"
    nats_server.start()  # for the fixture's close
    await _connected(nats_client)


async def test_pools_resync_logs_nats_away_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.gateway.kvpools")
    store = KvPoolStore(lambda: None)  # no NATS connection at all: ApiError pools_unavailable each round
    task = asyncio.create_task(store.run())
    try:
        for _ in range(600):  # 3 rounds at 0.5 s each, generously bounded
            await asyncio.sleep(0.1)
            if task.done() or _ticks(store) >= 3:
                break
        assert not task.done(), "the loop survives the failure"
        logged = _failures(caplog, "pools bucket resync")
        assert len(logged) == 1, "one line for a failure that repeats every round"
        assert logged[0].__dict__["error_type"] == "ApiError" and logged[0].__dict__["bucket"] == "sy_pools"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _ticks(store: KvPoolStore) -> int:
    """Failures seen by the store's limiter (the logged one and those left out)."""
    return sum(1 + left_out for _, left_out in store._failures._seen.values())


async def _connected(nc: NATS) -> None:
    for _ in range(600):  # reconnects every 0.2 s; generously bounded
        if nc.is_connected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the client did not reconnect to the restarted nats-server")
