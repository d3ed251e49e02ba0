"""`make bench`: what usage accounting costs (docs/usage.md, docs/performance.md).

    python -m bench.usage [--records 200000] [--appends 2000] [--repeat 3]

On a real nats-server (file storage), the SWITCHYARD_USAGE ledger filled with `--records` records
(20 tenants, 100 keys, 10 models), then, each side by side with a floor measured in the same run:

- scan: what GET /v1/usage does for a range holding every record (count them, read them, decode and sum
  per tenant, key and model: gateway/usage_ledger.py + usage_totals.py), in records per second;
  floor: the same ephemeral consumer read without decoding or summing (JetStream and nats-py alone);
- bound check: counting a range's records before reading any (two consumers' num_pending), the price
  of refusing a range past the limit;
- append: one worker's UsageLedger.append (a JetStream publish with its Nats-Msg-Id, awaited for the
  PubAck) at p50 and p99, sequentially; floor: a core-NATS request-reply round trip to a responder in
  the same process (the least any acknowledged message costs);
- follow: what every gateway replica's anomaly watch spends per record once it has it (decode, then
  the detector's add: gateway/usage_anomaly.py), CPU only; floor: the decode alone.

Results go to bench/results/usage.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from switchyard.gateway.usage_anomaly import AnomalyRule, Detector
from switchyard.gateway.usage_ledger import _config, _pending, scan
from switchyard.gateway.usage_totals import Aggregate
from switchyard.jetstream import apply_usage_stream
from switchyard.messages import UsageRecord
from switchyard.natsserver import NatsServer
from switchyard.subjects import USAGE_PREFIX, USAGE_STREAM, usage_subject
from switchyard.worker.usage import UsageLedger

from .gateway import machine

RESULTS = Path(__file__).parent / "results" / "usage.json"


def record(i: int) -> UsageRecord:
    tenant = f"tenant-{i % 20}"
    return UsageRecord(id=f"req-{i}", tenant=tenant, key_name=f"{tenant}-key-{i % 5}", op="generate",
                       model=f"org/model-{i % 10}", bundle="default", machine_profile="l4", pool="default",
                       attempt=1, final=True, state="succeeded", items=4, input_tokens=120, output_tokens=300,
                       compute_s=0.25, gpus=1.0, worker="bench-worker")


async def fill(nc: NATS, js: JetStreamContext, n: int) -> None:
    """n records, published without waiting for each PubAck (then waited for as a whole)."""
    for start in range(0, n, 10_000):
        for i in range(start, min(n, start + 10_000)):
            rec = record(i)
            await nc.publish(usage_subject(rec.tenant), rec.encode(), headers={"Nats-Msg-Id": rec.msg_id})
        await nc.flush()
    while (await js.stream_info(USAGE_STREAM)).state.messages < n:
        await asyncio.sleep(0.1)


async def floor_read(js: JetStreamContext, start: dt.datetime) -> int:
    info = await js.add_consumer(USAGE_STREAM, _config(start, f"{USAGE_PREFIX}.>"))
    count = int(info.num_pending or 0)
    sub = await js.pull_subscribe_bind(consumer=info.name, stream=USAGE_STREAM, pending_msgs_limit=16_384)
    read = 0
    while read < count:
        read += len(await sub.fetch(batch=min(4096, count - read), timeout=10))
    await sub.unsubscribe()
    await js.delete_consumer(USAGE_STREAM, info.name)
    return read


async def one_round(nc: NATS, js: JetStreamContext, appends: int, start: dt.datetime) -> dict[str, Any]:
    n = (await js.stream_info(USAGE_STREAM)).state.messages  # the fill, and the earlier rounds' appends
    end = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    t = time.perf_counter()
    floor_n = await floor_read(js, start)
    floor_s = time.perf_counter() - t
    agg = Aggregate(["tenant", "key", "model"])
    t = time.perf_counter()
    scanned = await scan(js, start, end, None, 10 * n, agg.add)
    scan_s = time.perf_counter() - t
    assert scanned == n == floor_n, (scanned, n, floor_n)
    assert sum(r["requests"] for r in agg.rows()) == n
    t = time.perf_counter()
    name, count = await _pending(js, start, f"{USAGE_PREFIX}.>")
    later_name, _ = await _pending(js, end - dt.timedelta(seconds=1), f"{USAGE_PREFIX}.>")
    count_s = time.perf_counter() - t
    for consumer in (name, later_name):
        await js.delete_consumer(USAGE_STREAM, consumer)
    assert count == n

    ledger = UsageLedger(js)
    append: list[float] = []
    tag = time.monotonic_ns()
    for i in range(appends):
        rec = record(i)
        rec.id = f"append-{tag}-{i}"  # new ids each round: no record is a duplicate
        t = time.perf_counter()
        assert await ledger.append(rec)
        append.append(time.perf_counter() - t)
    async def respond(msg: Any) -> None:
        await msg.respond(b"ok")

    sub = await nc.subscribe("bench.floor", cb=respond)
    floor_rt: list[float] = []
    payload = record(0).encode()
    for _ in range(appends):
        t = time.perf_counter()
        await nc.request("bench.floor", payload, timeout=5)
        floor_rt.append(time.perf_counter() - t)
    await sub.unsubscribe()
    raw = [record(i).encode() for i in range(min(n, 100_000))]
    t = time.perf_counter()
    for data in raw:
        UsageRecord.decode(data)
    decode_s = time.perf_counter() - t
    detector = Detector(AnomalyRule())
    t = time.perf_counter()
    for i, data in enumerate(raw):
        rec = UsageRecord.decode(data)
        detector.add(rec.tenant, rec.key_name, 1_795_000_000.0 + i * 0.01)  # 100 records a second
    follow_s = time.perf_counter() - t
    return {"records": n, "follow_us": follow_s / len(raw) * 1e6, "decode_us": decode_s / len(raw) * 1e6,
            "scan_s": scan_s, "scan_per_s": n / scan_s, "floor_read_s": floor_s,
            "floor_read_per_s": n / floor_s, "count_s": count_s,
            "append_p50_us": statistics.median(append) * 1e6,
            "append_p99_us": sorted(append)[int(0.99 * len(append))] * 1e6,
            "floor_rt_p50_us": statistics.median(floor_rt) * 1e6,
            "floor_rt_p99_us": sorted(floor_rt)[int(0.99 * len(floor_rt))] * 1e6}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream(timeout=30)
        await apply_usage_stream(js, 35)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        t = time.perf_counter()
        await fill(nc, js, args.records)
        fill_s = time.perf_counter() - t
        rounds = []
        for i in range(args.repeat):
            rounds.append(await one_round(nc, js, args.appends, start))
            r = rounds[-1]
            print(f"round {i + 1}: scan {r['scan_per_s']:,.0f} records/s (floor read {r['floor_read_per_s']:,.0f}/s); "
                  f"count {r['count_s'] * 1000:.1f} ms; append p50 {r['append_p50_us']:.0f} us "
                  f"(floor request-reply {r['floor_rt_p50_us']:.0f} us)", flush=True)
        await nc.close()
    finally:
        server.close()
    best = {k: (max if k.endswith("per_s") else min)(r[k] for r in rounds) for k in rounds[0] if k != "records"}
    return {"machine": machine(), "records": args.records, "fill_s": fill_s, "rounds": rounds, "best": best}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    out = asyncio.run(main(args))
    b = out["best"]
    print(f"\nusage ledger, {args.records:,} records (best of {args.repeat}):")
    print(f"  GET /v1/usage scan + sum   {b['scan_per_s']:>12,.0f} records/s   {b['scan_s']:.2f} s")
    print(f"  floor: read only           {b['floor_read_per_s']:>12,.0f} records/s   {b['floor_read_s']:.2f} s")
    print(f"  count before reading       {b['count_s'] * 1000:>12.1f} ms")
    print(f"  append (worker, p50/p99)   {b['append_p50_us']:>9.0f} / {b['append_p99_us']:.0f} us")
    print(f"  floor: request-reply       {b['floor_rt_p50_us']:>9.0f} / {b['floor_rt_p99_us']:.0f} us")
    print(f"  follow (per replica)       {b['follow_us']:>12.1f} us/record")
    print(f"  floor: decode only         {b['decode_us']:>12.1f} us/record")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    cli()
