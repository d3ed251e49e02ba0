"""`make bench` part two: the control plane against a real kube-apiserver + etcd.

    python -m bench.operator [--upstreams 100]

1. Burst: apply N Upstreams (plus the examples) in one `kubectl apply`, then time,
   per Upstream, until its ScaledObject exists and the routing ConfigMap carries its
   model. Reports p50/p99 over the N objects, and the time until all are done.
2. Propagation: change one Upstream, time until a gateway in cluster mode (reading
   the ConfigMap through its own watch) serves the change; repeated, p50/max.
Floor: the time the API server takes to store the burst itself (kubectl apply).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.controlplane import ControlPlane

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


def watch_burst(cp: ControlPlane, n: int, started: float, timeout: float = 300) -> dict[str, float]:
    """Poll (every 50 ms) until each Upstream has its ScaledObject and its model in the table."""
    so_at: dict[str, float] = {}
    cfg_at: dict[str, float] = {}
    deadline = started + timeout
    while (len(so_at) < n or len(cfg_at) < n) and time.monotonic() < deadline:
        now = time.monotonic()
        sos = json.loads(cp.kubectl("get", "scaledobjects", "-n", NS, "-o", "json", check=True).stdout)["items"]
        for so in sos:
            so_at.setdefault(so["metadata"]["name"], now)
        cm = cp.kubectl("get", "configmap", "main-routing", "-n", NS, "-o", "json")
        if cm.returncode == 0:
            models = json.loads(json.loads(cm.stdout)["data"]["routing.json"])["models"]
            for m in models:
                if m.startswith("bench/model-"):
                    cfg_at.setdefault("bench-" + m.rsplit("-", 1)[1], now)
        time.sleep(0.05)
    names = [f"bench-{i}" for i in range(n)]
    done = [max(so_at.get(k, float("inf")), cfg_at.get(k, float("inf"))) - started for k in names]
    return {"p50_s": percentile(done, 0.5), "p99_s": percentile(done, 0.99), "all_s": max(done),
            "objects": n}


def serves(url: str, op: str) -> bool:
    req = urllib.request.Request(f"{url}/v1/{op}/bench/model-0", data=b'{"items": [1]}', method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status in (200, 202)
    except urllib.error.HTTPError as e:
        return e.code in (200, 202)


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
        log = open(work / "operator.log", "ab")
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
            started = time.monotonic()
            cp.kubectl("apply", "-f", "-", input=upstreams(args.upstreams), check=True)
            stored = time.monotonic() - started
            burst = watch_burst(cp, args.upstreams, started)

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
    result = {"burst": burst, "apply_floor_s": stored,
              "propagation": {"p50_s": statistics.median(props), "max_s": max(props), "changes": len(props)}}
    print(f"burst of {args.upstreams} Upstreams: kubectl apply stored them in {stored:.2f} s (floor)")
    print(f"  per object until ScaledObject + routing table: p50 {burst['p50_s']:.2f} s, "
          f"p99 {burst['p99_s']:.2f} s, all {burst['all_s']:.2f} s")
    print(f"propagation (Upstream change -> gateway serving it): p50 {result['propagation']['p50_s']:.2f} s, "
          f"max {result['propagation']['max_s']:.2f} s over {len(props)} changes")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "operator.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
