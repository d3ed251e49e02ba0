"""`make bench`: what tracing costs on the gateway path, off and on, beside the NATS floor.

    python -m bench.tracing [--requests 2000] [--seconds 10] [--concurrency 64] [--repeat 3]

The same stack and load as bench/gateway.py (a `switchyard gateway` process on examples/,
an echo worker process, the floor responder; wrk with bench/non200.lua, so any answer that
is not 200 makes a figure INVALID), in three modes, each round running every mode back to
back on fresh processes:

- off:      as shipped: no spec.tracing, no --otlp-endpoint (nothing imported, no field added);
- sampled out: spec.tracing with sampleRatio 0 and the worker's --otlp-endpoint set: every
            request pays for the sampling decision and the traceparent in the work item, the
            sampler drops every span;
- on:       sampleRatio 1: every span made and exported over OTLP/HTTP (batched, none dropped) to a sink on
            this machine that counts and drops them (switchyard/testing/otlp.py), as a collector
            would receive them. The sink's CPU is on this machine too, and counted.

Results go to bench/results/tracing.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from switchyard.cli.dev import examples_dir
from switchyard.natsserver import free_port

from . import abtest
from .gateway import ROOT, Bench, save, stack, wait_until

MODES = ("off", "sampled out", "on")
# The batch processor's defaults (a queue of 2048, 512 spans every 5 s) drop most spans at thousands of
# requests a second: with these every span is exported, so "on" is the whole cost, export included.
BSP = {"OTEL_BSP_MAX_QUEUE_SIZE": "262144", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096", "OTEL_BSP_SCHEDULE_DELAY": "1000"}


@contextmanager
def batching(env: dict[str, str]) -> Iterator[None]:
    """Set OTEL_BSP_* for the processes started inside (they inherit this environment)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def sink() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The OTLP/HTTP sink process: counts spans, drops them; says how many when it stops."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "switchyard.testing.otlp", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        wait_until(lambda: proc.stdout.readline().startswith("ready"), "OTLP sink ready", 30)  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(20)


def traced_config(dest: Path, endpoint: str, ratio: float) -> Path:
    """examples/ with spec.tracing on the Gateway."""
    shutil.copytree(examples_dir(), dest)
    path = dest / "gateway.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    gw = next(d for d in docs if d and d.get("kind") == "Gateway")
    gw["spec"]["tracing"] = {"endpoint": endpoint, "sampleRatio": ratio}
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


def one(args: argparse.Namespace, mode: str, work: Path) -> dict[str, Any]:
    if mode == "off":
        with stack(args.workers, args.worker_concurrency) as st:
            return Bench(args, st.nats_url, st.url, st.key, st.pids).round()
    with sink() as (endpoint, proc), batching(BSP):
        config = traced_config(work, endpoint, 0.0 if mode == "sampled out" else 1.0)
        with stack(args.workers, args.worker_concurrency, config_dir=config,
                   worker_args=("--otlp-endpoint", endpoint)) as st:
            out = Bench(args, st.nats_url, st.url, st.key, {**st.pids, "otlp sink": proc.pid}).round()
        shutil.rmtree(config)
    proc.wait(20)
    assert proc.stdout is not None
    said = proc.stdout.read().split()
    out["spans_received"] = int(said[1]) if len(said) > 1 and said[0] == "received" else None
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    return abtest.rounds(args, "tracing", MODES, lambda mode, work: one(args, mode, work))


