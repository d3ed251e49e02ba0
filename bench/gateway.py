"""`make bench`: the gateway path against its floor, measured side by side in one run.

    python -m bench.gateway [--requests 2000] [--seconds 10] [--concurrency 64] [--repeat 3]

Starts a real nats-server, one gateway process (`switchyard gateway` on examples/,
as in production), an echo worker process, and the floor responder: a direct core-NATS
request-reply around the same echo handler (bench/floor.py).

- Concurrency 1: both paths with the same kind of precise client (blocking socket,
  no event loop: bench/probe.py), `--requests` sequential calls after a warm-up.
- Concurrency N: the gateway with wrk and bench/non200.lua (every answer that is not
  200 is counted; any makes the figure INVALID), the floor with a closed loop of N
  requests in flight on one NATS connection.

Each round measures both paths back to back; `--repeat` rounds give best, median and
worst. Results go to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchyard.cli.dev import demo_key, examples_dir
from switchyard.messages import Result, WorkItem
from switchyard.natsserver import NatsServer, free_port, nats_server_binary

from . import probe, wrk
from .floor import SUBJECT

ROOT = Path(__file__).resolve().parents[1]
MODEL = "switchyard/echo"
ITEMS = [{"text": "The quick brown fox jumps over the lazy dog."}]
TARGETS = {"p50_delta_ms": 0.5, "p99_delta_ms": 1.0, "rps": 5000.0}


def spawn(*args: str, quiet: bool = False) -> subprocess.Popen[bytes]:
    """A process of the bench; `quiet` also drops its stderr (the access log goes there)."""
    return subprocess.Popen(list(args), cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True,
                            stderr=subprocess.DEVNULL if quiet else None)


def switchyard_command() -> list[str]:
    """The `switchyard` console script next to this interpreter, as production runs it."""
    script = Path(sys.executable).parent / "switchyard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "switchyard.cli.main"]


def _get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": f"{platform.python_implementation()} {platform.python_version()}",
                            "kernel": platform.platform(), "cores": os.cpu_count()}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        info["ram_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["nats_server"] = subprocess.run([nats_server_binary(), "--version"], capture_output=True,
                                         text=True).stdout.strip()
    info["load_before"] = os.getloadavg()[0]
    return info


# -- one round -----------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, nats_url: str, gateway_url: str, key: str,
                 pids: dict[str, int]) -> None:
        self.args = args
        self.nats_url = nats_url
        self.url = gateway_url
        self.key = key
        self.pids = pids
        self.body = json.dumps({"items": ITEMS}).encode()
        self.path = f"/v1/encode/{MODEL}"
        self.floor_payload = WorkItem(id="floor", op="encode", model=MODEL, bundle="default",
                                      machine_profile="cpu", pool="default", items=ITEMS).encode()
        self.wrk_cmd = wrk.command(wrk.ensure_wrk(), self.url + self.path, connections=args.concurrency,
                                   threads=args.wrk_threads, seconds=args.seconds,
                                   headers={"Authorization": f"Bearer {key}"})

    def floor_c1(self) -> probe.Latency:
        nc = probe.NatsClient(self.nats_url)
        try:
            return probe.sequential(lambda: Result.decode(nc.request(SUBJECT, self.floor_payload)).ok,
                                    self.args.requests)
        finally:
            nc.close()

    def gateway_c1(self) -> probe.Latency:
        http = probe.HttpClient(self.url, {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        try:
            return probe.sequential(lambda: http.post(self.path, self.body).status == 200, self.args.requests)
        finally:
            http.close()

    def floor_cn(self) -> dict[str, Any]:
        return self.cpu(lambda: probe.nats_closed_loop(self.nats_url, SUBJECT, self.floor_payload,
                                                       self.args.concurrency, self.args.seconds))

    def gateway_cn(self) -> dict[str, Any]:
        return self.cpu(lambda: wrk.run(self.wrk_cmd, self.body))

    def cpu(self, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run `fn` and add the cores each process used meanwhile."""
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        t0, c0 = time.monotonic(), time.process_time()
        out = fn()
        wall = time.monotonic() - t0
        used = {name: (cpu_seconds(pid) - before[name]) / wall for name, pid in self.pids.items()}
        used["load generator"] = (out.pop("client_cpu_s", None) or (time.process_time() - c0)) / wall
        out["cores"] = {k: round(v, 2) for k, v in used.items()}
        return out

    def round(self) -> dict[str, Any]:
        return {"floor_c1": self.floor_c1().summary(), "gateway_c1": self.gateway_c1().summary(),
                "floor_cN": self.floor_cn(), "gateway_cN": self.gateway_cn()}


