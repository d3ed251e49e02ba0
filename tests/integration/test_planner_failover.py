"""A plan run outlives the gateway that started it: SIGKILL it mid-run and another replica finishes
the run, with every step run exactly once (real nats-server, two `switchyard gateway` processes,
a real worker)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from cli_processes import installed_script, ready, start, stop
from dataplane import ADMIN, copy_manifests, until, worker

from switchyard.natsserver import NatsServer, free_port

PLANNER = """
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: chain}
spec:
  steps:
    - {name: a, model: test/echo, operation: encode, params: {tag: a}}
    - {name: b, model: test/echo, operation: encode, dependsOn: [a], params: {tag: b, hold: true}}
    - {name: c, model: test/echo, operation: encode, dependsOn: [b], params: {tag: c}}
"""

calls: Counter[str] = Counter()
release = asyncio.Event()


async def tag(items: list[Any], ctx: Any) -> list[Any]:
    calls[ctx.request_id] += 1
    if ctx.params.get("hold"):
        await asyncio.wait_for(release.wait(), 60)
    return [{"tag": ctx.params["tag"], "in": item} for item in items]



async def test_sigkill_of_the_gateway_mid_run_another_replica_completes_it_once(nats_server: NatsServer,
                                                                                 tmp_path: Path) -> None:
    config = copy_manifests(tmp_path / "config")
    (config / "planner.yaml").write_text(PLANNER)
    gateways, urls = [], []
    for name in ("first", "second"):
        port = free_port()
        gateways.append(start([installed_script(), "gateway", "--config-dir", str(config), "--nats",
                               nats_server.url, "--port", str(port), "--metrics-port", str(free_port())],
                              tmp_path / f"{name}.log"))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http, worker(nats_server.url, tag, concurrency=4):
            for url, name in zip(urls, ("first", "second"), strict=True):
                await ready(http, url, tmp_path / f"{name}.log", timeout=30)
            async with http.post(urls[0] + "/v1/plans/chain", headers={**ADMIN, "X-Request-ID": "survivor"},
                                 json={"items": ["x"]}) as resp:
                assert resp.status == 202, await resp.text()
            await until(lambda: calls["survivor/b"] == 1, 30, "step b running")
            stop(gateways[0], signal.SIGKILL)  # mid-run: b runs, c is not queued yet
            release.set()
            deadline = time.monotonic() + 60
            while True:
                async with http.get(urls[1] + "/v1/jobs/survivor", headers=ADMIN) as resp:
                    job = await resp.json()
                if job.get("state") in ("succeeded", "failed", "cancelled", "expired"):
                    break
                assert time.monotonic() < deadline, (tmp_path / "second.log").read_text()[-3000:]
                await asyncio.sleep(0.2)
            assert job["state"] == "succeeded", job
            assert job["result"]["items"] == [{"tag": "c", "in": {"tag": "b", "in": {"tag": "a", "in": "x"}}}]
            assert dict(calls) == {"survivor/a": 1, "survivor/b": 1, "survivor/c": 1}
            assert "took over a plan run" in (tmp_path / "second.log").read_text()
            # Counted once: started by the first gateway, ended by the second (planstats.py).
            deadline = time.monotonic() + 20
            while True:
                async with http.get(urls[1] + "/v1/plans", headers=ADMIN) as resp:
                    runs = next(p["runs"] for p in (await resp.json())["planners"] if p["name"] == "chain")
                counted = {k: runs[k] for k in ("started", "running", "succeeded", "failed", "cancelled")}
                if counted["succeeded"]:
                    break
                assert time.monotonic() < deadline, runs
                await asyncio.sleep(0.2)
            assert counted == {"started": 1, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0}
    finally:
        for proc in gateways:
            stop(proc)
