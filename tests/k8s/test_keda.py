"""Scale from zero with the real KEDA operator, real gateways and a real worker.

KEDA runs out of cluster, so the Gateway's `spec.scaler.address` points it at the
gateway's scaler on 127.0.0.1 (inside a cluster it is the gateway Service). There is
no kubelet here, and a kube-controller-manager (with KEDA's metrics adapter) only in the
1 -> N test: KEDA setting the worker Deployment's `spec.replicas` is the outcome; the
worker process is started by the test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
from cluster import Proc, get, operator, wait

from switchyard.contracts import STARTED_KEY
from switchyard.gateway.externalscaler import externalscaler_pb2 as pb
from switchyard.gateway.externalscaler import externalscaler_pb2_grpc as pb_grpc
from switchyard.gateway.scaledobjects import RETOUCHES, SETTLE_S, STREAM_WAIT_S
from switchyard.gateway.scaler import METRIC
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import http
from switchyard.testing.controllermanager import ControllerManager
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator, MetricsAdapter

KEY = "sy-keda-test-key-0123456789abcdef"
MODEL = "switchyard/echo"


def manifests(nats_url: str, scaler_port: int, polling: int = 1, cooldown: int = 5, max_replicas: int = 3,
              per_replica: int = 2) -> str:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"key": KEY}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "main"},
         "spec": {"listeners": {"scaler": {"port": scaler_port}}, "scaler": {"address": f"127.0.0.1:{scaler_port}"},
                  "nats": {"url": nats_url}, "auth": {"apiKeys": [{"name": "t", "secretRef": {"name": "keys"}}]}}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": "echo"},
         "spec": {"model": MODEL, "operations": ["encode"], "machineProfiles": ["cpu"],
                  "workers": {"service": "echo-worker"},
                  "scaling": {"minReplicas": 0, "maxReplicas": max_replicas, "targetPendingPerReplica": per_replica,
                              "pollingIntervalSeconds": polling, "cooldownSeconds": cooldown}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo-worker"},
         "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "echo-worker"}},
                  "template": {"metadata": {"labels": {"app": "echo-worker"}},
                               "spec": {"containers": [{"name": "worker", "image": "switchyard:test"}]}}}},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def start_gateway(cp: ControlPlane, ns: str, nats: NatsServer, tmp: Path, name: str,
                  scaler_port: int) -> tuple[Proc, str, int]:
    """A gateway in cluster mode, as the ServiceAccount (and Role) the operator made for it."""
    port, metrics = free_port(), free_port()
    proc = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns,
                 "--kubeconfig", str(cp.service_account_kubeconfig(ns, "main-gateway")), "--nats", nats.url,
                 "--port", str(port), "--metrics-port", str(metrics), "--scaler-port", str(scaler_port)],
                tmp / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait(lambda: http.status(f"{url}/readyz") == 200, 30, f"{name} ready")
    return proc, url, metrics


def replicas(cp: ControlPlane, ns: str) -> int | None:
    dep = get(cp, ns, "deployment", "echo-worker")
    return None if dep is None else dep["spec"].get("replicas")


def so_ready(cp: ControlPlane, ns: str) -> str | None:
    so = get(cp, ns, "scaledobject", "echo") or {}
    conds = (so.get("status") or {}).get("conditions") or []
    return next((c["status"] for c in conds if c["type"] == "Ready"), None)


def test_request_scales_workers_from_zero_and_back(installed: ControlPlane, keda: KedaOperator, namespace: str,
                                                   tmp_path: Path, nats: NatsServer) -> None:
    cp, ns = installed, namespace
    scaler_a, scaler_b = free_port(), free_port()
    procs: list[Any] = []
    worker = None
    try:
        # Gateway A is the one KEDA dials; B is a second replica on the same NATS.
        cp.kubectl("apply", "-n", ns, "-f", "-", input=manifests(nats.url, scaler_a), check=True)
        procs.append(operator(cp, tmp_path, "op-keda", ns))
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        gw_a, url_a, metrics_a = start_gateway(cp, ns, nats, tmp_path, "gateway-a", scaler_a)
        procs.append(gw_a)
        gw_b, url_b, _ = start_gateway(cp, ns, nats, tmp_path, "gateway-b", scaler_b)
        procs.append(gw_b)
        wait(lambda: so_ready(cp, ns) == "True", 60, f"ScaledObject Ready\n{keda.log_tail()}")
        wait(lambda: http.metric(f"http://127.0.0.1:{metrics_a}/metrics", "switchyard_gateway_scaler_streams") >= 1, 30,
             "KEDA's stream open")
        assert replicas(cp, ns) == 0

        # The replica KEDA does not talk to accepts the request.
        status, body = http.call(f"{url_b}/v1/encode/{MODEL}", KEY, {"items": [{"text": "cold"}]})
        assert status == 202, body
        job = body["job_id"]
        wait(lambda: http.metric(f"http://127.0.0.1:{metrics_a}/metrics",
                                 'switchyard_gateway_scaler_pushes_total{active="true"}') >= 1, 30,
             "StreamIsActive pushed true")
        wait(lambda: replicas(cp, ns) == 1, 30, f"KEDA scaled the workers to 1\n{keda.log_tail()}")

        # Every replica reports the same demand (one item, not yet taken by any worker).
        assert _demand(scaler_a) == _demand(scaler_b) == 1.0

        # The worker KEDA asked for: a real worker process drains the item.
        with open(tmp_path / "worker.log", "ab") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "switchyard.worker", "--nats", nats.url, "--model", MODEL,
                 "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
                 "--heartbeat-interval", "0.5"], start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        done = wait(lambda: (r := http.call(f"{url_a}/v1/jobs/{job}", KEY))[1].get("state") == "succeeded" and r, 60,
                    "job succeeded")
        assert done[1]["result"]["items"] == [{"text": "cold"}]
        assert _demand(scaler_a) == _demand(scaler_b) == 0.0

        # Idle: KEDA scales back to zero after cooldown (5 s) + polling (1 s).
        wait(lambda: replicas(cp, ns) == 0, 60, f"KEDA scaled the workers back to 0\n{keda.log_tail()}")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(20)
        for p in reversed(procs):
            p.kill()


def test_demand_scales_past_one_replica_through_the_hpa(installed: ControlPlane, keda: KedaOperator, keda_bin: Path,
                                                         namespace: str, tmp_path: Path, nats: NatsServer) -> None:
    """1 -> N is the HPA's job: kube-controller-manager reads the demand through KEDA's metrics
    adapter (external.metrics.k8s.io, via the aggregation layer) and sets ceil(demand / target),
    capped by maxReplicas. Two gateway replicas took the items; KEDA reads the same demand from
    either one."""
    cp, ns = installed, namespace
    scaler_a, scaler_b = free_port(), free_port()
    procs: list[Proc] = []
    with MetricsAdapter(keda), ControllerManager(cp, keda_bin) as kcm:
        try:
            cp.kubectl("apply", "-n", ns, "-f", "-", check=True,
                       input=manifests(nats.url, scaler_a, cooldown=300, max_replicas=6, per_replica=10))
            procs.append(operator(cp, tmp_path, "op-hpa", ns))
            wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
            gw_a, url_a, metrics_a = start_gateway(cp, ns, nats, tmp_path, "gateway-a", scaler_a)
            procs.append(gw_a)
            gw_b, url_b, metrics_b = start_gateway(cp, ns, nats, tmp_path, "gateway-b", scaler_b)
            procs.append(gw_b)
            wait(lambda: so_ready(cp, ns) == "True", 60, f"ScaledObject Ready\n{keda.log_tail()}")
            for i in range(50):  # half through each replica; KEDA dials A
                assert http.call(f"{url_a if i % 2 else url_b}/v1/encode/{MODEL}", KEY, {"items": [i]})[0] == 202
            # 50 pending, 10 per replica: ceil(50 / 10) = 5.
            wait(lambda: replicas(cp, ns) == 5, 60, f"HPA scaled to 5\n{kcm.log_tail()}")
            assert external_metric(cp, ns) == 50  # as the HPA reads it: adapter -> KEDA -> gateway A

            # KEDA now dials gateway B, which accepted only half of the items: the same demand.
            cp.kubectl("patch", "gateway", "main", "-n", ns, "--type=merge", "-p",
                       json.dumps({"spec": {"scaler": {"address": f"127.0.0.1:{scaler_b}"}}}), check=True)
            for metrics, n in ((metrics_b, 1), (metrics_a, 0)):
                wait(lambda: http.metric(f"http://127.0.0.1:{metrics}/metrics",
                                         "switchyard_gateway_scaler_streams") == n, 60,
                     f"KEDA's stream moved to gateway B\n{keda.log_tail()}")
            assert external_metric(cp, ns) == 50

            for i in range(30):
                assert http.call(f"{url_b}/v1/encode/{MODEL}", KEY, {"items": [i]})[0] == 202
            # 80 pending would be 8 replicas; maxReplicas caps it at 6.
            wait(lambda: external_metric(cp, ns) == 80, 30, "KEDA reads 80 pending")
            wait(lambda: replicas(cp, ns) == 6, 60, f"HPA scaled to maxReplicas\n{kcm.log_tail()}")
            hpa = get(cp, ns, "hpa", "keda-hpa-echo")
            assert hpa is not None and hpa["spec"]["maxReplicas"] == 6
        finally:
            for p in reversed(procs):
                p.kill()


def external_metric(cp: ControlPlane, ns: str) -> float:
    """The demand as the HPA reads it: external.metrics.k8s.io, served by KEDA's adapter."""
    hpa = get(cp, ns, "hpa", "keda-hpa-echo")
    assert hpa is not None
    ext = hpa["spec"]["metrics"][0]["external"]["metric"]
    selector = ",".join(f"{k}={v}" for k, v in ext["selector"]["matchLabels"].items())
    raw = cp.kubectl("get", "--raw", f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{ext['name']}"
                     f"?labelSelector={urllib.parse.quote(selector)}", check=True).stdout
    (item,) = json.loads(raw)["items"]
    value = item["value"]  # a Quantity: KEDA writes milli-units, shown as "50" or "2500m"
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_scaler_that_starts_late_makes_its_scaled_object_ready(installed: ControlPlane, keda: KedaOperator,
                                                               namespace: str, tmp_path: Path,
                                                               nats: NatsServer) -> None:
    """While the scaler is absent, KEDA's retries and its gRPC connection back off (20 s absent cost
    21 s more). A gateway whose scaler comes up touches the ScaledObject (scalerStartedAt and the other
    spelling of scalerAddress: a fresh connection), so it is reconciled at once."""
    cp, ns = installed, namespace
    scaler = free_port()
    procs: list[Proc] = []
    try:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=manifests(nats.url, scaler), check=True)
        procs.append(operator(cp, tmp_path, "op-late", ns))
        wait(lambda: so_ready(cp, ns) == "False", 60, "KEDA found no scaler")
        time.sleep(20)  # let KEDA's retry backoff grow past the wait below
        assert so_ready(cp, ns) == "False"

        gw, _, _ = start_gateway(cp, ns, nats, tmp_path, "gateway-late", scaler)
        procs.append(gw)
        wait(lambda: so_ready(cp, ns) == "True", 15, f"ScaledObject Ready\n{keda.log_tail()}")
        so = get(cp, ns, "scaledobject", "echo")
        assert so is not None
        touched = so["spec"]["triggers"][0]["metadata"]
        assert touched.get(STARTED_KEY) and touched["scalerAddress"] == f"dns:///127.0.0.1:{scaler}"

        # The operator re-renders the ScaledObject and keeps what the gateway wrote.
        cp.kubectl("patch", "upstream", "echo", "-n", ns, "--type=merge", "-p",
                   '{"spec": {"scaling": {"maxReplicas": 2}}}', check=True)
        so = wait(lambda: (o := get(cp, ns, "scaledobject", "echo")) and o["spec"]["maxReplicaCount"] == 2 and o,
                  30, "ScaledObject updated")
        assert so["spec"]["triggers"][0]["metadata"] == touched
    finally:
        for p in reversed(procs):
            p.kill()


