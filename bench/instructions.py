"""Instructions per request, counted by valgrind's callgrind: a figure that does not move
with whatever else runs on the machine, for comparing one change of the hot path.

    python -m bench.instructions [--requests 1000] [--process gateway|worker]

Starts the same processes as bench.gateway with one of them (the gateway by default)
under `valgrind --tool=callgrind`, sends warm-up requests, zeroes the counters, sends
`--requests` sequential requests and reports user-space instructions per request
(system calls themselves are not counted, only the code around them). Needs valgrind.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import gateway as bench_gateway
from . import probe
from .gateway import ITEMS, MODEL


def callgrind(out_dir: Path, argv: list[str]) -> list[str]:
    return ["valgrind", "-q", "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            "--dump-instr=no", "--collect-systime=no", *argv]


def _control(*args: str) -> str:
    return subprocess.run(["callgrind_control", *args], capture_output=True, text=True, check=True).stdout


def total_instructions(dump: Path) -> int:
    """The 'summary:' (or 'totals:') line of a callgrind dump: instructions executed (Ir)."""
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {dump}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--process", choices=("gateway", "worker"), default="gateway")
    p.add_argument("--access-log", action="store_true", help="the gateway logs each request at INFO, as in production")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("bench.instructions: valgrind not found (apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="sy-callgrind-"))
    if args.process == "gateway":
        base = bench_gateway.switchyard_command()
        bench_gateway.switchyard_command = lambda: callgrind(out, base)
    else:
        spawn = bench_gateway.spawn

        def spawn_worker_under_valgrind(*argv: str, quiet: bool = False) -> subprocess.Popen[bytes]:
            is_worker = "switchyard.worker" in argv
            return spawn(*(callgrind(out, list(argv)) if is_worker else argv), quiet=quiet)

        bench_gateway.spawn = spawn_worker_under_valgrind
    body = json.dumps({"items": ITEMS}).encode()
    with bench_gateway.stack(access_log=args.access_log, timeout=300) as st:
        pid = str(st.pids[args.process])
        http = probe.HttpClient(st.url, {"Authorization": f"Bearer {st.key}", "Content-Type": "application/json"})
        for _ in range(args.warmup):
            assert http.post(f"/v1/encode/{MODEL}", body).status == 200
        _control("-z", pid)
        bad = sum(http.post(f"/v1/encode/{MODEL}", body).status != 200 for _ in range(args.requests))
        _control("-d", pid)
        http.close()
    dumps = sorted(out.glob("callgrind.out.*.*"), key=lambda f: f.stat().st_mtime)
    dump = next(d for d in reversed(dumps) if re.search(rf"\.{pid}\.\d+$", d.name))
    ir = total_instructions(dump)
    log = ", access log on" if args.access_log else ""
    print(f"{args.process}: {ir / args.requests:,.0f} instructions per request{log} "
          f"({args.requests} sequential requests, {bad} not 200; dump {dump})")


if __name__ == "__main__":
    main()
