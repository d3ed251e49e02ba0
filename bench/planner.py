"""`make bench`: the per-step overhead of a Planner run over direct calls.

    python -m bench.planner [--requests 300] [--repeat 3]

bench/gateway.py's stack (nats-server, one `switchyard gateway` process on a copy of examples/
with two Planners added, an echo worker process, the floor responder). Sequential requests at
c=1 on one kept connection, each timed at the client:

- floor: a direct core-NATS request-reply around the echo handler (bench/floor.py);
- direct: POST /v1/encode/switchyard/echo, a worker live (the synchronous path);
- plan, 1 step and 4 chained steps: POST /v1/plans/<name> with `Prefer: wait=30` (answered 200
  when the run ends), every step on switchyard/echo;
- per step: the 4-step run's time / 4, and its overhead over a direct call (per step - direct);
- per added step: (4-step run - 1-step run) / 3, what one more step in a chain costs.

A step is a kept job, unlike a direct call: a create-only record, the publish, the worker's
`running` and final record writes, the run record written by compare-and-set, and the KV update
that wakes the run. Results go to bench/results/planner.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from switchyard.messages import Result, WorkItem

from . import probe
from .floor import SUBJECT
from .gateway import MODEL, examples_dir, machine, save, spread, stack

CHAIN = 4
PLANNERS = f"""
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {{name: bench-one}}
spec:
  steps:
    - {{name: s1, model: {MODEL}, operation: encode}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {{name: bench-chain}}
spec:
  steps:
""" + "".join(f"    - {{name: s{i}, model: {MODEL}, operation: encode"
              f"{', dependsOn: [s' + str(i - 1) + ']' if i > 1 else ''}}}\n" for i in range(1, CHAIN + 1))


def one_round(args: argparse.Namespace, nats_url: str, url: str, key: str) -> dict[str, Any]:
    floor_item = WorkItem(id="floor", op="encode", model=MODEL, bundle="default", machine_profile="cpu",
                          pool="default", items=[{"text": "x"}]).encode()
    nc = probe.NatsClient(nats_url)
    try:
        floor = probe.sequential(lambda: Result.decode(nc.request(SUBJECT, floor_item)).ok, args.requests)
    finally:
        nc.close()
    body = json.dumps({"items": [{"text": "x"}]}).encode()
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    out = {"floor": floor}
    for name, path, headers in [("direct", f"/v1/encode/{MODEL}", auth),
                                ("plan1", "/v1/plans/bench-one", {**auth, "Prefer": "wait=30"}),
                                ("plan4", "/v1/plans/bench-chain", {**auth, "Prefer": "wait=30"})]:
        http = probe.HttpClient(url, headers)  # no X-Request-ID: each request gets a fresh id (a new run)
        try:
            out[name] = probe.sequential(lambda: http.post(path, body).status == 200, args.requests,
                                         warmup=min(100, args.requests))
        finally:
            http.close()
    row: dict[str, Any] = {}
    for name, lat in out.items():
        row[f"{name}_p50_ms"], row[f"{name}_p99_ms"], row[f"{name}_non200"] = lat.p50_ms, lat.p99_ms, lat.non200
    for q in ("p50", "p99"):
        row[f"per_step_{q}_ms"] = row[f"plan4_{q}_ms"] / CHAIN
        row[f"overhead_{q}_ms"] = row[f"per_step_{q}_ms"] - row[f"direct_{q}_ms"]
        row[f"added_step_{q}_ms"] = (row[f"plan4_{q}_ms"] - row[f"plan1_{q}_ms"]) / (CHAIN - 1)
    return row


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, rounds = r["machine"], r["rounds"]
    col = lambda k: [x[k] for x in rounds]  # noqa: E731
    w = 52
    rows = [
        ("floor: NATS request-reply, p50 / p99", "floor"),
        ("direct call (sync, worker live), p50 / p99", "direct"),
        ("plan run, 1 step, p50 / p99", "plan1"),
        (f"plan run, {CHAIN} chained steps, p50 / p99", "plan4"),
        (f"per step ({CHAIN}-step run / {CHAIN}), p50 / p99", "per_step"),
        ("overhead per step over a direct call, p50 / p99", "overhead"),
        ("one more step in a chain, p50 / p99", "added_step"),
    ]
    bad = sum(x[f"{k}_non200"] for x in rounds for k in ("direct", "plan1", "plan4"))
    lines = [
        f"machine: {m.get('cpu', '?')}, {m['cores']} cores, {m['python']}, {m['nats_server']}; "
        f"load avg {m['load_before']:.2f} before, {m['load_after']:.2f} after",
        f"setup: 1 gateway process, 1 echo worker process, c=1, {args.requests} requests a kind a round, one "
        f"kept connection; {len(rounds)} round(s): best (median, worst), ms; non-200 answers: {bad}",
        "",
    ]
    for label, key in rows:
        lines.append(f"{label:{w}}{spread(col(key + '_p50_ms'), min, '.3f'):>26}"
                     f"{spread(col(key + '_p99_ms'), min, '.3f'):>26}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300, help="sequential requests per kind per round")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config"
        shutil.copytree(examples_dir(), config)
        (config / "bench-planners.yaml").write_text(PLANNERS)
        with stack(worker_concurrency=4, config_dir=config) as st:
            rounds = []
            for i in range(args.repeat):
                print(f"round {i + 1}/{args.repeat} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                rounds.append(one_round(args, st.nats_url, st.url, st.key))
    info["load_after"] = os.getloadavg()[0]
    results = {"machine": info, "rounds": rounds,
               "median_overhead_p50_ms": statistics.median(x["overhead_p50_ms"] for x in rounds)}
    text = report(results, args)
    print(text)
    save("planner.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()