@dataclass
class Stack:
    nats_url: str
    url: str
    key: str
    pids: dict[str, int]


@contextmanager
def stack(workers: int = 1, worker_concurrency: int = 64, access_log: bool = False,
          timeout: float = 30, config_dir: Path | None = None, worker_args: Sequence[str] = ()) -> Iterator[Stack]:
    """nats-server, the floor responder, echo worker(s) and one gateway process, all ready.

    config_dir: the gateway's manifests (default examples/); worker_args: more worker flags.
    """
    config_dir = config_dir or examples_dir()
    key = demo_key(config_dir)
    assert key, "examples/ has no unrestricted API key"
    port, mport = free_port(), free_port()
    with NatsServer() as server:
        py = sys.executable
        floor = spawn(py, "-m", "bench.floor", "--nats", server.url)
        echo = [spawn(py, "-m", "switchyard.worker", "--nats", server.url, "--model", MODEL,
                      "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
                      "--concurrency", str(worker_concurrency), "--log-level", "WARNING", *worker_args)
                for _ in range(workers)]
        # The access log as in production: one JSON line per request at INFO, written (to /dev/null here).
        logging = ["--log-level", "INFO"] if access_log else ["--log-level", "WARNING", "--no-access-log"]
        gateway = spawn(*switchyard_command(), "gateway", "--config-dir", str(config_dir), "--nats", server.url,
                        "--port", str(port), "--metrics-port", str(mport), *logging, quiet=access_log)
        procs = [floor, *echo, gateway]
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        try:
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, "gateway ready", timeout)
            wait_until(lambda: json.loads(_get(f"{url}/v1/configs/resolve", json.dumps({"model": MODEL}).encode(),
                                               auth)[1]).get("live_workers", 0) > 0, "echo worker registered", timeout)
            assert server.proc is not None
            yield Stack(server.url, url, key, {"gateway": gateway.pid, "worker": echo[0].pid,
                                               "nats-server": server.proc.pid, "floor responder": floor.pid})
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk.ensure_wrk()  # before starting anything: fail fast with the install hint
    info = machine()
    with stack(args.workers, args.worker_concurrency, args.access_log) as st:
        bench = Bench(args, st.nats_url, st.url, st.key, st.pids)
        rounds = []
        for i in range(args.repeat):
            print(f"round {i + 1}/{args.repeat} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
            rounds.append(bench.round())
    info["load_after"] = os.getloadavg()[0]
    return {"machine": info, "rounds": rounds, "wrk": " ".join(bench.wrk_cmd[1:])}


# -- report --------------------------------------------------------------------------

def spread(values: list[float], best: Callable[[list[float]], float], fmt: str) -> str:
    """best (median, worst) over the rounds."""
    worst = max if best is min else min
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(best(values), fmt)} ({format(statistics.median(values), fmt)}, {format(worst(values), fmt)})"


