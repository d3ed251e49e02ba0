"""`make bench`: scale from zero, step by step, on the stack of tests/k8s/test_scale_from_zero.py.

    python -m bench.coldstart [--rounds 8] [--cooldown 2] [--worker echo|minilm]

Real kube-apiserver + etcd, KEDA, kube-controller-manager, nats-server, the operator, a
cluster-mode gateway and worker processes; the test node (switchyard/testing/node.py) plays
the kubelet. Each round starts at zero and sends one plain request through the SDK (its 202
carries the ETA a user sees), then at once the same through the SDK with
`wait_for_capacity=True` (held by `Prefer: wait`), and times from the first request:

1. KEDA told active: the gateway's `StreamIsActive` push of true (its metrics, polled every 10 ms);
2. replicas = 1: KEDA's write to the fleet Deployment (seen by a watch);
3. pod running: the ReplicaSet's pod bound and its worker process started by the test node;
4. worker live: the worker's own "worker started" log line (connected to NATS, pulling);
5. pod Ready: the readinessProbe (/readyz, every second) answered, as the EndpointSlice shows;
6. first result: the SDK call returns;
7. back to zero: replicas = 0 after the cooldown, timed from the result.

The ETA: the first request's 202 carries `estimated_wait_s`, the gateway's estimate of the
time to a live worker (gateway/eta.py). In cluster mode a worker is live to the gateway once
it heartbeats *and* its pod is a ready endpoint of the worker Service, so the ETA is compared
with that time: the later of step 4 and the EndpointSlice listing the pod ready (a watch).
Each round after the first (the warm-up, which has no history and gets the Upstream's
`coldStartSeconds`) prints the error ratio (ETA - live) / live; p50 and p95 of |error| follow
the steps. The sample the gateway itself recorded for the round (the `sy_coldstart` bucket)
is printed beside it.

p50 and p95 over the rounds; results in bench/results/coldstart.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson

from switchyard.client import Accepted, Client, InferenceResult
from switchyard.gateway.eta import lane_key
from switchyard.natsserver import NatsServer
from switchyard.subjects import COLDSTART_BUCKET, Lane
from switchyard.testing import keda as keda_testing
from switchyard.testing.coldstart import FLEET, KEY, MODEL, SERVICE, ColdStartStack, install, wait
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator

ROOT = Path(__file__).resolve().parents[1]
NS = "coldstart"
PUSHED = 'switchyard_gateway_scaler_pushes_total{active="true"}'
STEPS = ("KEDA told active", "replicas = 1", "pod running (process started)", "worker live (on NATS)",
         "pod Ready (probe every 1 s)", "first result", "back to zero (after the result)")
LIVE = "live to the gateway (ready endpoint)"  # what the ETA estimates
ETA = "ETA in the 202"
GATEWAY_SAMPLE = "the gateway's recorded sample"
ERROR = "ETA error"
# What-if, not what the gateway answers: the same history's median at 0.1 s instead of whole seconds.
ETA_TENTHS = "ETA at 0.1 s (what-if)"
ERROR_TENTHS = "ETA error at 0.1 s (what-if)"


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Recorder:
    """Background threads writing down (wall time, value) whenever a value changes."""

    def __init__(self, cp: ControlPlane, stack: ColdStartStack) -> None:
        self.cp, self.stack = cp, stack
        self.replicas: list[tuple[float, int]] = []
        self.pushes: list[tuple[float, float]] = []
        self.ready_endpoints: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._deployments, self._endpoints, self._poll)]

    def __enter__(self) -> Recorder:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _deployments(self) -> None:
        def on(obj: dict[str, Any]) -> None:
            n = obj["spec"].get("replicas", 0)
            if not self.replicas or self.replicas[-1][1] != n:
                self.replicas.append((time.time(), n))
        self._watch(f"/apis/apps/v1/namespaces/{NS}/deployments?fieldSelector=metadata.name={FLEET}", on)

    def _endpoints(self) -> None:
        per_slice: dict[str, int] = {}

        def on(obj: dict[str, Any]) -> None:
            per_slice[obj["metadata"]["name"]] = sum(
                1 for ep in obj.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready"))
            n = sum(per_slice.values())
            if not self.ready_endpoints or self.ready_endpoints[-1][1] != n:
                self.ready_endpoints.append((time.time(), n))
        self._watch(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
                    f"?labelSelector=kubernetes.io/service-name={SERVICE}", on)

    def _watch(self, path: str, on: Any) -> None:
        pki = self.cp.workdir / "pki"  # type: ignore[operator]
        ctx = ssl.create_default_context(cafile=pki / "ca.crt")
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        rv = ""  # resumed from the last event, so a reconnect never reports a change late
        while not self._stop.is_set():
            url = f"{self.cp.server}{path}&watch=1&allowWatchBookmarks=1&timeoutSeconds=600&resourceVersion={rv}"
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=660) as stream:
                    for line in stream:
                        ev = json.loads(line)
                        rv = ev["object"]["metadata"]["resourceVersion"]
                        if ev["type"] not in ("BOOKMARK", "DELETED"):
                            on(ev["object"])
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

    def first(self, series: Sequence[tuple[float, float]], after: float, want: Any = None,
              at_least: float | None = None) -> float:
        """When the series first took a new value (or `want`, or a value >= `at_least`) after `after`."""
        def ok(v: float) -> bool:
            return (want is None or v == want) and (at_least is None or v >= at_least)

        def found() -> float | None:
            return next((t for t, v in series if t >= after and ok(v)), None)
        return wait(found, 120, f"a change after {after}")


WORKERS = {  # --worker: (model, handler); minilm loads its model on the first item
    "echo": (MODEL, "switchyard.worker.handlers:echo"),
    "minilm": ("sentence-transformers/all-MiniLM-L6-v2", "switchyard.worker.examples.minilm:encode"),
}


def one_round(stack: ColdStartStack, rec: Recorder, client: Client, lane: Lane) -> dict[str, float]:
    node = stack.node
    assert node is not None
    wait(lambda: stack.replicas() == 0 and not stack.pods() and _ep_count(rec) == 0, 120, "the fleet at zero")
    history = _samples(stack.nats_url, lane)
    t0 = time.time()
    accepted = client.encode(stack.model, ["cold-202"])  # no hold: the 202 and its ETA, as a user sees them
    assert isinstance(accepted, Accepted) and accepted.estimated_wait_s is not None, accepted
    result = client.encode(stack.model, ["cold"], wait_for_capacity=True, capacity_timeout=120, poll_interval=0.05)
    t_result = time.time()
    assert isinstance(result, InferenceResult) and len(result.items) == 1, result
    assert len(client.wait_for_job(accepted, 60, poll_interval=0.05).items) == 1  # never lost
    t_zero = rec.first(rec.replicas, t_result, 0)
    started, pod = wait(lambda: [(t, p) for t, p, w in node.events if w == "started" and t >= t0], 30,
                        "worker started")[0]
    ready = wait(lambda: [t for t in node.event_times("ready") if t >= t0], 30, "pod ready")[0]
    on_nats = _logged(node.log_tail(pod, 200), "worker started")
    live = max(on_nats, rec.first(rec.ready_endpoints, t0, at_least=1))
    # This round's sample has been appended (the list is capped at eta.HISTORY, so compare, not count).
    samples = wait(lambda: (s := _samples(stack.nats_url, lane)) != history and s, 30, "the gateway's sample")
    eta = accepted.estimated_wait_s
    # eta.py's median of the same history, at 0.1 s instead of rounded up to whole seconds.
    tenths = round(statistics.median(history), 1) if history else eta
    return {STEPS[0]: rec.first(rec.pushes, t0) - t0, STEPS[1]: rec.first(rec.replicas, t0, 1) - t0,
            STEPS[2]: started - t0, STEPS[3]: on_nats - t0,
            STEPS[4]: ready - t0, STEPS[5]: t_result - t0, STEPS[6]: t_zero - t_result,
            LIVE: live - t0, ETA: eta, GATEWAY_SAMPLE: samples[-1], ERROR: (eta - (live - t0)) / (live - t0),
            ETA_TENTHS: tenths, ERROR_TENTHS: (tenths - (live - t0)) / (live - t0)}


def _ep_count(rec: Recorder) -> int:
    return rec.ready_endpoints[-1][1] if rec.ready_endpoints else 0


def _samples(nats_url: str, lane: Lane) -> list[float]:
    """The lane's cold-start history as the gateways keep it (eta.py), oldest first."""
    async def read() -> list[float]:
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().key_value(COLDSTART_BUCKET)
            try:
                entry = await kv.get(f"h.{lane_key(lane)}")
            except nats.js.errors.NotFoundError:
                return []
            return [float(x) for x in orjson.loads(entry.value)] if entry.value else []
        finally:
            await nc.close()
    return asyncio.run(read())


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
            lane = Lane(model=model, bundle="default", machine_profile="cpu", pool="default")
            for i in range(args.rounds):
                loads.append(os.getloadavg()[0])
                r = one_round(stack, rec, client, lane)
                rounds.append(r)
                print(f"round {i + 1}: " + ", ".join(f"{k} {r[k] * 1000:.0f} ms" for k in (*STEPS, LIVE))
                      + f"; {ETA} {r[ETA]:g} s, {GATEWAY_SAMPLE} {r[GATEWAY_SAMPLE]:.3f} s, "
                      + f"{ERROR} {r[ERROR] * 100:+.0f} % (at 0.1 s: {r[ETA_TENTHS]:g} s, "
                      + f"{r[ERROR_TENTHS] * 100:+.0f} %)" + (" (warm-up)" if i == 0 else ""), file=sys.stderr)
        stack_keda.stop()
    warm = rounds[1:]  # the ETA after one warm-up
    summary: dict[str, dict[str, float]] = {
        k: {"p50_ms": pct([r[k] for r in rs], 50) * 1000, "p95_ms": pct([r[k] for r in rs], 95) * 1000,
            "min_ms": min(r[k] for r in rs) * 1000, "max_ms": max(r[k] for r in rs) * 1000}
        for k, rs in [*((k, rounds) for k in (*STEPS, LIVE)),
                      *((k, warm) for k in (ETA, GATEWAY_SAMPLE, ETA_TENTHS))]}
    eta_error: dict[str, dict[str, Any]] = {}
    for k in (ERROR, ERROR_TENTHS):
        errors = [abs(r[k]) * 100 for r in warm]
        eta_error[k] = {"p50_pct": pct(errors, 50), "p95_pct": pct(errors, 95), "min_pct": min(errors),
                        "max_pct": max(errors), "signed_pct": [round(r[k] * 100, 1) for r in warm]}
    print(f"\nscale from zero, {args.worker} worker, {args.rounds} rounds (cooldown {args.cooldown} s, polling 1 s), "
          f"from the first request at zero:")
    print(f"{'step':<38}{'p50':>10}{'p95':>10}{'min':>10}{'max':>10}")
    for k, v in summary.items():
        print(f"{k:<38}" + "".join(f"{v[c]:>8.0f}ms" for c in ("p50_ms", "p95_ms", "min_ms", "max_ms")))
    for k, e in eta_error.items():
        print(f"{'|' + k + '|':<38}" + "".join(f"{e[c]:>9.0f}%" for c in ("p50_pct", "p95_pct", "min_pct", "max_pct")))
    target = summary[STEPS[1]]["p95_ms"]
    print(f"target: replicas = 1 within 1 s at p95: {target:.0f} ms {'✔' if target <= 1000 else '✘'}")
    print(f"target: after one warm-up, the ETA within ±20 % of the time to a live worker: p95 |error| "
          f"{eta_error[ERROR]['p95_pct']:.0f} % {'✔' if eta_error[ERROR]['p95_pct'] <= 20 else '✘'} "
          f"(what-if at 0.1 s: {eta_error[ERROR_TENTHS]['p95_pct']:.0f} %)")
    out = {"worker": args.worker, "rounds": rounds, "summary": summary, "eta_error": eta_error,
           "cooldown_s": args.cooldown, "polling_s": 1,
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "cpus": os.cpu_count(), "loadavg_1m": [round(x, 2) for x in loads]},
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    name = "coldstart.json" if args.worker == "echo" else f"coldstart-{args.worker}.json"
    (ROOT / "bench" / "results" / name).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
