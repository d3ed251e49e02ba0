"""Real processes for integration tests: nats-server, gateways, workers.

Nothing here is a stand-in: the gateway is the production app on a loopback port,
workers are the production runtime (in process, or as `python -m switchyard.worker`
when a test needs to SIGKILL one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from switchyard.gateway.app import Listen, Running, new_state, start
from switchyard.gateway.config import directory
from switchyard.gateway.configsource import ConfigSource
from switchyard.natsserver import free_port
from switchyard.subjects import Lane
from switchyard.worker import Worker, WorkerConfig

MANIFESTS = Path(__file__).parent / "manifests"
ADMIN = {"Authorization": "Bearer admin-key-0123456789abcdef"}
TENANT = {"Authorization": "Bearer tenant-key-0123456789abcdef"}
ECHO_ONLY = {"Authorization": "Bearer echo-only-key-0123456789ab"}
OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}
ECHO = Lane("test/echo", "default", "cpu", "default")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class GatewayUnderTest:
    def __init__(self, running: Running, url: str, metrics_url: str, source: ConfigSource) -> None:
        self.running, self.url, self.metrics_url, self.source = running, url, metrics_url, source
        self.http = aiohttp.ClientSession()

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.running.state

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   json: Any = None, data: Any = None) -> Reply:
        async with self.http.request(method, self.url + path, headers=headers, json=json, data=data) as resp:
            raw = await resp.read()
            try:
                body: Any = await resp.json(content_type=None) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            return Reply(resp.status, dict(resp.headers), body)

    async def infer(self, model: str = "test/echo", items: list[Any] | None = None, op: str = "encode",
                    headers: dict[str, str] | None = None, **kw: Any) -> Reply:
        return await self.call("POST", f"/v1/{op}/{model}", headers={**ADMIN, **(headers or {})},
                               json={"items": items if items is not None else [{"text": "hi"}], **kw})

    async def metrics(self) -> str:
        async with self.http.get(self.metrics_url) as resp:
            return await resp.text()

    async def wait_for_workers(self, lane: Lane, n: int = 1, timeout: float = 15.0) -> None:
        await until(lambda: self.state.registry.serving(lane) >= n, timeout, f"{n} worker(s) on {lane}")

    async def close(self) -> None:
        await self.http.close()
        await self.running.stop()


@asynccontextmanager
async def gateway(nats_url: str, config_dir: Path = MANIFESTS) -> AsyncIterator[GatewayUnderTest]:
    st = new_state(nats_url, directory(config_dir, interval_s=0.2))
    st.source.load()
    port, mport = free_port(), free_port()
    running = await start(st, Listen("127.0.0.1", port, mport), access_log=False)
    gw = GatewayUnderTest(running, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}/metrics", st.source)
    try:
        await until(lambda: st.dispatcher.connected, 15, "gateway connected to NATS")
        yield gw
    finally:
        await gw.close()


@asynccontextmanager
async def worker(nats_url: str, handler: Callable[..., Any], model: str = "test/echo",
                 **kw: Any) -> AsyncIterator[Worker]:
    w = Worker(WorkerConfig(nats_url=nats_url, handler=handler, model=model, heartbeat_interval_s=0.5, **kw))
    await w.start()
    try:
        yield w
    finally:
        await w.stop()


def worker_process(nats_url: str, handler: str, model: str = "test/echo", *extra: str) -> subprocess.Popen[bytes]:
    """A worker as its own process, for tests that kill it."""
    cmd = [sys.executable, "-m", "switchyard.worker", "--nats", nats_url, "--model", model,
           "--handler", handler, "--heartbeat-interval", "0.5", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    proc.wait(20)


def blocking_handler() -> tuple[Callable[..., Any], asyncio.Event, asyncio.Event]:
    """An async handler that waits until its worker cancels it (a job cancelled while running):
    (handler, started once it runs, stopped once the cancel reached it where it waited)."""
    started, stopped = asyncio.Event(), asyncio.Event()

    async def forever(items: list[Any], ctx: Any) -> list[Any]:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return items

    return forever, started, stopped


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.05)


async def job_final(gw: GatewayUnderTest, job_id: str, headers: dict[str, str] = ADMIN,
                    timeout: float = 20.0) -> Reply:
    deadline = time.monotonic() + timeout
    while True:
        r = await gw.call("GET", f"/v1/jobs/{job_id}", headers=headers)
        if r.status == 200 and r.body["state"] in ("succeeded", "failed", "expired", "cancelled"):
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s: {r.status} {r.body}")
        await asyncio.sleep(0.1)


def copy_manifests(dest: Path) -> Path:
    shutil.copytree(MANIFESTS, dest, dirs_exist_ok=True)
    return dest


class Events:
    """One open /v1/events connection, read in the background into `events` ({id, event, data})."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: list[dict[str, Any]] = []
        self.opened = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        block: dict[str, Any] = {}
        async for raw in self.resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("retry:"):
                self.opened.set()  # the gateway's consumer exists: events from now on arrive
            elif line.startswith("id: "):
                block["id"] = int(line[4:])
            elif line.startswith("event: "):
                block["event"] = line[7:]
            elif line.startswith("data: "):
                block["data"] = orjson.loads(line[6:])
            elif line == "" and "event" in block:
                self.events.append({"id": None, **block})  # job.progress has no id
                block = {}

    def of(self, kind: str, job: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind and (job is None or e["data"]["id"] == job)]

    def close(self) -> None:
        self._task.cancel()
        self.resp.close()


@asynccontextmanager
async def events(gw: GatewayUnderTest, headers: dict[str, str]) -> AsyncIterator[Events]:
    resp = await gw.http.get(gw.url + "/v1/events", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/event-stream"
    stream = Events(resp)
    try:
        await asyncio.wait_for(stream.opened.wait(), 10)
        yield stream
    finally:
        stream.close()