def summarize(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rounds = r["rounds"]
    valid = [x for x in rounds if x["gateway_cN"]["valid"] and x["gateway_c1"]["non200"] == 0]
    use = valid or rounds
    delta = lambda q: [x["gateway_c1"][q] - x["floor_c1"][q] for x in use]  # noqa: E731
    return {
        "valid": bool(valid),
        "invalid_rounds": len(rounds) - len(valid),
        "p50_delta_ms": min(delta("p50_ms")),
        "p99_delta_ms": min(delta("p99_ms")),
        "rps": max(x["gateway_cN"]["rps"] for x in use),
        "floor_rps": max(x["floor_cN"]["rps"] for x in use),
        "non200": sum(x["gateway_cN"]["non200"] + x["gateway_c1"]["non200"] for x in rounds),
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, rounds, s = r["machine"], r["rounds"], r["summary"]
    col = lambda k, q: [x[k][q] for x in rounds]  # noqa: E731
    d = lambda q: [x["gateway_c1"][q] - x["floor_c1"][q] for x in rounds]  # noqa: E731
    n = args.concurrency
    gw_rps = []
    for x in rounds:
        g = x["gateway_cN"]
        gw_rps.append(f"{g['rps']:.0f}" if g["valid"] else
                      f"INVALID({g['non200']} non-200 {g['non200_by_status']}, errors {g['errors']})")
    w = 30
    lines = [
        f"machine: {m.get('cpu', platform.machine())}, {m['cores']} cores, {m.get('ram_gib', '?')} GiB, "
        f"{m['kernel']}, {m['python']}, {m['nats_server']}",
        f"setup: 1 gateway process (`switchyard gateway`), {args.workers} echo worker process(es), "
        f"nats-server, floor responder and load generators on this machine; load avg {m['load_before']:.2f} "
        f"before, {m['load_after']:.2f} after",
        f"throughput: wrk {r['wrk']}",
        f"{len(rounds)} round(s): best (median, worst)",
        "",
        f"{'':{w}}{'floor (NATS req-reply)':>26}{'gateway path':>26}{'gateway - floor':>26}",
        f"{'p50 latency, c=1 (ms)':{w}}{spread(col('floor_c1', 'p50_ms'), min, '.3f'):>26}"
        f"{spread(col('gateway_c1', 'p50_ms'), min, '.3f'):>26}{spread(d('p50_ms'), min, '+.3f'):>26}",
        f"{'p99 latency, c=1 (ms)':{w}}{spread(col('floor_c1', 'p99_ms'), min, '.3f'):>26}"
        f"{spread(col('gateway_c1', 'p99_ms'), min, '.3f'):>26}{spread(d('p99_ms'), min, '+.3f'):>26}",
        f"{f'throughput, c={n} (req/s)':{w}}{spread(col('floor_cN', 'rps'), max, '.0f'):>26}"
        f"{spread([x['gateway_cN']['rps'] for x in rounds], max, '.0f'):>26}",
        f"{f'p50 / p99 at c={n} (ms)':{w}}"
        f"{min(col('floor_cN', 'p50_ms')):>17.2f} / {min(col('floor_cN', 'p99_ms')):<6.2f}"
        f"{min(col('gateway_cN', 'p50_ms')):>17.2f} / {min(col('gateway_cN', 'p99_ms')):<6.2f}",
        f"gateway throughput per round: {', '.join(gw_rps)}",
        f"non-200 answers from the gateway: {s['non200']}",
        "cores used at c=N (last round): "
        + "; ".join(f"{path}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1][f'{path}_cN']['cores'].items())
                    for path in ("floor", "gateway")),
        "",
    ]
    if not s["valid"]:
        lines.append("INVALID: every round had answers that were not 200 (or socket errors); no throughput figure")
    else:
        ok = lambda good: "met" if good else "NOT met"  # noqa: E731
        lines += [
            f"target p50 <= +{TARGETS['p50_delta_ms']} ms over the floor: best {s['p50_delta_ms']:+.3f} ms, "
            f"{ok(s['p50_delta_ms'] <= TARGETS['p50_delta_ms'])}",
            f"target p99 <= +{TARGETS['p99_delta_ms']} ms over the floor: best {s['p99_delta_ms']:+.3f} ms, "
            f"{ok(s['p99_delta_ms'] <= TARGETS['p99_delta_ms'])}",
            f"target >= {TARGETS['rps']:.0f} req/s at c={n}: best {s['rps']:.0f} req/s, "
            f"{ok(s['rps'] >= TARGETS['rps'])}",
        ]
    return "\n".join(lines)


def save(name: str, data: dict[str, Any]) -> None:
    """bench/results/<name>: a run's figures, as docs/performance.md quotes them."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(data, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per path at c=1")
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="rounds (both paths each round)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (the machine has few cores)")
    p.add_argument("--workers", type=int, default=1, help="echo worker processes")
    p.add_argument("--worker-concurrency", type=int, default=64)
    p.add_argument("--access-log", action="store_true", help="keep the gateway's per-request log line")
    args = p.parse_args()
    try:
        results = run(args)
    except wrk.WrkMissing as exc:
        sys.exit(f"bench.gateway: {exc}")
    results["summary"] = summarize(results, args)
    text = report(results, args)
    print(text)
    save("latest.json", {"args": vars(args), **results, "report": text})


if __name__ == "__main__":
    main()
