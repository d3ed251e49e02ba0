"""`make bench`: what the policy chain (spec.policy, docs/policy.md) costs per request.

    python -m bench.policy [--requests 20000] [--repeat 3]

On a real nats-server (the counters' sy_limits bucket, file storage), one gateway's PolicyEngine admits
`--requests` requests one after another, and each is ended as the inference core ends it (Ticket.end with
the worker's usage), timed per request:

- limits on: the chain of docs/policy.md's example: a requests limit per key, an items limit per tenant,
  a tokens limit per key (reserved, then settled) and a concurrent limit per key, over 100 keys of 10
  tenants (limits high enough never to refuse): the per-request cost with the ledger's leased blocks and
  concurrency slots, the compare-and-sets included where a block or slot runs out;
- floor, measured in the same run: the same engine and requests with a chain of no stages (what every
  request pays for spec.policy being there at all);
- a compare-and-set every request: one requests limit, with the replica's lease dropped before each
  request, as near a limit where the blocks are down to one unit (`--cas` requests a round).

The rounds interleave (floor, limits, floor, limits, ...) so machine noise hits both. Results go to
bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import nats

from switchyard.api.table import CorsRoute, KeyRoute, LimitRoute, PolicyRoute, RoutingTable, StageRoute
from switchyard.gateway.policy import PolicyEngine
from switchyard.natsserver import NatsServer

from .gateway import machine

RESULTS = Path(__file__).parent / "results" / "policy.json"
HIGH = 10**12  # never reached: the bench measures admission, not refusals

LIMITS = PolicyRoute((StageRoute("limits", limits=(
    LimitRoute("per-key", "requests", "key", HIGH, window_s=3600),
    LimitRoute("items-per-tenant", "items", "tenant", HIGH, period="day"),
    LimitRoute("tpm", "tokens", "key", HIGH, window_s=60),
    LimitRoute("in-flight", "concurrent", "key", 1_000),
)),))
FLOOR = PolicyRoute(())
ONE = PolicyRoute((StageRoute("limits", limits=(LimitRoute("per-key", "requests", "key", HIGH, window_s=3600),)),))


class _Dispatcher:
    """What PolicyEngine reads of the gateway's dispatcher: its JetStream context on a real connection."""

    def __init__(self, js: Any) -> None:
        self.js = js
        self.connected = True


def table(policy: PolicyRoute) -> RoutingTable:
    return RoutingTable(epoch=1, gateway="bench", default_pool="default", max_request_body_bytes=1 << 20,
                        anonymous=False, result_ttl_seconds=3600, cors=CorsRoute(), models=MappingProxyType({}),
                        pools=MappingProxyType({}), keys=(), planners=MappingProxyType({}), policy=policy)


KEYS = [KeyRoute(f"key-{i}", "0" * 64, None, None, tenant=f"tenant-{i % 10}") for i in range(100)]
ITEMS = [{"messages": [{"role": "user", "content": "hello"}]}]
PARAMS = {"max_tokens": 64}
USAGE = {"input_tokens": 12, "output_tokens": 40}


async def one_round(engine: PolicyEngine, t: RoutingTable, n: int, cas: bool = False) -> list[float]:
    times: list[float] = []
    clock = time.perf_counter
    for i in range(n):
        key = KEYS[i % len(KEYS)]
        if cas:
            engine.ledger.leases.clear()  # nothing held: this request's limit is a compare-and-set
        start = clock()
        ticket = await engine.admit(t, op="chat", model="org/model", items=ITEMS, params=PARAMS, key=key,
                                    tenant=key.owner, client_ip="10.0.0.1", request_id=f"r{i}")
        ticket.end(USAGE)
        times.append(clock() - start)
    return times


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {"p50_us": statistics.median(times) * 1e6, "p99_us": q[98] * 1e6, "mean_us": statistics.fmean(times) * 1e6}


async def run(requests: int, repeat: int, cas_requests: int) -> dict[str, Any]:
    with NatsServer() as server:
        nc = await nats.connect(server.url)
        try:
            engine = PolicyEngine(_Dispatcher(nc.jetstream()), _registry(), "bench-gateway")
            tend = asyncio.create_task(engine.tend_forever())  # gives back idle blocks, as in a gateway
            limits, floor = table(LIMITS), table(FLOOR)
            await one_round(engine, limits, 2_000)  # warm: the bucket exists, the first blocks are leased
            rounds: dict[str, list[dict[str, float]]] = {"floor": [], "limits": [], "cas": []}
            for i in range(repeat):
                f = summary(await one_round(engine, floor, requests))
                lim = summary(await one_round(engine, limits, requests))
                c = summary(await one_round(engine, table(ONE), cas_requests, cas=True))
                rounds["floor"].append(f)
                rounds["limits"].append(lim)
                rounds["cas"].append(c)
                print(f"round {i + 1}: limits on p50 {lim['p50_us']:.1f} us, p99 {lim['p99_us']:.1f} us; "
                      f"floor p50 {f['p50_us']:.1f} us, p99 {f['p99_us']:.1f} us; "
                      f"a CAS each p50 {c['p50_us']:.0f} us, p99 {c['p99_us']:.0f} us", flush=True)
            tend.cancel()
        finally:
            await nc.close()
    best = {side: min(rs, key=lambda r: r["p50_us"]) for side, rs in rounds.items()}
    return {"machine": machine(), "requests_per_round": requests, "rounds": rounds, "best": best,
            "chain": "requests/key, items/tenant (day), tokens/key (reserved, settled), concurrent/key; 100 keys"}


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cas", type=int, default=2_000, help="requests a round with a compare-and-set each")
    args = parser.parse_args()
    out = asyncio.run(run(args.requests, args.repeat, args.cas))
    b = out["best"]
    print(f"\npolicy chain per request, {args.requests:,} requests a round (best of {args.repeat}):")
    print(f"  limits on (4 limits)   p50 {b['limits']['p50_us']:>7.1f} us   p99 {b['limits']['p99_us']:>8.1f} us")
    print(f"  floor: no stages       p50 {b['floor']['p50_us']:>7.1f} us   p99 {b['floor']['p99_us']:>8.1f} us")
    print(f"  a CAS every request    p50 {b['cas']['p50_us']:>7.1f} us   p99 {b['cas']['p99_us']:>8.1f} us"
          "   (near a limit: blocks of one unit)")
    print("  target: <= 50 us at p50 with limits on")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