def fleet_manifests(nats_url: str, scaler_port: int, fleets: bool) -> str:
    objects = json.loads(manifests(nats_url, scaler_port))["items"]
    up = next(o for o in objects if o["kind"] == "Upstream")
    up["spec"]["machineProfiles"] = ["cpu", "gpu"]
    up["spec"]["workers"] = ({"service": "echo-worker", "fleets": [
        {"machineProfile": "cpu", "deployment": "echo-cpu"}, {"machineProfile": "gpu", "deployment": "echo-gpu"}]}
        if fleets else {"service": "echo-worker", "deployment": "echo-cpu"})
    dep = next(o for o in objects if o["kind"] == "Deployment")
    objects.remove(dep)
    for name in ("echo-cpu", "echo-gpu"):
        objects.append({**dep, "metadata": {"name": name}})
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def test_a_request_scales_only_the_fleet_of_its_machine_profile(installed: ControlPlane, keda: KedaOperator,
                                                                namespace: str, tmp_path: Path,
                                                                nats: NatsServer) -> None:
    cp, ns = installed, namespace
    scaler = free_port()
    procs: list[Proc] = []

    def condition(so: str, kind: str) -> str | None:
        conds = ((get(cp, ns, "scaledobject", so) or {}).get("status") or {}).get("conditions") or []
        return next((c["status"] for c in conds if c["type"] == kind), None)

    def scale(name: str) -> int:
        return get(cp, ns, "deployment", name)["spec"]["replicas"]

    try:
        # One Deployment for every profile first; then one fleet per profile.
        cp.kubectl("apply", "-n", ns, "-f", "-", input=fleet_manifests(nats.url, scaler, fleets=False), check=True)
        procs.append(operator(cp, tmp_path, "op-fleets", ns))
        wait(lambda: get(cp, ns, "scaledobject", "echo"), 30, "the Upstream's ScaledObject")
        cp.kubectl("apply", "-n", ns, "-f", "-", input=fleet_manifests(nats.url, scaler, fleets=True), check=True)
        wait(lambda: get(cp, ns, "scaledobject", "echo") is None, 30, "the single ScaledObject removed")
        for so, target in (("echo.cpu", "echo-cpu"), ("echo.gpu", "echo-gpu")):
            obj = wait(lambda: get(cp, ns, "scaledobject", so), 30, so)
            assert obj["spec"]["scaleTargetRef"]["name"] == target

        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        gw, url, _ = start_gateway(cp, ns, nats, tmp_path, "gateway-fleets", scaler)
        procs.append(gw)
        for so in ("echo.cpu", "echo.gpu"):
            wait(lambda: condition(so, "Ready") == "True", 60, f"{so} Ready\n{keda.log_tail()}")

        status, body = http.call(f"{url}/v1/encode/{MODEL}", KEY, {"items": [1]}, **{"X-Machine-Profile": "gpu"})
        assert status == 202 and body["machine_profile"] == "gpu", body
        wait(lambda: scale("echo-gpu") == 1, 30, f"the gpu fleet scaled to 1\n{keda.log_tail()}")
        # KEDA polls both every second: the gpu fleet is active, the cpu fleet is not and stays at 0.
        wait(lambda: condition("echo.gpu", "Active") == "True", 30, "echo.gpu Active")
        wait(lambda: condition("echo.cpu", "Active") == "False", 30, "echo.cpu not Active")
        assert scale("echo-cpu") == 0
    finally:
        for p in reversed(procs):
            p.kill()


