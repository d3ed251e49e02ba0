"""`make bench`: what `sync_interval: always` (fsync before every PubAck) costs JetStream.

    python -m bench.fsync [--requests 2000] [--seconds 5] [--concurrency 64] [--repeat 3] [--no-cluster]

Publishes the gateway's own WorkItems, with `Nats-Msg-Id`, to the production work stream
config (`work_stream_config`: work-queue, file storage, R1 on one server, R3 on a 3-node
cluster on loopback) and waits for each PubAck, as the gateway does. Four setups: one
server and a 3-node cluster, each with the default periodic sync and with sync always.
Beside them, in the same run, the floor: a core-NATS request-reply to bench/floor.py
(no JetStream, no disk). The client talks to a server that is not the stream's leader,
as two of three gateways would. Results go to bench/results/fsync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import nats
import nats.errors

from switchyard.api.table import QueueLimits
from switchyard.jetstream import work_stream_config
from switchyard.messages import WorkItem
from switchyard.natsserver import NatsCluster, NatsServer, nats_server_binary
from switchyard.subjects import WORK_STREAM, Lane

from .floor import SUBJECT

ROOT = Path(__file__).resolve().parents[1]
LANE = Lane("switchyard/echo", "default", "cpu", "default")
ITEMS = [{"text": "The quick brown fox jumps over the lazy dog."}]
FLOOR = "floor: core NATS request-reply"
_ids = itertools.count()


def item() -> WorkItem:
    return WorkItem(id=f"bench-{next(_ids)}", op="encode", model=LANE.model, bundle=LANE.bundle,
                    machine_profile=LANE.machine_profile, pool=LANE.pool, items=ITEMS, tenant="bench")


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def latency(call: Callable[[], Awaitable[Any]], n: int) -> dict[str, float]:
    for _ in range(min(200, n)):  # warm-up
        await call()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        ms.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(pct(ms, 99), 3)}


async def throughput(call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return round(done / (time.perf_counter() - start))


async def measure(call: Callable[[], Awaitable[Any]], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = await latency(call, args.requests)
    out["rps"] = await throughput(call, args.seconds, args.concurrency)
    return out


async def jetstream(servers: list[NatsServer], args: argparse.Namespace) -> dict[str, Any]:
    nc = await nats.connect(servers[0].url)
    js = nc.jetstream(timeout=10)
    # The production config, but one lane takes every item here: lift its per-lane limit.
    await js.add_stream(work_stream_config(QueueLimits(replicas=len(servers), max_messages_per_lane=10**8)))
    cluster = (await js.stream_info(WORK_STREAM)).cluster
    if len(servers) > 1 and cluster and cluster.leader == servers[0].name:
        # Talk to a server that is not the leader: the usual case for a gateway in a cluster.
        await nc.close()
        nc = await nats.connect(servers[1].url)
        js = nc.jetstream(timeout=10)

    async def publish() -> None:
        it = item()
        await js.publish(LANE.subject, it.encode(), headers={"Nats-Msg-Id": it.key})

    try:
        return await measure(publish, args)
    finally:
        await js.delete_stream(WORK_STREAM)
        await nc.close()


async def floor(url: str, args: argparse.Namespace) -> dict[str, Any]:
    nc = await nats.connect(url)
    payload = item().encode()

    async def request() -> None:
        await nc.request(SUBJECT, payload, timeout=10)

    for _ in range(100):  # the responder's subscription may reach the server after its "ready"
        try:
            await request()
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
    try:
        return await measure(request, args)
    finally:
        await nc.close()


def arun(coro: Awaitable[Any]) -> Any:
    """uvloop when installed, as the gateway runs."""
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def nats_version() -> str:
    return subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.platform(),
                            "python": f"{platform.python_implementation()} {platform.python_version()}",
                            "nats_server": nats_version()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
        with open("/proc/meminfo") as f:
            info["ram_gib"] = round(int(f.readline().split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return info


def one_round(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Every setup once, fresh servers each, then the floor."""
    out: dict[str, dict[str, float]] = {}
    setups = [("1 server", 1)] + ([("3-node cluster, R3", 3)] if args.cluster else [])
    for label, size in setups:
        for sync in (False, True):
            name = f"{label}, {'sync always' if sync else 'default sync'}"
            with ExitStack() as stack:
                if size == 1:
                    servers = [stack.enter_context(NatsServer(sync_always=sync))]
                else:
                    servers = stack.enter_context(NatsCluster(size, sync_always=sync)).servers
                out[name] = arun(jetstream(servers, args))
            print(f"  {name}: {out[name]}", file=sys.stderr, flush=True)
    with NatsServer() as server:
        responder = subprocess.Popen([sys.executable, "-m", "bench.floor", "--nats", server.url], cwd=ROOT,
                                     stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert responder.stdout is not None and responder.stdout.readline().strip() == b"ready"
            out[FLOOR] = arun(floor(server.url, args))
        finally:
            responder.terminate()
            responder.wait(10)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    for i in range(args.repeat):  # rounds interleave the setups, so a busy moment hits all of them
        print(f"round {i + 1}/{args.repeat}", file=sys.stderr, flush=True)
        rounds.append(one_round(args))
    summary = {name: {metric: {"median": statistics.median(r[name][metric] for r in rounds),
                               "min": min(r[name][metric] for r in rounds),
                               "max": max(r[name][metric] for r in rounds)}
                      for metric in rounds[0][name]}
               for name in rounds[0]}
    return {"machine": machine(), "requests": args.requests, "seconds": args.seconds,
            "concurrency": args.concurrency, "rounds": rounds, "summary": summary}


def report(r: dict[str, Any]) -> str:
    m, n = r["machine"], len(r["rounds"])

    def cell(s: dict[str, float], fmt: str, unit: str = "") -> str:
        med, lo, hi = (format(s[k], fmt) for k in ("median", "min", "max"))
        return f"{med}{unit} ({lo}–{hi})" if n > 1 else f"{med}{unit}"

    lines = [
        f"JetStream publish + PubAck vs core NATS request-reply; {m.get('cpu', '?')}, {m['cores']} cores, "
        f"{m.get('ram_gib', '?')} GiB, {m['nats_server']}",
        f"c=1: {r['requests']} sequential; c={r['concurrency']}: {r['seconds']:g} s closed loop, one connection; "
        f"median of {n} round(s) (min–max)",
        "",
        f"| | p50 c=1 | p99 c=1 | msgs/s c={r['concurrency']} |",
        "|---|---:|---:|---:|",
    ]
    for name in [FLOOR, *(k for k in r["summary"] if k != FLOOR)]:
        s = r["summary"][name]
        lines.append(f"| {name} | {cell(s['p50_ms'], '.3f', ' ms')} | {cell(s['p99_ms'], '.3f', ' ms')} "
                     f"| {cell(s['rps'], ',.0f')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential publishes at concurrency 1")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the concurrent run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the report shows median and range")
    parser.add_argument("--no-cluster", dest="cluster", action="store_false", help="one server only")
    parser.add_argument("--out", default=str(ROOT / "bench/results/fsync.json"))
    args = parser.parse_args()
    results = run(args)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))


if __name__ == "__main__":
    main()
