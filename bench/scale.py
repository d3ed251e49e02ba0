"""`make bench` part: the catalog at 10, 1,000 and 10,000 models, side by side.

    python -m bench.scale [--models 10,1000,10000] [--seconds 5] [--no-operator]

Per catalog size, with a generated catalog (switchyard/testing/catalog.py: two machine
profiles per model):

- Data path: `switchyard gateway --catalog-dir` on the compiled catalog (the operator's
  storage format, as files), real nats-server, one echo worker for the *last* model.
  Readiness (spawn -> /readyz 200), RSS, idle CPU over --idle seconds, the worker's
  start (spawn -> live in the gateway), then wrk at c=64 on that one live model
  (p50/p99, req/s; any non-200 makes it INVALID). Floor, same run: a direct core-NATS
  request-reply closed loop at the same concurrency (bench/floor.py).
- Storage: the table's JSON size, what the catalog stores (compressed) and in how
  many ConfigMaps.
- Demand: one queued item in each of the catalog's lanes (models x profiles) and a
  durable consumer per lane; the gateway's pending-demand computation (Demand.poll:
  one stream-info request with per-subject counts, whatever the number of lanes) and
  nats-server's RSS.
- Operator (one real kube-apiserver + etcd for all sizes): the Reconciler in this
  process reading from the operator's watch cache (operator/cache.py), counting its
  API-server requests (LISTs, the cache's included; GETs; writes): the first pass, the
  pass after it (which reads back the first one's status writes), a pass with nothing
  changed, a pass after one Upstream changed (patched through another client, so the
  change reaches the pass through the cache's watch), and how long a gateway in cluster
  mode takes to serve that change, split into patch -> catalog written -> served.

Results go to bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats

from switchyard.api import catalog, compile_table
from switchyard.api.loader import parse_objects
from switchyard.api.table import RoutingTable
from switchyard.gateway.demand import Demand
from switchyard.gateway.metrics import Metrics
from switchyard.jetstream import ensure_work_stream, lane_consumer_config
from switchyard.messages import WorkItem
from switchyard.natsserver import NatsServer, free_port
from switchyard.subjects import WORK_STREAM, Lane
from switchyard.testing import catalog as gen

from . import probe, wrk
from .floor import SUBJECT
from .gateway import _get, cpu_seconds, machine, save, spawn, switchyard_command, wait_until

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"items": [{"text": "The quick brown fox jumps over the lazy dog."}]}).encode()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(procs: list[Any]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:  # a graceful drain that did not finish: not what is measured here
            p.kill()
            p.wait()


def table_of(n: int) -> RoutingTable:
    rs, issues = parse_objects([gen.gateway(), *gen.upstreams(n)])
    assert not issues, issues[:3]
    return compile_table(rs, gateway=gen.GATEWAY).raise_for_issues()


# -- data path, storage, demand --------------------------------------------------------------

def data_path(n: int, args: argparse.Namespace) -> dict[str, Any]:
    table = table_of(n)
    stored = catalog.split(table)
    out: dict[str, Any] = {"models": n, "table_json_bytes": len(table.to_json()),
                           "stored_bytes": stored.stored_bytes, "configmaps": 1 + len(stored.shards)}
    work = Path(tempfile.mkdtemp(prefix="sy-bench-scale-"))
    catalog.write_dir(stored, work)
    last = gen.model_name(n - 1)
    with NatsServer() as server:
        assert server.proc is not None
        port = free_port()
        t0 = time.monotonic()
        gateway = spawn(*switchyard_command(), "gateway", "--catalog-dir", str(work), "--nats", server.url,
                        "--port", str(port), "--metrics-port", str(free_port()), "--log-level", "WARNING",
                        "--no-access-log")
        floor = spawn(sys.executable, "-m", "bench.floor", "--nats", server.url)
        procs = [gateway, floor]
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _get(f"{url}/readyz")[0] == 200, "gateway ready", 120)
            out["readiness_s"] = time.monotonic() - t0
            time.sleep(1.0)  # settle: start-up work (streams, buckets) done
            c0, w0 = cpu_seconds(gateway.pid), time.monotonic()
            time.sleep(args.idle)
            out["idle_cpu_pct"] = 100 * (cpu_seconds(gateway.pid) - c0) / (time.monotonic() - w0)
            t1 = time.monotonic()
            worker = spawn(sys.executable, "-m", "switchyard.worker", "--nats", server.url, "--model", last,
                           "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
                           "--concurrency", "64", "--log-level", "WARNING")
            procs.append(worker)
            wait_until(lambda: _get(f"{url}/v1/encode/{last}", BODY, {"Content-Type": "application/json"})[0] == 200,
                       "worker live", 60)
            out["worker_start_s"] = time.monotonic() - t1
            cmd = wrk.command(wrk.ensure_wrk(), f"{url}/v1/encode/{last}", connections=args.concurrency,
                              threads=2, seconds=args.seconds, headers={})
            w = wrk.run(cmd, BODY)
            out.update(p50_ms=w["p50_ms"], p99_ms=w["p99_ms"], rps=w["rps"], valid=w["valid"], non200=w["non200"])
            out["rss_mb"] = rss_mb(gateway.pid)
            item = WorkItem(id="floor", op="encode", model=last, bundle="default", machine_profile="cpu",
                            pool="default", items=json.loads(BODY)["items"]).encode()
            f = probe.nats_closed_loop(server.url, SUBJECT, item, args.concurrency, args.seconds)
            out["floor_rps"] = f.get("rps", 0.0)
            out.update(asyncio.run(demand(server, table)))
        finally:
            stop(procs)
    return out


async def demand(server: NatsServer, table: RoutingTable) -> dict[str, Any]:
    """One item queued in every lane, a durable consumer per lane; then Demand.poll, timed."""
    assert server.proc is not None
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_work_stream(js)
    lanes = [Lane(model=r.model, bundle="default", machine_profile=mp, pool="scale")  # no worker takes them
             for r in table.models.values() for mp in r.machine_profiles]
    rss_before = rss_mb(server.proc.pid)
    gate = asyncio.Semaphore(64)

    async def one(lane: Lane) -> None:
        async with gate:
            await js.add_consumer(WORK_STREAM, lane_consumer_config(lane))
            await js.publish(lane.subject, b"{}", stream=WORK_STREAM)

    t = time.monotonic()
    await asyncio.gather(*(one(lane) for lane in lanes))
    setup_s = time.monotonic() - t
    d = Demand(Metrics())
    times = []
    for _ in range(5):
        t = time.perf_counter()
        await d.poll(js)
        times.append(time.perf_counter() - t)
    assert sum(d.by_lane.values()) == len(lanes), (sum(d.by_lane.values()), len(lanes))
    await nc.close()
    return {"lanes": len(lanes), "lanes_setup_s": setup_s, "demand_ms": 1000 * sorted(times)[len(times) // 2],
            "nats_rss_mb": rss_mb(server.proc.pid), "nats_rss_before_mb": rss_before}


# -- operator ---------------------------------------------------------------------------------

async def operator_at(cp: Any, n: int, have: int) -> dict[str, Any]:
    """Grow namespace `bench` to n Upstreams, then time passes and count their requests; a gateway
    in cluster mode (as its ServiceAccount) times a change from the patch until it serves it."""
    from switchyard.kubeclient import api_client
    from switchyard.operator.cache import Cache
    from switchyard.operator.kube import UPSTREAM, Kube
    from switchyard.operator.reconcile import WATCHED, Reconciler

    t = time.monotonic()
    await gen.create_all(str(cp.kubeconfig), "bench", gen.upstreams(n - have, have), concurrency=16)
    out: dict[str, Any] = {"models": n, "create_s": time.monotonic() - t}
    api = await api_client(str(cp.kubeconfig))
    kube = Kube(api)
    # The operator's watch cache, as `switchyard operator` runs it: passes read from memory.
    relists: Counter[str] = Counter()
    cache = Cache(api, WATCHED, namespaces=["bench"], on_relist=lambda kind: relists.update([kind]))
    kube.observer = cache
    t = time.monotonic()
    watching = asyncio.create_task(cache.run())
    await cache.wait_synced()
    out["cache_sync_s"] = time.monotonic() - t
    rec = Reconciler(kube, image="bench", writes_per_pass=10**9, reads=cache)  # the whole burst in one pass

    def lists() -> int:
        return sum(relists.values())

    async def timed(label: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        for attempt in range(60):  # 429 "storage is (re)initializing": a fresh API server, not what is timed
            kube.requests.clear()
            lists0, t0 = lists(), time.monotonic()
            try:
                await rec.reconcile("bench")
                break
            except ApiException as exc:
                if exc.status != 429 or attempt == 59:
                    raise
                await asyncio.sleep(1.0)
        out[f"{label}_s"] = time.monotonic() - t0
        # LISTs: the cache's (none once synced); reads: GETs the pass sent itself (API-key Secrets)
        out[f"{label}_lists"] = lists() - lists0 + kube.requests["LIST"]
        out[f"{label}_reads"] = kube.requests["GET"]
        out[f"{label}_writes"] = sum(v for k, v in kube.requests.items() if k not in ("GET", "LIST"))

    port = free_port()
    server = NatsServer().start()
    gateway = None
    try:
        await timed("first_pass")
        await timed("settle_pass")  # reads back the first pass's own writes (10,000 statuses): validates them
        await timed("steady_pass")
        gateway = spawn(*switchyard_command(), "gateway", "--configmap", "main-routing", "--namespace", "bench",
                        "--kubeconfig", str(cp.service_account_kubeconfig("bench", "main-gateway")),
                        "--nats", server.url, "--port", str(port), "--metrics-port", str(free_port()),
                        "--log-level", "WARNING", "--no-access-log")
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until, lambda: _get(f"{url}/readyz")[0] == 200, "cluster gateway ready", 120)
        i = n - 1
        old_rv = (cache.get(UPSTREAM, "bench", gen.upstream_name(i)) or {})["metadata"]["resourceVersion"]
        t = time.monotonic()
        # Patched through a client the cache does not hear from: the change reaches the pass
        # through the cache's watch, as a user's kubectl edit does.
        await Kube(api).merge_patch(UPSTREAM, "bench", gen.upstream_name(i),
                                    {"spec": {"operations": ["encode", "generate", "rerank"]}})

        while (cache.get(UPSTREAM, "bench", gen.upstream_name(i)) or {})["metadata"]["resourceVersion"] == old_rv:
            await asyncio.sleep(0.002)
        out["watch_s"] = time.monotonic() - t
        await timed("change_pass")
        out["patch_to_written_s"] = time.monotonic() - t
        while _get(f"{url}/v1/rerank/{gen.model_name(i)}", b'{"items": [1]}',
                   {"Content-Type": "application/json"})[0] != 202:
            if time.monotonic() - t > 60:
                raise TimeoutError("change never served")
            await asyncio.sleep(0.005)
        out["propagation_s"] = time.monotonic() - t
        out["gateway_side_s"] = out["propagation_s"] - out["patch_to_written_s"]
    finally:
        if gateway is not None:
            stop([gateway])
        server.stop()
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await api.close()
    out["rss_mb"] = rss_mb(os.getpid())  # this process: the Reconciler and its cache, plus the bench
    return out


def operator(sizes: list[int]) -> list[dict[str, Any]]:
    from switchyard.testing.controlplane import ControlPlane

    rows = []
    with ControlPlane() as cp:
        cp.apply_keda_crds()
        cp.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"), check=True)
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/upstreams.switchyard.dev", check=True)
        cp.kubectl("create", "namespace", "bench", check=True)
        cp.kubectl("apply", "-n", "bench", "-f", "-", input=json.dumps(gen.gateway()), check=True)
        have = 0
        for n in sorted(sizes):
            rows.append(asyncio.run(operator_at(cp, n, have)))
            have = n
            print(f"operator at {n}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


# -- report -----------------------------------------------------------------------------------

def report(rows: list[dict[str, Any]], ops: list[dict[str, Any]]) -> str:
    cols = [f"{r['models']:,} models" for r in rows]
    lines = [f"{'':34}" + "".join(f"{c:>16}" for c in cols)]

    def row(label: str, fmt: str, key: str, src: list[dict[str, Any]] = rows) -> None:
        lines.append(f"{label:34}" + "".join(f"{fmt.format(r[key]) if key in r else '-':>16}" for r in src))

    row("gateway readiness (s)", "{:.2f}", "readiness_s")
    row("gateway RSS (MB)", "{:.0f}", "rss_mb")
    row("gateway idle CPU (% of a core)", "{:.2f}", "idle_cpu_pct")
    row("worker start -> served (s)", "{:.2f}", "worker_start_s")
    row("p50 one live model, c=64 (ms)", "{:.2f}", "p50_ms")
    row("p99 one live model, c=64 (ms)", "{:.2f}", "p99_ms")
    row("throughput, c=64 (req/s)", "{:,.0f}", "rps")
    row("floor: NATS req-reply c=64 (req/s)", "{:,.0f}", "floor_rps")
    row("wrk answers not 200", "{}", "non200")
    row("table JSON (bytes)", "{:,}", "table_json_bytes")
    row("stored, compressed (bytes)", "{:,}", "stored_bytes")
    row("ConfigMap objects", "{}", "configmaps")
    row("lanes (durable consumers)", "{:,}", "lanes")
    row("nats-server RSS with them (MB)", "{:.0f}", "nats_rss_mb")
    row("demand computation (ms)", "{:.1f}", "demand_ms")
    if ops:
        by = {o["models"]: o for o in ops}
        src = [by.get(r["models"], {}) for r in rows]
        row("operator: create N Upstreams (s)", "{:.1f}", "create_s", src)
        row("operator: first pass (s)", "{:.2f}", "first_pass_s", src)
        row("operator: first pass writes", "{:,}", "first_pass_writes", src)
        row("operator: the pass after it (s)", "{:.2f}", "settle_pass_s", src)
        row("operator: steady pass (s)", "{:.2f}", "steady_pass_s", src)
        row("operator: cache sync (list all) (s)", "{:.2f}", "cache_sync_s", src)
        row("operator: steady pass LIST/GET/write", "{}", "steady_pass_rw", src)
        row("operator: pass after 1 change (s)", "{:.2f}", "change_pass_s", src)
        row("operator: per change LIST/GET/write", "{}", "change_pass_rw", src)
        row("patch -> operator's watch sees it (s)", "{:.3f}", "watch_s", src)
        row("patch -> catalog written (s)", "{:.2f}", "patch_to_written_s", src)
        row("catalog written -> gateway serves (s)", "{:.2f}", "gateway_side_s", src)
        row("operator process RSS (MB)", "{:.0f}", "rss_mb", src)
        row("change -> gateway serves it (s)", "{:.2f}", "propagation_s", src)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="10,1000,10000")
    p.add_argument("--seconds", type=float, default=5.0, help="wrk and floor duration per size")
    p.add_argument("--idle", type=float, default=10.0, help="seconds over which idle CPU is measured")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--no-operator", action="store_true", help="skip the kube-apiserver part")
    p.add_argument("--no-data-path", action="store_true", help="only the kube-apiserver part")
    args = p.parse_args()
    sizes = [int(s) for s in args.models.split(",")]
    wrk.ensure_wrk()
    info = machine()
    rows = []
    for n in [] if args.no_data_path else sizes:
        print(f"data path at {n} models (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        rows.append(data_path(n, args))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    ops = [] if args.no_operator else operator(sizes)
    for o in ops:
        for phase in ("steady_pass", "change_pass"):
            o[f"{phase}_rw"] = f"{o[f'{phase}_lists']}/{o[f'{phase}_reads']}/{o[f'{phase}_writes']}"
    print(f"machine: {info.get('cpu', '?')}, {info['cores']} cores, {info.get('ram_gib', '?')} GiB; "
          f"load before {info['load_before']:.2f}, after {os.getloadavg()[0]:.2f}")
    print(report(rows or [{"models": n} for n in sizes], ops))
    save("scale.json", {"machine": info, "data_path": rows, "operator": ops})


if __name__ == "__main__":
    main()
