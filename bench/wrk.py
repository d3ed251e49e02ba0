"""HTTP throughput with wrk (a C load generator) and bench/non200.lua.

The Lua script counts every answer that is not 200; a run with any such answer, or
any socket error or timeout, is INVALID and its figure is never reported as speed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("non200.lua")
MARK = "SWITCHYARD_WRK "


class WrkMissing(RuntimeError):
    pass


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when missing and we are root on Debian/Ubuntu."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing it with apt-get", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        quiet = {"stdout": subprocess.DEVNULL, "env": env}
        if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet).returncode != 0:  # type: ignore[call-overload]
            subprocess.run(["apt-get", "update", "-q"], **quiet)  # type: ignore[call-overload]
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet)  # type: ignore[call-overload]
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing(
        "the benchmark needs wrk (a C HTTP load generator) and could not install it: "
        "run `sudo apt-get install wrk` (Debian/Ubuntu), `brew install wrk` (macOS), "
        "or build it from https://github.com/wg/wrk, then run `make bench` again")


def command(wrk: str, url: str, *, connections: int, threads: int, seconds: float,
            headers: dict[str, str]) -> list[str]:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
           "-s", str(SCRIPT)]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, url]


def run(cmd: list[str], body: bytes) -> dict:
    """Run wrk once; the script's summary plus the CPU seconds wrk itself used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SY_BENCH_BODY": body.decode()})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(line[len(MARK):])
    seconds = out["duration_us"] / 1e6
    errors = sum(out["errors"].values())
    out.update(
        rps=out["requests"] / seconds,
        seconds=seconds,
        p50_ms=out["latency_us"]["p50"] / 1000,
        p99_ms=out["latency_us"]["p99"] / 1000,
        valid=out["non200"] == 0 and errors == 0 and out["requests"] > 0,
        client_cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )
    return out
