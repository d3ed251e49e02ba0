"""The worker's probe endpoints follow its health: ready while connected, not once stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp

from switchyard.natsserver import NatsServer, free_port


async def _status(url: str) -> int:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def test_readyz_follows_nats(nats_server: NatsServer) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "switchyard.worker", "--nats", nats_server.url, "--model", "m",
                             "--handler", "switchyard.worker.handlers:echo", "--health-port", str(port)],
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(20):
            while await _status(f"{base}/readyz") != 200:
                await asyncio.sleep(0.1)
        assert await _status(f"{base}/healthz") == 200
        nats_server.stop()
        async with asyncio.timeout(20):
            while await _status(f"{base}/readyz") != 503:
                await asyncio.sleep(0.1)
        assert await _status(f"{base}/healthz") == 200  # alive, just not ready
        nats_server.start()
        async with asyncio.timeout(30):
            while await _status(f"{base}/readyz") != 200:
                await asyncio.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
