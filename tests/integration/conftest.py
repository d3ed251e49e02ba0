"""Shared fixtures for integration tests: a real nats-server per test, never a mock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NATS

from switchyard.natsserver import NatsServer


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream on 127.0.0.1 (own port and store dir), closed after the test."""
    server = NatsServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A client of `nats_server` that reconnects quickly (tests restart the server)."""
    async def quiet(exc: Exception) -> None:  # reconnect attempts during a restart are expected
        pass

    nc = await nats.connect(nats_server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                            connect_timeout=5, error_cb=quiet)
    try:
        yield nc
    finally:
        await nc.close()
