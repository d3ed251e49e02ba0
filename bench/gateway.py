"""`make bench`: the gateway path against its floor, measured side by side in one run.

    python -m bench.gateway [--requests 2000] [--seconds 10] [--concurrency 64]

Starts a real nats-server, one gateway process on examples/ and echo worker
processes, plus a floor responder: a direct nats-py request-reply around the same
echo handler. Prints p50/p99 latency at concurrency 1 and throughput at
concurrency N for both, and the ratios. Results go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats

from switchyard.cli.dev import demo_key, examples_dir
from switchyard.messages import Result, WorkItem
from switchyard.natsserver import NatsServer, free_port

from .floor import SUBJECT

ROOT = Path(__file__).resolve().parents[1]
MODEL = "switchyard/echo"
ITEMS = [{"text": "The quick brown fox jumps over the lazy dog."}]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)


async def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def wait_worker(url: str, key: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.post(f"{url}/v1/configs/resolve", json={"model": MODEL},
                                 headers={"Authorization": f"Bearer {key}"}) as r:
                if (await r.json())["live_workers"] > 0:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError("no echo worker registered")


# -- the two paths ------------------------------------------------------------------

def floor_call(nc: nats.NATS):  # type: ignore[no-untyped-def]
    async def call(i: int) -> None:
        item = WorkItem(id=f"f{i}", op="encode", model=MODEL, bundle="default", machine_profile="cpu",
                        pool="default", items=ITEMS)
        reply = await nc.request(SUBJECT, item.encode(), timeout=10)
        assert Result.decode(reply.data).ok

    return call


def gateway_call(http: aiohttp.ClientSession, url: str):  # type: ignore[no-untyped-def]
    body = json.dumps({"items": ITEMS}).encode()
    endpoint = f"{url}/v1/encode/{MODEL}"

    async def call(i: int) -> None:
        async with http.post(endpoint, data=body, headers={"Content-Type": "application/json"}) as r:
            await r.read()
            assert r.status == 200, r.status

    return call


async def latency(call, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for i in range(min(200, n)):  # warm up
        await call(-i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": percentile(samples, 0.50), "p99_ms": percentile(samples, 0.99),
            "mean_ms": statistics.fmean(samples), "n": n}


async def throughput(call, concurrency: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    done = 0
    lat: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            await call(done)
            lat.append((time.perf_counter() - t) * 1000)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*[loop() for _ in range(concurrency)])
    elapsed = time.perf_counter() - start
    return {"rps": done / elapsed, "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
            "requests": done, "concurrency": concurrency, "seconds": elapsed}


async def run(args: argparse.Namespace) -> dict:
    key = demo_key(examples_dir())
    port, mport = free_port(), free_port()
    with NatsServer() as server:
        procs = [spawn("-m", "bench.floor", "--nats", server.url)]
        procs += [spawn("-m", "switchyard.worker", "--nats", server.url, "--model", MODEL, "--machine-profile",
                        "cpu", "--handler", "switchyard.worker.handlers:echo", "--concurrency", str(args.worker_concurrency),
                        "--log-level", "WARNING") for _ in range(args.workers)]
        procs.append(spawn("-m", "switchyard.cli.main", "gateway", "--config-dir", str(examples_dir()),
                           "--nats", server.url, "--port", str(port), "--metrics-port", str(mport),
                           "--log-level", "WARNING", *(["--no-access-log"] if not args.access_log else [])))
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_http(f"{url}/readyz")
            await wait_worker(url, key)
            nc = await nats.connect(server.url)
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(connector=connector,
                                             headers={"Authorization": f"Bearer {key}"}) as http:
                floor, gw = floor_call(nc), gateway_call(http, url)
                results = {
                    "floor_c1": await latency(floor, args.requests),
                    "gateway_c1": await latency(gw, args.requests),
                    "floor_cN": await throughput(floor, args.concurrency, args.seconds),
                    "gateway_cN": await throughput(gw, args.concurrency, args.seconds),
                }
            await nc.close()
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(20)
    return results


def report(r: dict, args: argparse.Namespace) -> str:
    f1, g1, fn, gn = r["floor_c1"], r["gateway_c1"], r["floor_cN"], r["gateway_cN"]
    lines = [
        f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.platform()}",
        f"setup: 1 gateway process, {args.workers} echo worker process(es), nats-server, load generator: all on this machine",
        "",
        f"{'':28}{'floor (NATS req-reply)':>24}{'gateway path':>16}{'gateway - floor':>18}{'ratio':>8}",
        f"{'p50 latency, c=1 (ms)':28}{f1['p50_ms']:>24.3f}{g1['p50_ms']:>16.3f}{g1['p50_ms'] - f1['p50_ms']:>18.3f}"
        f"{g1['p50_ms'] / f1['p50_ms']:>8.2f}",
        f"{'p99 latency, c=1 (ms)':28}{f1['p99_ms']:>24.3f}{g1['p99_ms']:>16.3f}{g1['p99_ms'] - f1['p99_ms']:>18.3f}"
        f"{g1['p99_ms'] / f1['p99_ms']:>8.2f}",
        f"{f'throughput, c={args.concurrency} (req/s)':28}{fn['rps']:>24.0f}{gn['rps']:>16.0f}"
        f"{gn['rps'] - fn['rps']:>18.0f}{gn['rps'] / fn['rps']:>8.2f}",
        f"{f'p50 / p99 at c={args.concurrency} (ms)':28}{fn['p50_ms']:>15.2f} / {fn['p99_ms']:<6.2f}"
        f"{gn['p50_ms']:>8.2f} / {gn['p99_ms']:<6.2f}",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per path at c=1")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="echo worker processes")
    p.add_argument("--worker-concurrency", type=int, default=64)
    p.add_argument("--access-log", action="store_true", help="keep the gateway's per-request log line")
    args = p.parse_args()
    try:
        import uvloop

        results = uvloop.run(run(args))
    except ImportError:
        results = asyncio.run(run(args))
    text = report(results, args)
    print(text)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"args": vars(args), "results": results, "report": text}, indent=2))


if __name__ == "__main__":
    main()
