"""`make bench` part two: the control plane against a real kube-apiserver + etcd.

    python -m bench.operator [--upstreams 100]

1. Burst: apply N Upstreams in one `kubectl apply` (after the examples); per Upstream,
   time from when a watch sees it stored until a watch sees its ScaledObject and the
   routing ConfigMap carrying its model. p50/p99 over the N objects.
2. Propagation: change one Upstream, time until a gateway in cluster mode (reading
   the ConfigMap through its own watch) serves the change; repeated, p50/max.
Floor: how long the API server takes to store the burst itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from switchyard.informer import Informer, Obj
from switchyard.kubeclient import api_client
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.controlplane import ControlPlane

from .gateway import save

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
KEY = "sy-demo-key-0123456789abcdef"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def upstreams(n: int) -> str:
    return "\n---\n".join(
        f"apiVersion: switchyard.dev/v1alpha1\nkind: Upstream\nmetadata: {{name: bench-{i}, namespace: {NS}}}\n"
        f"spec: {{model: bench/model-{i}, operations: [encode], machineProfiles: [l4], workers: {{service: w{i}}},"
        f" scaling: {{minReplicas: 0, maxReplicas: 4}}}}" for i in range(n))


async def watch_burst(cp: ControlPlane, n: int, timeout: float = 300) -> dict[str, float]:
    """Apply the burst; per Upstream, time from when the API server had it (as seen by a
    watch) until its ScaledObject exists and the routing ConfigMap carries its model."""
    api = await api_client(str(cp.kubeconfig))
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    stored: dict[str, float] = {}
    scaled: dict[str, float] = {}
    compiled: dict[str, float] = {}

    def lister(group: str, version: str, plural: str) -> Callable[..., Awaitable[Any]]:
        async def list_fn(namespace: str, **kw: Any) -> Any:
            return await custom.list_namespaced_custom_object(group, version, namespace, plural, **kw)
        list_fn.__doc__ = custom.list_namespaced_custom_object.__doc__
        return list_fn

    def record(into: dict[str, float]) -> Callable[[str, Obj], None]:
        def on(kind: str, obj: Obj) -> None:
            name = obj["metadata"]["name"]
            if name.startswith("bench-"):
                into.setdefault(name, time.monotonic())
        return on

    def on_configmap(kind: str, obj: Obj) -> None:
        if obj["metadata"]["name"] != "main-routing":
            return
        now = time.monotonic()
        for model in json.loads(obj["data"]["routing.json"])["models"]:
            if model.startswith("bench/model-"):
                compiled.setdefault("bench-" + model.rsplit("-", 1)[1], now)

    def synced(on: Callable[[str, Obj], None]) -> Callable[[list[Obj]], None]:
        def sync(items: list[Obj]) -> None:
            for o in items:
                on("ADDED", o)
        return sync

    informers = [
        Informer("upstreams", lister("switchyard.dev", "v1alpha1", "upstreams"), namespace=NS,
                 on_sync=synced(record(stored)), on_event=record(stored)),
        Informer("scaledobjects", lister("keda.sh", "v1alpha1", "scaledobjects"), namespace=NS,
                 on_sync=synced(record(scaled)), on_event=record(scaled)),
        Informer("configmaps", core.list_namespaced_config_map, namespace=NS,
                 on_sync=synced(on_configmap), on_event=on_configmap),
    ]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    try:
        for i in informers:
            await i.synced.wait()
        proc = await asyncio.create_subprocess_exec(
            cp.kubectl_path, f"--kubeconfig={cp.kubeconfig}", "apply", "-f", "-", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL)
        await proc.communicate(upstreams(n).encode())
        deadline = time.monotonic() + timeout
        while (len(scaled) < n or len(compiled) < n) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await api.close()
    names = [f"bench-{i}" for i in range(n)]
    per = [max(scaled[k], compiled[k]) - stored[k] for k in names]
    return {"p50_s": percentile(per, 0.5), "p99_s": percentile(per, 0.99),
            "all_s": max(max(scaled.values()), max(compiled.values())) - min(stored.values()),
            "apply_s": max(stored.values()) - min(stored.values()), "objects": n}


def serves(url: str, op: str) -> bool:
    req = urllib.request.Request(f"{url}/v1/{op}/bench/model-0", data=b'{"items": [1]}', method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status in (200, 202)
    except urllib.error.HTTPError as e:
        return e.code in (200, 202)
    except OSError:  # not listening yet
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--upstreams", type=int, default=100)
    p.add_argument("--changes", type=int, default=10)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sy-bench-op-"))
    procs: list[subprocess.Popen[bytes]] = []
    with ControlPlane() as cp, NatsServer() as nats:
        cp.apply_keda_crds()
        cp.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"), check=True)
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/upstreams.switchyard.dev", check=True)
        cp.kubectl("create", "namespace", NS, check=True)
        kubeconfig = cp.service_account_kubeconfig("switchyard-system", "switchyard-operator")
        log = open(work / "operator.log", "ab")  # noqa: SIM115 - the two processes' output, open while they run
        procs.append(subprocess.Popen([sys.executable, "-m", "switchyard.cli.main", "operator", "--kubeconfig",
                                       str(kubeconfig), "--namespaces", NS, "--lease-namespace",
                                       "switchyard-system", "--log-level", "WARNING"], stdout=log, stderr=log))
        try:
            cp.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples"), check=True)
            wait_for = time.monotonic() + 60
            while cp.kubectl("get", "configmap", "main-routing", "-n", NS).returncode != 0:
                if time.monotonic() > wait_for:
                    raise SystemExit("operator did not reconcile the examples in 60 s")
                time.sleep(0.1)
            burst = asyncio.run(watch_burst(cp, args.upstreams))

            port = free_port()
            gw_kubeconfig = cp.service_account_kubeconfig(NS, "main-gateway")
            procs.append(subprocess.Popen([sys.executable, "-m", "switchyard.cli.main", "gateway", "--configmap",
                                           "main-routing", "--namespace", NS, "--kubeconfig", str(gw_kubeconfig),
                                           "--nats", nats.url, "--port", str(port), "--metrics-port",
                                           str(free_port()), "--log-level", "WARNING"], stdout=log, stderr=log))
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while not serves(url, "encode"):
                if time.monotonic() > deadline:
                    raise SystemExit("gateway never served bench/model-0")
                time.sleep(0.1)
            props = []
            ops = ["score", "rerank"]
            for i in range(args.changes):
                op = ops[i % 2]
                t = time.monotonic()
                cp.kubectl("patch", "upstream", "bench-0", "-n", NS, "--type=merge", "-p",
                           json.dumps({"spec": {"operations": ["encode", op]}}), check=True)
                while not serves(url, op):
                    if time.monotonic() - t > 30:
                        raise SystemExit("change never reached the gateway")
                    time.sleep(0.01)
                props.append(time.monotonic() - t)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(20)
    result = {"burst": burst,
              "propagation": {"p50_s": statistics.median(props), "max_s": max(props), "changes": len(props)}}
    print(f"burst of {args.upstreams} Upstreams: the API server took {burst['apply_s']:.2f} s to store them "
          f"all (floor: one kubectl apply)")
    print(f"  per object, stored -> ScaledObject + routing table: p50 {burst['p50_s']:.2f} s, "
          f"p99 {burst['p99_s']:.2f} s; whole burst done after {burst['all_s']:.2f} s")
    print(f"propagation (Upstream change -> gateway serving it): p50 {result['propagation']['p50_s']:.2f} s, "
          f"max {result['propagation']['max_s']:.2f} s over {len(props)} changes")
    save("operator.json", result)


if __name__ == "__main__":
    main()
