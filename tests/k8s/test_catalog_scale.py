"""10,000 Upstreams on one Gateway against the real API server: past the 1 MiB ConfigMap wall.

The catalog is sharded (api/catalog.py); the gateway, as its own ServiceAccount, assembles
it and serves the last model; a change to one Upstream reaches it. A catalog over the
operator's configured limit leaves the Gateway Ready=False, CatalogTooLarge.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cluster import OPERATOR_NS, OPERATOR_SA, Proc, get, wait

from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import catalog as gen
from switchyard.testing import http
from switchyard.testing.controlplane import ControlPlane

N = 10_000


def run_operator(cp: ControlPlane, workdir: Path, ns: str, *extra: str) -> Proc:
    kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
    return Proc(["operator", "--kubeconfig", str(kubeconfig), "--identity", f"op-{ns}", "--namespaces", ns,
                 "--lease-namespace", OPERATOR_NS, "--lease-seconds", "4", "--resync-seconds", "30",
                 "--log-level", "INFO", *extra], workdir / "operator.log")


def post(url: str, body: dict) -> tuple[int, dict]:
    """No Authorization header: the generated Gateway is anonymous (a key it does not know is a 401)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def collection(ns: str, plural: str) -> str:
    """The path of a whole collection: one DELETE removes all of it (kubectl deletes one by one)."""
    group = "keda.sh/v1alpha1" if plural == "scaledobjects" else "switchyard.dev/v1alpha1"
    return f"/apis/{group}/namespaces/{ns}/{plural}"


def as_list(objs: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


def index(cp: ControlPlane, ns: str) -> dict:
    cm = get(cp, ns, "configmap", "main-routing")
    return json.loads(cm["data"]["catalog.json"]) if cm and "catalog.json" in cm.get("data", {}) else {}


def ready(cp: ControlPlane, ns: str, kind: str, name: str) -> dict:
    obj = get(cp, ns, kind, name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}.get("Ready") or {}


def endpoint_slice(ns: str, service: str, pod: str) -> str:
    return json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-x1", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.9"], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}],
    })