def _valid(x: dict[str, Any]) -> bool:
    return bool(x["gateway_cN"]["valid"]) and x["gateway_c1"]["non200"] == 0


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, median over valid rounds: the gateway's distance from its own round's floor, and req/s."""
    out: dict[str, Any] = {}
    for mode in MODES:
        runs = [r[mode] for r in rounds]
        ok = [x for x in runs if _valid(x)]
        use = ok or runs
        med = lambda f: statistics.median(f(x) for x in use)  # noqa: E731
        out[mode] = {
            "valid_rounds": len(ok), "rounds": len(runs),
            "p50_delta_ms": med(lambda x: x["gateway_c1"]["p50_ms"] - x["floor_c1"]["p50_ms"]),
            "p99_delta_ms": med(lambda x: x["gateway_c1"]["p99_ms"] - x["floor_c1"]["p99_ms"]),
            "rps": med(lambda x: x["gateway_cN"]["rps"]),
            "floor_rps": med(lambda x: x["floor_cN"]["rps"]),
            "rps_of_floor": med(lambda x: x["gateway_cN"]["rps"] / x["floor_cN"]["rps"]),
            "gateway_cores": med(lambda x: x["gateway_cN"]["cores"]["gateway"]),
            "worker_cores": med(lambda x: x["gateway_cN"]["cores"]["worker"]),
            "sink_cores": med(lambda x: x["gateway_cN"]["cores"].get("otlp sink", 0.0)),
            # CPU time per request: what the machine's other load (it shifts req/s) does not change.
            "gateway_us_per_request": med(lambda x: x["gateway_cN"]["cores"]["gateway"] / x["gateway_cN"]["rps"] * 1e6),
            "worker_us_per_request": med(lambda x: x["gateway_cN"]["cores"]["worker"] / x["gateway_cN"]["rps"] * 1e6),
            "non200": sum(x["gateway_cN"]["non200"] + x["gateway_c1"]["non200"] for x in runs),
            "spans_received": [x.get("spans_received") for x in runs],
        }
    return out


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, s = r["machine"], r["summary"]
    n = args.concurrency
    lines = [
        f"machine: {m.get('cpu', '?')}, {m['cores']} cores, {m['kernel']}, {m['python']}, {m['nats_server']}",
        f"load avg {m['load_before']:.2f} before, {m['load_after']:.2f} after; {args.repeat} round(s), each mode on "
        f"fresh processes; medians over valid rounds; floor = direct NATS request-reply, measured beside each run",
        "",
        f"{'tracing':<13}{'p50 - floor':>13}{'p99 - floor':>13}{f'req/s c={n}':>13}{'of floor':>10}"
        f"{'gw cores':>10}{'wkr cores':>10}{'sink cores':>11}{'gw us/req':>10}{'wkr us/req':>11}{'non-200':>9}"
        "  spans exported",
    ]
    for mode in MODES:
        x = s[mode]
        lines.append(
            f"{mode:<13}{x['p50_delta_ms']:>+10.3f} ms{x['p99_delta_ms']:>+10.3f} ms{x['rps']:>13.0f}"
            f"{x['rps_of_floor']:>9.0%} {x['gateway_cores']:>9.2f}{x['worker_cores']:>10.2f}{x['sink_cores']:>11.2f}"
            f"{x['gateway_us_per_request']:>10.0f}{x['worker_us_per_request']:>11.0f}"
            f"{x['non200']:>9}  {', '.join(str(c) for c in x['spans_received']) if mode != 'off' else '-'}"
            + ("" if x["valid_rounds"] else "  INVALID (non-200 answers or socket errors)"))
    off = s["off"]
    for mode in MODES[1:]:
        x = s[mode]
        lines.append(f"{mode} vs off: p50 {x['p50_delta_ms'] - off['p50_delta_ms']:+.3f} ms, "
                     f"p99 {x['p99_delta_ms'] - off['p99_delta_ms']:+.3f} ms, "
                     f"throughput {x['rps'] / off['rps'] - 1:+.1%}, CPU per request: gateway "
                     f"{x['gateway_us_per_request'] - off['gateway_us_per_request']:+.0f} us, worker "
                     f"{x['worker_us_per_request'] - off['worker_us_per_request']:+.0f} us")
    return "\n".join(lines)


def main() -> None:
    args = abtest.parser(__doc__).parse_args()
    results = run(args)
    results["summary"] = summarize(results["rounds"])
    text = report(results, args)
    print(text)
    save("tracing.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()
