"""What the A/B benches share (bench/syncresults.py, bench/shaping.py, bench/tracing.py): their flags,
and rounds that run every mode back to back on fresh processes, so each mode meets the same load."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import wrk
from .gateway import machine


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per path at c=1")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="rounds (every mode each round)")
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--worker-concurrency", type=int, default=64)
    return p


def rounds(args: argparse.Namespace, what: str, modes: Iterable[str],
           one: Callable[[str, Path], dict[str, Any]]) -> dict[str, Any]:
    """`args.repeat` rounds of `one(mode, scratch dir)` for every mode; exits when wrk is missing."""
    try:
        wrk.ensure_wrk()
    except wrk.WrkMissing as exc:
        sys.exit(f"bench.{what}: {exc}")
    info = machine()
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"sy-bench-{what}-") as tmp:
        for i in range(args.repeat):
            row = {}
            for mode in modes:
                print(f"round {i + 1}/{args.repeat}, {what} {mode} (load {os.getloadavg()[0]:.2f})",
                      file=sys.stderr, flush=True)
                row[mode] = one(mode, Path(tmp) / f"{mode.replace(' ', '-')}-{i}")
            out.append(row)
    info["load_after"] = os.getloadavg()[0]
    return {"machine": info, "rounds": out}