def test_ten_thousand_upstreams_reach_a_gateway(installed: ControlPlane, namespace: str, tmp_path: Path,
                                                nats: NatsServer) -> None:
    cp, ns = installed, namespace
    started = time.monotonic()
    asyncio.run(gen.create_all(str(cp.kubeconfig), ns, gen.upstreams(N)))
    applied_s = time.monotonic() - started
    op = run_operator(cp, tmp_path, ns, "--max-writes-per-second", "400")
    gateway = worker = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(gen.gateway()), check=True)
        idx = wait(lambda: (i := index(cp, ns)) and sum(s["models"] for s in i["shards"]) == N and i, 240,
                   "a catalog of 10,000 models")
        compiled_s = time.monotonic() - started
        assert len(idx["shards"]) == 16 and "models" not in idx["table"]
        for s in idx["shards"]:  # every object far inside the 1 MiB limit
            shard = get(cp, ns, "configmap", f"main-routing-{s['index']}")
            assert shard["metadata"]["annotations"]["switchyard.dev/digest"] == s["digest"]
            assert len(json.dumps(shard)) < 700 * 1024
        assert "10000 model(s)" in wait(lambda: ready(cp, ns, "gateway", "main").get("message"), 60, "Gateway Ready")

        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        port = free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(cp.service_account_kubeconfig(ns, "main-gateway")), "--nats", nats.url,
                        "--port", str(port), "--metrics-port", str(free_port()), "--log-level", "INFO"],
                       tmp_path / "gateway.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 60, "gateway ready with the catalog")
        last = gen.model_name(N - 1)
        worker = subprocess.Popen(
            [sys.executable, "-m", "switchyard.worker", "--nats", nats.url, "--model", last,
             "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
             "--heartbeat-interval", "0.5"], env={**os.environ, "POD_NAME": "scale-worker-0"},
            start_new_session=True)
        cp.kubectl("apply", "-f", "-", input=endpoint_slice(ns, "scale-worker", "scale-worker-0"), check=True)
        _status, body = wait(lambda: (r := post(f"{url}/v1/encode/{last}", {"items": [{"text": "last"}]}))
                             [0] == 200 and r, 60, "the last of 10,000 models served")
        assert body["items"] == [{"text": "last"}]

        # One Upstream changes: one shard and the index are rewritten, and the gateway serves it.
        before = {s["index"]: s["digest"] for s in index(cp, ns)["shards"]}
        changed = gen.model_name(4321)
        assert post(f"{url}/v1/score/{changed}", {"items": [1]})[0] == 400  # unsupported_operation
        cp.kubectl("patch", "upstream", gen.upstream_name(4321), "-n", ns, "--type=merge", "-p",
                   '{"spec": {"operations": ["encode", "generate", "score"]}}', check=True)
        wait(lambda: post(f"{url}/v1/score/{changed}", {"items": [1]})[0] == 202, 60,
             "the changed operation served")
        after = {s["index"]: s["digest"] for s in index(cp, ns)["shards"]}
        assert [i for i in after if after[i] != before[i]] == [gen.bucket_of(4321, len(after))]
        print(f"\n10,000 Upstreams created in {applied_s:.1f}s; catalog compiled and stored "
              f"{compiled_s:.1f}s after the first create")
    finally:
        for p in (worker,):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        if gateway is not None:
            gateway.kill()
        op.kill()
        print(op.tail(20))
        # No namespace controller runs here: remove the bulk ourselves (one request per kind), so
        # nothing else in the session (KEDA) walks 10,000 objects.
        for kind in ("upstreams", "scaledobjects"):
            cp.kubectl("delete", "--raw", collection(ns, kind))


def test_a_catalog_over_the_limit_is_reported_on_the_gateway(installed: ControlPlane, namespace: str,
                                                             tmp_path: Path) -> None:
    cp, ns = installed, namespace
    op = run_operator(cp, tmp_path, ns, "--catalog-inline-bytes", "0", "--catalog-max-bytes", "4000")
    try:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(gen.gateway()), check=True)
        cp.kubectl("apply", "-n", ns, "-f", "-", check=True,
                   input=as_list(gen.upstreams(3)))
        small = wait(lambda: (i := index(cp, ns)) and sum(s["models"] for s in i["shards"]) == 3 and i, 60,
                     "a sharded catalog of 3 models")
        assert wait(lambda: ready(cp, ns, "gateway", "main").get("status") == "True", 30, "Ready")
        # 1,000 more models (~7.9 kB compressed) do not fit in 4000 bytes: the last catalog stays,
        # and the Gateway says why.
        cp.kubectl("apply", "-n", ns, "-f", "-", check=True,
                   input=as_list(gen.upstreams(1000, start=3)))
        cond = wait(lambda: (c := ready(cp, ns, "gateway", "main")).get("reason") == "CatalogTooLarge" and c, 60,
                    "CatalogTooLarge")
        assert cond["status"] == "False" and "more than the limit of 4000" in cond["message"]
        # Gateways keep the last table that fit (a pass may have caught the apply half-way: some fit).
        kept = index(cp, ns)
        assert 3 <= sum(s["models"] for s in kept["shards"]) < 1003 and kept["epoch"] >= small["epoch"]
        wait(lambda: [e for e in json.loads(cp.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
                      if e["reason"] == "CatalogTooLarge"], 30, "a Warning Event")
        # Back under the limit: Ready again, and the catalog moves on.
        cp.kubectl("delete", "--raw", collection(ns, "upstreams"), check=True)
        wait(lambda: ready(cp, ns, "gateway", "main").get("status") == "True", 60, "Ready again")
    finally:
        op.kill()
        print(op.tail(20))
