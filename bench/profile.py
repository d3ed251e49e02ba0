"""Where the gateway and the echo worker spend their CPU under load (py-spy samples).

    python -m bench.profile [--seconds 10] [--concurrency 64|1] [--top 25]

Starts the same processes as bench.gateway, drives the gateway with wrk (concurrency N)
or the sequential probe (concurrency 1), samples the gateway and the worker with
py-spy, and prints per process the functions with the most samples: self (the function
itself was running) and inclusive (it was on the stack). Needs py-spy
(`pip install py-spy`) and the right to ptrace the processes (root, or
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from . import probe, wrk
from .gateway import ITEMS, MODEL, stack


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        sys.exit("bench.profile: py-spy not found: pip install py-spy")
    return found


def record(pid: int, seconds: float, out: Path, rate: int) -> subprocess.Popen[bytes]:
    # --nonblocking: do not pause the process per sample, so the load is not perturbed.
    return subprocess.Popen([py_spy(), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """'func (path/to/site-packages/pkg/mod.py:12)' -> 'func (pkg/mod.py:12)'."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "lib/python3.", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "lib/python3.":
                where = "stdlib " + where.split("/", 1)[1]
    return f"{name} ({where}" if where else name


def top(raw: Path, n: int) -> str:
    """Self and inclusive sample counts from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text:
            continue
        k = int(count)
        frames = [_short(f) for f in stack_text.split(";")]
        total += k
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    if not total:
        return "  no samples"
    rows = [f"  {total} samples", "  self %   function"]
    rows += [f"  {100 * c / total:6.1f}   {f}" for f, c in own.most_common(n)]
    rows += ["  incl %   function"]
    rows += [f"  {100 * c / total:6.1f}   {f}" for f, c in incl.most_common(n)]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    args = p.parse_args()
    py_spy()
    body = json.dumps({"items": ITEMS}).encode()
    out = Path(tempfile.mkdtemp(prefix="sy-profile-"))
    with stack() as st:
        spies = {name: (record(st.pids[name], args.seconds + 1, out / f"{name}.txt", args.rate))
                 for name in ("gateway", "worker")}
        time.sleep(0.5)  # py-spy attaches
        if args.concurrency == 1:
            http = probe.HttpClient(st.url, {"Authorization": f"Bearer {st.key}", "Content-Type": "application/json"})
            path = f"/v1/encode/{MODEL}"
            deadline = time.monotonic() + args.seconds
            n = 0
            while time.monotonic() < deadline:
                assert http.post(path, body).status == 200
                n += 1
            http.close()
            load = f"{n} sequential requests ({n / args.seconds:.0f} req/s)"
        else:
            cmd = wrk.command(wrk.ensure_wrk(), st.url + f"/v1/encode/{MODEL}", connections=args.concurrency,
                              threads=1, seconds=args.seconds, headers={"Authorization": f"Bearer {st.key}"})
            res = wrk.run(cmd, body)
            load = f"wrk c={args.concurrency}: {res['rps']:.0f} req/s, non-200 {res['non200']}"
        for spy in spies.values():
            spy.wait(60)
    print(f"load: {load}")
    for name in spies:
        print(f"\n== {name} ==")
        print(top(out / f"{name}.txt", args.top))
    print(f"\nraw stacks: {out}")


if __name__ == "__main__":
    main()
