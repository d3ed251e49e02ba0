"""The gateway in cluster mode: config from the operator's ConfigMap, workers gated by EndpointSlices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster import ROOT, Proc, get, operator, wait

from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import http
from switchyard.testing.controlplane import ControlPlane

KEY = "sy-demo-key-0123456789abcdef"




def endpoint_slice(ns: str, service: str, pod: str, ready: bool) -> str:
    return json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-abc12", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.7"], "conditions": {"ready": ready},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })


def test_gateway_serves_end_to_end_after_kubectl_apply(installed: ControlPlane, namespace: str, tmp_path: Path,
                                                      nats: NatsServer) -> None:
    cp, ns = installed, namespace
    op = operator(cp, tmp_path, "op-gw", ns)
    worker = gateway = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        wait(lambda: get(cp, ns, "configmap", "main-routing"), 30, "routing ConfigMap")
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        # The gateway runs as the ServiceAccount the operator made, with the Role it made.
        sa_kubeconfig = cp.service_account_kubeconfig(ns, "main-gateway")
        port, mport = free_port(), free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(sa_kubeconfig), "--nats", nats.url, "--port", str(port), "--metrics-port",
                        str(mport), "--log-level", "INFO"], tmp_path / "gateway.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 30, "gateway ready")
        # Its three watches listed once each (the ConfigMap's list is what made it ready).
        relists = f"http://127.0.0.1:{mport}/metrics"
        for informer in ("configmap", "endpointslices", "leases"):
            wait(lambda i=informer: http.metric(relists, f'switchyard_gateway_watch_relists_total{{informer="{i}"}}')
                 >= 1, 30, f"{informer} listed")
        worker = subprocess.Popen(
            [sys.executable, "-m", "switchyard.worker", "--nats", nats.url, "--model", "switchyard/echo",
             "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
             "--heartbeat-interval", "0.5"], env={**os.environ, "POD_NAME": "echo-worker-7d9f-x2"},
            start_new_session=True)
        # Heartbeating but not (yet) a ready endpoint of its Service: not live.
        status, body = http.call(f"{url}/v1/encode/switchyard/echo", KEY, {"items": [{"text": "queued"}]})
        assert status == 202, body
        cp.kubectl("apply", "-f", "-", input=endpoint_slice(ns, "echo-worker", "echo-worker-7d9f-x2", True),
                   check=True)
        status, body = wait(lambda: (r := http.call(f"{url}/v1/encode/switchyard/echo", KEY,
                                                    {"items": [{"text": "hello"}]}))[0] == 200 and r, 30,
                            "served end to end")
        assert body["items"] == [{"text": "hello"}]
        # Kubernetes takes the pod out of service: the gateway stops counting it at once.
        cp.kubectl("apply", "-f", "-", input=endpoint_slice(ns, "echo-worker", "echo-worker-7d9f-x2", False),
                   check=True)
        wait(lambda: http.call(f"{url}/v1/encode/switchyard/echo", KEY, {"items": [1]})[0] == 202, 20,
             "202 once not ready")
        # A config change reaches the running gateway without a restart.
        cp.kubectl("patch", "upstream", "bge-m3", "-n", ns, "--type=merge", "-p",
                   '{"spec": {"operations": ["encode", "score", "rerank"]}}', check=True)
        wait(lambda: http.call(f"{url}/v1/rerank/BAAI/bge-m3", KEY, {"items": [1]})[0] == 202, 30,
             "new operation served")
        # The operator's status reports the ready endpoint per machine profile.
        cp.kubectl("apply", "-f", "-", input=endpoint_slice(ns, "echo-worker", "echo-worker-7d9f-x2", True),
                   check=True)
        wait(lambda: get(cp, ns, "upstream", "echo")["status"]["liveWorkers"] == {"cpu": 1}, 30,
             "Upstream status.liveWorkers")
    finally:
        for p in (worker,):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if gateway is not None:
            gateway.kill()
        op.kill()


def test_expired_pool_lease_answers_410(installed: ControlPlane, namespace: str, tmp_path: Path,
                                        nats: NatsServer) -> None:
    cp, ns = installed, namespace
    op = operator(cp, tmp_path, "op-pool", ns)
    gateway = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        cp.kubectl("apply", "-n", ns, "-f", "-", check=True,
                   input="apiVersion: switchyard.dev/v1alpha1\nkind: Pool\nmetadata: {name: brief}\n"
                         "spec: {gpus: {l4: 1}, ttlSeconds: 3}\n")
        wait(lambda: get(cp, ns, "lease", "switchyard-pool-brief"), 30, "pool lease")
        sa_kubeconfig = cp.service_account_kubeconfig(ns, "main-gateway")
        port = free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(sa_kubeconfig), "--nats", nats.url, "--port", str(port), "--metrics-port",
                        str(free_port())], tmp_path / "gateway-pool.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 30, "gateway ready")
        first, _ = http.call(f"{url}/v1/encode/BAAI/bge-m3", KEY, {"items": [1]}, **{"X-Pool": "brief"})
        assert first == 503  # pinned pool, no worker: refused, nothing queued
        _status, body = wait(lambda: (r := http.call(f"{url}/v1/encode/BAAI/bge-m3", KEY, {"items": [1]},
                                                 **{"X-Pool": "brief"})) and r[0] == 410 and r, 30,
                             "410 after the lease lapses")
        assert body["error"]["code"] == "pool_expired" and "lease" in body["error"]["message"]
        cond = wait(lambda: [c for c in get(cp, ns, "pool", "brief")["status"]["conditions"]
                             if c["type"] == "Ready" and c["reason"] == "LeaseExpired"], 30, "LeaseExpired")
        assert cond[0]["status"] == "False"
    finally:
        if gateway is not None:
            gateway.kill()
        op.kill()
