"""`make bench`: what keeping synchronous results costs (spec.jobs.syncResultTtlSeconds), beside the floor.

    python -m bench.syncresults [--requests 2000] [--seconds 10] [--concurrency 64] [--repeat 3]

The same stack and load as bench/gateway.py (a `switchyard gateway` process on examples/, an
echo worker process, the floor responder; wrk with bench/non200.lua, so any answer that is
not 200 makes a figure INVALID), in two modes, each round running both back to back on fresh
processes:

- kept: as shipped (syncResultTtlSeconds 300): after each 200 the gateway puts the result in
        the memory KV bucket sy_results, in the background (one more JetStream write per request);
- off:  syncResultTtlSeconds 0: nothing kept, the path as it was before the setting.

Results go to bench/results/syncresults.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from switchyard.cli.dev import examples_dir

from . import abtest
from .gateway import Bench, save, stack

MODES = {"off": 0, "kept": 300}


def config(dest: Path, ttl_s: int) -> Path:
    """examples/ with spec.jobs.syncResultTtlSeconds set."""
    shutil.copytree(examples_dir(), dest)
    path = dest / "gateway.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    gw = next(d for d in docs if d and d.get("kind") == "Gateway")
    gw["spec"].setdefault("jobs", {})["syncResultTtlSeconds"] = ttl_s
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


def run(args: argparse.Namespace) -> dict[str, Any]:
    def one(mode: str, work: Path) -> dict[str, Any]:
        with stack(args.workers, args.worker_concurrency, config_dir=config(work, MODES[mode])) as st:
            return Bench(args, st.nats_url, st.url, st.key, st.pids).round()
    return abtest.rounds(args, "syncresults", MODES, one)


def summarize(rounds: list[dict[str, Any]], modes: Iterable[str] = MODES) -> dict[str, Any]:
    """Per mode, medians over valid rounds: distance from the round's own floor, req/s, CPU per request.

    (bench/shaping.py compares its two modes the same way.)"""
    out: dict[str, Any] = {}
    for mode in modes:
        runs = [r[mode] for r in rounds]
        ok = [x for x in runs if x["gateway_cN"]["valid"] and x["gateway_c1"]["non200"] == 0]
        use = ok or runs
        med = lambda f: statistics.median(f(x) for x in use)  # noqa: E731
        out[mode] = {
            "valid_rounds": len(ok), "rounds": len(runs),
            "p50_delta_ms": med(lambda x: x["gateway_c1"]["p50_ms"] - x["floor_c1"]["p50_ms"]),
            "p99_delta_ms": med(lambda x: x["gateway_c1"]["p99_ms"] - x["floor_c1"]["p99_ms"]),
            "rps": med(lambda x: x["gateway_cN"]["rps"]),
            "rps_of_floor": med(lambda x: x["gateway_cN"]["rps"] / x["floor_cN"]["rps"]),
            "gateway_us_per_request": med(lambda x: x["gateway_cN"]["cores"]["gateway"] / x["gateway_cN"]["rps"]
                                          * 1e6),
            "nats_us_per_request": med(lambda x: x["gateway_cN"]["cores"]["nats-server"] / x["gateway_cN"]["rps"]
                                       * 1e6),
            "non200": sum(x["gateway_cN"]["non200"] + x["gateway_c1"]["non200"] for x in runs),
        }
    return out


def report(r: dict[str, Any], args: argparse.Namespace, what: str = "sync results",
           base: str = "off", other: str = "kept") -> str:
    """The table of both modes, then `other` against `base`."""
    m, s = r["machine"], r["summary"]
    n = args.concurrency
    lines = [
        f"machine: {m.get('cpu', '?')}, {m['cores']} cores, {m['kernel']}, {m['python']}, {m['nats_server']}",
        f"load avg {m['load_before']:.2f} before, {m['load_after']:.2f} after; {args.repeat} round(s), each mode on "
        f"fresh processes; medians over valid rounds; floor = direct NATS request-reply, measured beside each run",
        "",
        f"{what:<14}{'p50 - floor':>13}{'p99 - floor':>13}{f'req/s c={n}':>13}{'of floor':>10}"
        f"{'gw us/req':>11}{'nats us/req':>13}{'non-200':>9}",
    ]
    for mode in (base, other):
        x = s[mode]
        lines.append(f"{mode:<14}{x['p50_delta_ms']:>+10.3f} ms{x['p99_delta_ms']:>+10.3f} ms{x['rps']:>13.0f}"
                     f"{x['rps_of_floor']:>9.0%} {x['gateway_us_per_request']:>10.0f}{x['nats_us_per_request']:>13.0f}"
                     f"{x['non200']:>9}"
                     + ("" if x["valid_rounds"] else "  INVALID (non-200 answers or socket errors)"))
    off, kept = s[base], s[other]
    lines.append(f"{other} vs {base}: p50 {kept['p50_delta_ms'] - off['p50_delta_ms']:+.3f} ms, "
                 f"p99 {kept['p99_delta_ms'] - off['p99_delta_ms']:+.3f} ms, "
                 f"throughput {kept['rps'] / off['rps'] - 1:+.1%}, "
                 f"CPU per request: gateway {kept['gateway_us_per_request'] - off['gateway_us_per_request']:+.0f} us, "
                 f"nats-server {kept['nats_us_per_request'] - off['nats_us_per_request']:+.0f} us")
    return "\n".join(lines)


def main() -> None:
    args = abtest.parser(__doc__).parse_args()
    results = run(args)
    results["summary"] = summarize(results["rounds"])
    text = report(results, args)
    print(text)
    save("syncresults.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()
