"""`make bench`: scale from zero, step by step, on the stack of tests/k8s/test_scale_from_zero.py.

    python -m bench.coldstart [--rounds 8] [--cooldown 2] [--worker echo|minilm]

Real kube-apiserver + etcd, KEDA, kube-controller-manager, nats-server, the operator, a
cluster-mode gateway and worker processes; the test node (switchyard/testing/node.py) plays
the kubelet. Each round starts at zero and sends one request through the SDK
(`wait_for_capacity=True`), then times from that request:

1. KEDA told active: the gateway's `StreamIsActive` push of true (its metrics, polled every 10 ms);
2. replicas = 1: KEDA's write to the fleet Deployment (seen by a watch);
3. pod running: the ReplicaSet's pod bound and its worker process started by the test node;
4. worker live: the worker's own "worker started" log line (connected to NATS, pulling);
5. pod Ready: the readinessProbe (/readyz, every second) answered, as the EndpointSlice shows;
6. first result: the SDK call returns;
7. back to zero: replicas = 0 after the cooldown, timed from the result.

p50 and p95 over the rounds; results in bench/results/coldstart.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from switchyard.client import Client
from switchyard.natsserver import NatsServer
from switchyard.testing import keda as keda_testing
from switchyard.testing.coldstart import FLEET, KEY, MODEL, ColdStartStack, install, wait
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator

ROOT = Path(__file__).resolve().parents[1]
NS = "coldstart"
PUSHED = 'switchyard_gateway_scaler_pushes_total{active="true"}'
STEPS = ("KEDA told active", "replicas = 1", "pod running (process started)", "worker live (on NATS)",
         "pod Ready (probe every 1 s)", "first result", "back to zero (after the result)")


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Recorder:
    """Background threads writing down (wall time, value) whenever a value changes."""

    def __init__(self, cp: ControlPlane, stack: ColdStartStack) -> None:
        self.cp, self.stack = cp, stack
        self.replicas: list[tuple[float, int]] = []
        self.pushes: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._watch, self._poll)]

    def __enter__(self) -> Recorder:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _watch(self) -> None:
        pki = self.cp.workdir / "pki"  # type: ignore[operator]
        ctx = ssl.create_default_context(cafile=pki / "ca.crt")
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        rv = ""  # resumed from the last event, so a reconnect never reports a change late
        while not self._stop.is_set():
            url = (f"{self.cp.server}/apis/apps/v1/namespaces/{NS}/deployments?watch=1&allowWatchBookmarks=1"
                   f"&fieldSelector=metadata.name={FLEET}&timeoutSeconds=600&resourceVersion={rv}")
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=660) as stream:
                    for line in stream:
                        ev = json.loads(line)
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] == "BOOKMARK":
                            continue
                        n = ev["object"]["spec"].get("replicas", 0)
                        if not self.replicas or self.replicas[-1][1] != n:
                            self.replicas.append((time.time(), n))
                        if self._stop.is_set():
                            return
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.stack.metric(PUSHED)
                if not self.pushes or self.pushes[-1][1] != n:
                    self.pushes.append((time.time(), n))
            except OSError:
                pass
            time.sleep(0.01)

    def first(self, series: list[tuple[float, float]], after: float, want: Any = None) -> float:
        """When the series first took a new value (or `want`) after `after`."""
        def found() -> float | None:
            return next((t for t, v in series if t >= after and (want is None or v == want)), None)
        return wait(found, 120, f"a change after {after}")


WORKERS = {  # --worker: (model, handler); minilm loads its model on the first item
    "echo": (MODEL, "switchyard.worker.handlers:echo"),
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2", "switchyard.worker.examples.minilm:encode"),
}


def one_round(stack: ColdStartStack, rec: Recorder, client: Client) -> dict[str, float]:
    node = stack.node
    assert node is not None
    wait(lambda: stack.replicas() == 0 and not stack.pods(), 120, "the fleet at zero")
    t0 = time.time()
    result = client.encode(stack.model, ["cold"], wait_for_capacity=True, capacity_timeout=120, poll_interval=0.05)
    t_result = time.time()
    assert len(result.items) == 1, result
    t_zero = rec.first(rec.replicas, t_result, 0)
    started, pod = wait(lambda: [(t, p) for t, p, w in node.events if w == "started" and t >= t0], 30,
                        "worker started")[0]
    ready = wait(lambda: [t for t in node.event_times("ready") if t >= t0], 30, "pod ready")[0]
    return {STEPS[0]: rec.first(rec.pushes, t0) - t0, STEPS[1]: rec.first(rec.replicas, t0, 1) - t0,
            STEPS[2]: started - t0, STEPS[3]: _logged(node.log_tail(pod, 200), "worker started") - t0,
            STEPS[4]: ready - t0, STEPS[5]: t_result - t0, STEPS[6]: t_zero - t_result}


def _logged(log: str, msg: str) -> float:
    """The `ts` of the worker's JSON log line with this message."""
    for line in log.splitlines():
        if line.startswith("{") and json.loads(line).get("msg") == msg:
            return float(json.loads(line)["ts"])
    raise AssertionError(f"no {msg!r} in the worker's log:\n{log}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--cooldown", type=int, default=2, help="the Upstream's cooldownSeconds (polling is 1 s)")
    ap.add_argument("--worker", choices=sorted(WORKERS), default="echo")
    args = ap.parse_args()
    model, handler = WORKERS[args.worker]
    bin_dir = keda_testing.ensure_built()
    rounds: list[dict[str, float]] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="sy-coldstart-") as tmp, ControlPlane() as cp, NatsServer() as nats:
        cp.apply_keda_crds()  # before KEDA starts
        stack_keda = KedaOperator(cp, bin_dir).start()
        install(cp)
        cp.kubectl("create", "namespace", NS, check=True)
        with ColdStartStack(cp, bin_dir, NS, nats.url, Path(tmp), cooldown=args.cooldown, polling=1,
                            handler=handler, model=model) as stack, \
                Recorder(cp, stack) as rec, Client(stack.url, KEY, timeout=30) as client:
            for i in range(args.rounds):
                loads.append(os.getloadavg()[0])
                rounds.append(one_round(stack, rec, client))
                print(f"round {i + 1}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in rounds[-1].items()),
                      file=sys.stderr)
        stack_keda.stop()
    summary = {k: {"p50_ms": pct([r[k] for r in rounds], 50) * 1000, "p95_ms": pct([r[k] for r in rounds], 95) * 1000,
                   "min_ms": min(r[k] for r in rounds) * 1000, "max_ms": max(r[k] for r in rounds) * 1000}
               for k in STEPS}
    print(f"\nscale from zero, {args.worker} worker, {args.rounds} rounds (cooldown {args.cooldown} s, polling 1 s), "
          f"from the first request at zero:")
    print(f"{'step':<34}{'p50':>10}{'p95':>10}{'min':>10}{'max':>10}")
    for k, v in summary.items():
        print(f"{k:<34}" + "".join(f"{v[c]:>8.0f}ms" for c in ("p50_ms", "p95_ms", "min_ms", "max_ms")))
    target = summary[STEPS[1]]["p95_ms"]
    print(f"target: replicas = 1 within 1 s at p95: {target:.0f} ms {'✔' if target <= 1000 else '✘'}")
    out = {"worker": args.worker, "rounds": rounds, "summary": summary, "cooldown_s": args.cooldown, "polling_s": 1,
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cpus": os.cpu_count(), "loadavg_1m": [round(x, 2) for x in loads]},
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    name = "coldstart.json" if args.worker == "echo" else f"coldstart-{args.worker}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