# -- helpers -----------------------------------------------------------------------------

def _demand(scaler_port: int) -> float:
    async def call() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{scaler_port}") as channel:
            ref = pb.ScaledObjectRef(name="echo", namespace="x", scalerMetadata={"model": MODEL})
            resp = await pb_grpc.ExternalScalerStub(channel).GetMetrics(
                pb.GetMetricsRequest(scaledObjectRef=ref, metricName=METRIC), timeout=10)
            return resp.metricValues[0].metricValueFloat

    return asyncio.run(call())


RESTARTS = 5
# Liveness: about 1 s normally; a touch lost to KEDA's race is made again after STREAM_WAIT_S + SETTLE_S.
REOPEN_BOUND_S = 2 * (STREAM_WAIT_S + SETTLE_S) + 10


def keda_lines(keda: KedaOperator, ns: str, lines: int = 30) -> str:
    """What KEDA logged about this namespace (its log is shared by every test of the session)."""
    log = keda.server.log if keda.server is not None else None
    if log is None or not log.exists():
        return ""
    return "\n".join([ln for ln in log.read_text(errors="replace").splitlines() if ns in ln][-lines:])


def test_activation_after_the_gateway_keda_streams_to_restarts(installed: ControlPlane, keda: KedaOperator,
                                                               namespace: str, tmp_path: Path,
                                                               nats: NatsServer) -> None:
    """A gateway SIGKILLed while KEDA's StreamIsActive stream is open to it, and started again on the
    same scaler address (as behind its Service): the stream comes back and a push still activates.

    KEDA reopens a stream cut by an error after 2 s, doubling up to 60 s with every cut, so without
    the gateway's touch at start (scaledobjects.py) the 5th restart could not see its stream for at
    least 32 s after the kill: the bound below fails. Polling is every 10 minutes, so within this
    test only the push path activates.

    The touch restarts KEDA's scale loop, and KEDA v2.21 can lose that restart to a race (its old
    loop closes the new loop's scalers): that stream would stay away until the next poll, 10
    minutes here. The gateway then touches again (scaledobjects.Nudger), STREAM_WAIT_S + SETTLE_S
    after the touch; the bound leaves room for that round and one more."""
    cp, ns = installed, namespace
    scaler = free_port()
    procs: list[Proc] = []
    try:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=manifests(nats.url, scaler, polling=600), check=True)
        procs.append(operator(cp, tmp_path, "op-restart", ns))
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        gw, url, metrics = start_gateway(cp, ns, nats, tmp_path, "gateway-0", scaler)
        procs.append(gw)
        wait(lambda: so_ready(cp, ns) == "True", 60, f"ScaledObject Ready\n{keda.log_tail()}")

        def streams() -> float:
            return http.metric(f"http://127.0.0.1:{metrics}/metrics", "switchyard_gateway_scaler_streams")

        wait(lambda: streams() >= 1, 30, "KEDA's stream open")
        for i in range(1, RESTARTS + 1):
            gw.kill()  # SIGKILL: the stream is cut, never ended
            t_kill = time.monotonic()
            gw, url, metrics = start_gateway(cp, ns, nats, tmp_path, f"gateway-{i}", scaler)
            procs.append(gw)
            t_up = time.monotonic()
            try:
                wait(lambda: streams() >= 1, REOPEN_BOUND_S, f"KEDA's stream reopened after restart {i}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nKEDA on this namespace:\n{keda_lines(keda, ns)}") from None
            print(f"restart {i}: gateway up {t_up - t_kill:.1f} s after the kill, "
                  f"KEDA's stream reopened {time.monotonic() - t_up:.1f} s after that")

        assert replicas(cp, ns) == 0
        assert http.call(f"{url}/v1/encode/{MODEL}", KEY, {"items": [1]})[0] == 202
        wait(lambda: http.metric(f"http://127.0.0.1:{metrics}/metrics",
                                 'switchyard_gateway_scaler_pushes_total{active="true"}') >= 1, 30,
             "the restarted gateway pushed true")
        wait(lambda: replicas(cp, ns) == 1, 30, f"KEDA scaled the workers to 1\n{keda.log_tail()}")
    finally:
        for p in reversed(procs):
            p.kill()


