"""`make bench`: fair share between tenants and priority classes on one lane.

    python -m bench.fairness [--burst 10000] [--low 2000] [--concurrency 4] [--item-ms 2]

Real processes: a nats-server, a gateway (`switchyard gateway --config-dir`) and one worker
(`python -m switchyard.worker`, concurrency = one batch = `--concurrency` items) whose handler
sleeps `--item-ms` per item and logs which item it started and when. Each request carries one
item, so items, work items and messages are the same thing here.

1. Fairness: tenant A queues a burst of `--burst` 202 jobs (`Prefer: respond-async`) while the lane
   has no worker; the worker starts; once it has served 100 of them, tenant B sends one item
   (also a 202 job). Measured: how many items the worker started after B's item was stored (its
   202 came back; the gateway rang its queue before answering) and before it: B's delay, in items
   and in batches of `--concurrency`; apart, the items started while B's request was still on its
   way (HTTP, the gateway, the PubAck: no scheduler can take an item not yet stored); and B's wall
   time from its request to its final job state. The floor: one item alone on an idle lane, same path.
2. Priority: tenant A queues `--low` items with `X-Priority: low`, the worker starts, and after 100
   served A sends one item with `X-Priority: high`: the same delay, in items and batches.

Results in bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from switchyard.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "bench/fair"
KEY_A = "bench-tenant-a-key-0123456789"
KEY_B = "bench-tenant-b-key-0123456789"

CONFIG = """apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {{name: fairness}}
spec:
  auth:
    apiKeys:
      - {{name: tenant-a, secretRef: {{name: keys, key: a}}, tier: pro}}
      - {{name: tenant-b, secretRef: {{name: keys, key: b}}}}
{priority}  jobs: {{resultTtlSeconds: 3600}}
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData: {{a: {key_a}, b: {key_b}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {{name: fair}}
spec:
  model: {model}
  operations: [encode]
  machineProfiles: [cpu]
  timeoutSeconds: 600
  workers: {{service: fair}}
"""


def config() -> str:
    # Before the priority classes existed (the baseline run), spec.priority was not a field.
    from switchyard.api.gateway import GatewaySpec
    priority = "  priority:\n    headerTiers: [pro]\n" if "priority" in GatewaySpec.model_fields else ""
    return CONFIG.format(priority=priority, key_a=KEY_A, key_b=KEY_B, model=MODEL)


def handler(items: list[Any], ctx: Any) -> list[Any]:
    """The bench worker's handler: logs each item's tag as it starts, then sleeps FAIR_ITEM_MS per item."""
    with open(os.environ["FAIR_LOG"], "a") as f:
        f.write(f"{time.time():.6f} {items[0]['text']}\n")
    time.sleep(float(os.environ.get("FAIR_ITEM_MS", "2")) / 1000 * len(items))
    return [{"ok": True} for _ in items]


def read_log(path: Path) -> list[tuple[float, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        t, _, tag = line.partition(" ")
        if tag:
            out.append((float(t), tag))
    return out


class Stack:
    def __init__(self, tmp: Path, args: argparse.Namespace) -> None:
        self.tmp, self.args = tmp, args
        self.nats = NatsServer(store_dir=str(tmp / "js"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gateway: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None

    def _start_gateway(self) -> None:
        (self.tmp / "config").mkdir()
        (self.tmp / "config" / "all.yaml").write_text(config())
        self.nats.start()
        with open(self.tmp / "gateway.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "switchyard.cli.main", "gateway", "--config-dir", str(self.tmp / "config"),
                 "--nats", self.nats.url, "--port", str(self.port), "--metrics-port", str(free_port())],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    async def __aenter__(self) -> Stack:
        try:
            return await self._ready()
        except BaseException:
            await self.__aexit__()
            raise

    async def _ready(self) -> Stack:
        self._start_gateway()
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.get(self.url + "/readyz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not become ready:\n" + (self.tmp / "gateway.log").read_text()[-3000:])
            await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop_worker()
        if self.http is not None:
            await self.http.close()
        if self.gateway is not None and self.gateway.poll() is None:
            os.killpg(self.gateway.pid, signal.SIGTERM)
            self.gateway.wait(30)
        self.nats.stop()

    def start_worker(self, log: Path) -> None:
        env = {**os.environ, "FAIR_LOG": str(log), "FAIR_ITEM_MS": str(self.args.item_ms),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "switchyard.worker", "--nats", self.nats.url, "--model", MODEL,
             "--handler", "bench.fairness:handler", "--concurrency", str(self.args.concurrency),
             "--log-level", "WARNING"], env=env, start_new_session=True)

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGTERM)
            self.worker.wait(60)
        self.worker = None

    async def send(self, key: str, tag: str, priority: str | None = None) -> str:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {key}", "Prefer": "respond-async"}
        if priority:
            headers["X-Priority"] = priority
        async with self.http.post(f"{self.url}/v1/encode/{MODEL}", headers=headers,
                                  json={"items": [{"text": tag}]}) as r:
            body = await r.json()
            if r.status != 202:
                raise SystemExit(f"{tag}: {r.status} {body}\n" + (self.tmp / "gateway.log").read_text()[-3000:])
            return str(body["job_id"])

    async def burst(self, key: str, prefix: str, n: int, priority: str | None = None) -> float:
        t0 = time.perf_counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def sender() -> None:
            while not queue.empty():
                await self.send(key, f"{prefix}{queue.get_nowait()}", priority)

        await asyncio.gather(*(sender() for _ in range(32)))
        return time.perf_counter() - t0

    async def final(self, key: str, job: str, timeout: float = 900.0) -> None:
        assert self.http is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.http.get(f"{self.url}/v1/jobs/{job}", headers={"Authorization": f"Bearer {key}"}) as r:
                body = await r.json()
                if r.status == 200 and body["state"] in ("succeeded", "failed", "expired", "cancelled"):
                    if body["state"] != "succeeded":
                        raise SystemExit(f"job {job}: {body}")
                    return
            await asyncio.sleep(0.02)
        raise SystemExit(f"job {job} not final after {timeout} s")


async def wait_served(log: Path, n: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while len(read_log(log)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker served fewer than {n} items in {timeout} s")
        await asyncio.sleep(0.01)


async def drained(stack: Stack, log: Path, total: int, timeout: float = 900.0) -> None:
    await wait_served(log, total, timeout)
    stack.stop_worker()


async def one_late_item(stack: Stack, name: str, backlog_key: str, backlog_n: int, backlog_priority: str | None,
                        late_key: str, late_priority: str | None) -> dict[str, Any]:
    """Queue a backlog, start the worker, and after 100 served send one late item: its delay."""
    log = stack.tmp / f"{name}.log"
    queue_s = await stack.burst(backlog_key, "A", backlog_n, backlog_priority)
    stack.start_worker(log)
    await wait_served(log, min(100, backlog_n // 2))
    sent = time.time()
    t0 = time.perf_counter()
    job = await stack.send(late_key, "LATE", late_priority)
    stored = time.time()  # the 202: the item is in the stream (and its queue rang) by now
    await stack.final(late_key, job)
    wall_s = time.perf_counter() - t0
    served = read_log(log)
    late_at = next(t for t, tag in served if tag == "LATE")
    before = sum(1 for t, tag in served if tag != "LATE" and stored <= t < late_at)
    in_transit = sum(1 for t, tag in served if tag != "LATE" and sent <= t < min(stored, late_at))
    await drained(stack, log, backlog_n + 1)
    return {"backlog": backlog_n, "backlog_queued_s": round(queue_s, 2), "served_before_late_item": before,
            "batches_before_late_item": round(before / stack.args.concurrency, 2),
            "served_while_its_request_was_in_flight": in_transit, "late_item_wall_s": round(wall_s, 3)}


async def floor(stack: Stack) -> dict[str, Any]:
    """One item alone on an idle lane with a live worker: the same 202 path, no backlog."""
    log = stack.tmp / "floor.log"
    stack.start_worker(log)
    await wait_worker_live(stack)
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        job = await stack.send(KEY_B, "FLOOR")
        await stack.final(KEY_B, job)
        walls.append(time.perf_counter() - t0)
    stack.stop_worker()
    return {"late_item_wall_s": round(sorted(walls)[len(walls) // 2], 3)}


async def wait_worker_live(stack: Stack, timeout: float = 60.0) -> None:
    assert stack.http is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with stack.http.get(f"{stack.url}/v1/capacity",
                                  headers={"Authorization": f"Bearer {KEY_B}"}) as r:
            body = await r.json()
            if r.status == 200 and any(lane.get("workers") for lane in body.get("fleets", [])):
                return
        await asyncio.sleep(0.1)
    raise SystemExit("the worker did not show up in /v1/capacity")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sy-fair-") as tmp:
        async with Stack(Path(tmp), args) as stack:
            result: dict[str, Any] = {"floor": await floor(stack)}
            result["fairness"] = await one_late_item(stack, "fair", KEY_A, args.burst, None, KEY_B, None)
            result["priority"] = await one_late_item(stack, "prio", KEY_A, args.low, "low", KEY_A, "high")
            return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burst", type=int, default=10_000)
    p.add_argument("--low", type=int, default=2_000)
    p.add_argument("--concurrency", type=int, default=4, help="worker concurrency = one batch")
    p.add_argument("--item-ms", type=float, default=2.0, help="handler time per item")
    p.add_argument("--label", default="", help="stored with the results (e.g. before/after)")
    args = p.parse_args()
    result = asyncio.run(run(args))
    batch = args.concurrency
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; batch = worker concurrency = {batch}; "
          f"handler {args.item_ms} ms/item")
    print(f"{'case':<36} {'items before':>13} {'batches':>8} {'+ in flight':>12} {'wall s':>8}")
    print(f"{'floor: one item, idle lane':<36} {0:>13} {0:>8} {'':>12} {result['floor']['late_item_wall_s']:>8}")
    for case, title in (("fairness", f"B's 1 item behind A's {args.burst}"),
                        ("priority", f"1 high behind {args.low} low")):
        r = result[case]
        print(f"{title:<36} {r['served_before_late_item']:>13} {r['batches_before_late_item']:>8} "
              f"{r['served_while_its_request_was_in_flight']:>12} {r['late_item_wall_s']:>8}")
    out = ROOT / "bench" / "results" / "fairness.json"
    out.parent.mkdir(exist_ok=True)
    stored = json.loads(out.read_text()) if out.exists() else {}
    stored[args.label or "latest"] = {"args": vars(args), "machine": f"{os.cpu_count()} cores", **result}
    out.write_text(json.dumps(stored, indent=2) + "\n")


if __name__ == "__main__":
    main()
