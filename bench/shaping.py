"""`make bench`: what traffic shaping costs per request (docs/routing.md), beside the floor.

    python -m bench.shaping [--requests 2000] [--seconds 10] [--concurrency 64] [--repeat 3]

The same stack and load as bench/gateway.py (a `switchyard gateway` process on examples/, an
echo worker process, the floor responder; wrk with bench/non200.lua, so any answer that is
not 200 makes a figure INVALID), in two modes, each round running both back to back on fresh
processes, compared as bench/syncresults.py compares its own:

- off: examples/ as shipped: the echo Upstream has one bundle, no weights, no breaker;
- on:  the echo Upstream with a weighted split (default 100, a dark bundle 0: every request is
       hashed by tenant and request id and picked by weight), an alias, and a circuit breaker
       (admitted before, and its outcome recorded after, every request).

Then, in process and without the noise of the stack, the request path's share of it: resolve()
and the breaker's admit and record per request, in both modes (best of 5 runs of 20,000).

Results go to bench/results/shaping.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from switchyard.api import compile_table, load_dir
from switchyard.cli.dev import examples_dir
from switchyard.gateway.breaker import Breakers
from switchyard.gateway.resolve import resolve
from switchyard.messages import Result

from . import abtest, syncresults
from .gateway import MODEL, Bench, save, stack

MODES = {"off": False, "on": True}
SHAPING = {
    "bundles": [{"name": "default", "priority": 0, "weight": 100}, {"name": "dark", "priority": 1, "weight": 0}],
    "aliases": ["echo-latest"],
    "circuitBreaker": {"consecutiveFailures": 5, "coolOffSeconds": 30},
}


def config(dest: Path, shaped: bool) -> Path:
    """examples/, with the echo Upstream's traffic shaping on or off."""
    shutil.copytree(examples_dir(), dest)
    if shaped:
        path = dest / "upstreams.yaml"
        docs = list(yaml.safe_load_all(path.read_text()))
        echo = next(d for d in docs if d and d.get("spec", {}).get("model") == MODEL)
        echo["spec"].update(SHAPING)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


def run(args: argparse.Namespace) -> dict[str, Any]:
    def one(mode: str, work: Path) -> dict[str, Any]:
        with stack(args.workers, args.worker_concurrency, config_dir=config(work, MODES[mode])) as st:
            return Bench(args, st.nats_url, st.url, st.key, st.pids).round()
    return abtest.rounds(args, "shaping", MODES, one)


def in_process(tmp: Path, calls: int = 20_000, runs: int = 5) -> dict[str, float]:
    """Microseconds per request of resolve() + the breaker's admit and record, best of `runs`, per mode."""
    out: dict[str, float] = {}
    ok = Result("x", True)
    for mode, shaped in MODES.items():
        table = compile_table(load_dir(config(tmp / f"micro-{mode}", shaped))[0]).raise_for_issues()
        breakers, ids = Breakers(), [f"req-{i}" for i in range(calls)]
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            for rid in ids:
                res = resolve(table, "encode", MODEL, request_id=rid)
                breakers.admit(res.lane, res.route, "t")
                breakers.record(res.lane, res.route, "t", ok)
            best = min(best, time.perf_counter() - start)
        out[mode] = best / calls * 1e6
    return out


def main() -> None:
    args = abtest.parser(__doc__).parse_args()
    results = run(args)
    results["summary"] = syncresults.summarize(results["rounds"], MODES)
    with tempfile.TemporaryDirectory(prefix="sy-bench-shaping-") as tmp:
        results["in_process_us"] = micro = in_process(Path(tmp))
    text = (syncresults.report(results, args, "shaping", "off", "on")
            + f"\nin process, resolve() + breaker admit and record: off {micro['off']:.2f} us, "
              f"on {micro['on']:.2f} us per request ({micro['on'] - micro['off']:+.2f} us)")
    print(text)
    save("shaping.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()