def test_a_touch_that_opens_no_stream_is_made_again_at_most_twice(installed: ControlPlane, namespace: str,
                                                                  tmp_path: Path, nats: NatsServer) -> None:
    """A gateway whose touched ScaledObject opens no StreamIsActive stream to it (KEDA lost the touch
    to its race; here, KEDA is paused on it) touches it again, scalerStartedAt only, RETOUCHES times
    and then leaves it be."""
    cp, ns = installed, namespace
    scaler = free_port()
    procs: list[Proc] = []
    try:
        cp.kubectl("apply", "-n", ns, "-f", "-", input=manifests(nats.url, scaler, polling=600), check=True)
        procs.append(operator(cp, tmp_path, "op-retouch", ns))
        wait(lambda: get(cp, ns, "scaledobject", "echo"), 30, "the ScaledObject")
        # Paused, a ScaledObject has no scale loop and so no stream, whether this session runs KEDA or not.
        cp.kubectl("annotate", "scaledobject", "echo", "-n", ns, "autoscaling.keda.sh/paused=true", check=True)
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RBAC")
        before = get(cp, ns, "scaledobject", "echo")["metadata"]["generation"]
        gw, _, _ = start_gateway(cp, ns, nats, tmp_path, "gateway-retouch", scaler)
        procs.append(gw)
        log = tmp_path / "gateway-retouch.log"

        def retouches() -> int:
            return log.read_text(errors="replace").count("touching again")

        wait(lambda: retouches() == RETOUCHES, (RETOUCHES + 1) * (STREAM_WAIT_S + SETTLE_S) + 20,
             f"{RETOUCHES} touches made again\n{log.read_text(errors='replace')[-3000:]}")
        so = wait(lambda: (o := get(cp, ns, "scaledobject", "echo")) and
                  o["metadata"]["generation"] >= before + 1 + RETOUCHES and o, 10, "every touch applied")
        md = so["spec"]["triggers"][0]["metadata"]
        assert md["scalerAddress"] == f"dns:///127.0.0.1:{scaler}"  # respelled by the first touch only
        time.sleep(STREAM_WAIT_S + SETTLE_S + 2)  # another round would have come by now
        assert retouches() == RETOUCHES
    finally:
        for p in reversed(procs):
            p.kill()
