"""Scale from zero, end to end, on a test control plane: the stack tests and bench/coldstart.py share.

Real parts: kube-apiserver, the KEDA operator (started by the caller), kube-controller-manager
(Deployment, ReplicaSet, HPA and EndpointSlice controllers), nats-server (the caller's), the
Switchyard operator and a cluster-mode gateway (each as its ServiceAccount), and worker
processes. The one stand-in is `TestNode` (node.py), which plays the kubelet.

An Upstream `echo` renders one fleet at zero (`echo-cpu`, ScaledObject `echo.cpu`) from a
worker template; the Gateway's `spec.scaler.address` points KEDA at the gateway's scaler
on 127.0.0.1, since KEDA runs outside any cluster here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..natsserver import free_port
from . import http
from .controllermanager import DEFAULT_CONTROLLERS, ControllerManager
from .controlplane import ControlPlane
from .node import TestNode
from .processes import Server

ROOT = Path(__file__).resolve().parents[2]
KEY = "sy-coldstart-key-0123456789abcdef"
MODEL = "switchyard/echo"
UPSTREAM, FLEET, SCALED_OBJECT, SERVICE = "echo", "echo-cpu", "echo.cpu", "echo-worker"
OPERATOR_NS, OPERATOR_SA = "switchyard-system", "switchyard-operator"
CONTROLLERS = (*DEFAULT_CONTROLLERS, "endpointslice-controller")
WORKER_POD = {"app.kubernetes.io/name": "switchyard-worker"}  # the operator's gateway pods are not run
NODE_LABELS = {"switchyard.dev/test-node": "cpu"}  # the cpu profile's nodeSelector: the test node has it


def manifests(nats_url: str, scaler_port: int, *, cooldown: int, polling: int, timeout: float,
              handler: str = "switchyard.worker.handlers:echo", model: str = MODEL) -> str:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"}, "stringData": {"key": KEY}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "main"},
         # replicas 0: the gateway runs as a local process (ColdStartStack), not as the operator's pods.
         "spec": {"replicas": 0, "listeners": {"scaler": {"port": scaler_port}},
                  "scaler": {"address": f"127.0.0.1:{scaler_port}"},
                  "nats": {"url": nats_url}, "machineProfiles": [{"name": "cpu", "nodeSelector": NODE_LABELS}],
                  "auth": {"apiKeys": [{"name": "t", "secretRef": {"name": "keys"}}]}}},
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": UPSTREAM},
         "spec": {"model": model, "operations": ["encode"], "machineProfiles": ["cpu"], "timeoutSeconds": timeout,
                  "scaling": {"minReplicas": 0, "maxReplicas": 1, "targetPendingPerReplica": 1,
                              "pollingIntervalSeconds": polling, "cooldownSeconds": cooldown},
                  "workers": {"service": SERVICE, "template": {
                      "image": "ghcr.io/switchyard-dev/switchyard:test",  # ignored by the test node
                      "args": ["worker", "--handler", handler,
                               "--heartbeat-interval", "0.5"]}}}},
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def install(cp: ControlPlane) -> None:
    """`kubectl apply -k manifests/`: CRDs, the operator's namespace and RBAC."""
    cp.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"), check=True)
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               *[f"crd/{p}.switchyard.dev" for p in ("gateways", "upstreams", "pools", "planners")], check=True)


def wait(cond: Callable[[], Any], timeout: float, what: str | Callable[[], str], interval: float = 0.05) -> Any:
    """Poll `cond` until truthy. `what` may be a callable (e.g. log tails), read only on a timeout,
    so the failure shows the logs as they were when it gave up."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (KeyError, TypeError, IndexError, ValueError, OSError):
            last = None
        if last:
            return last
        time.sleep(interval)
    said = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout}s waiting for {said} (last: {last!r})")


@dataclass
class ColdStartStack:
    cp: ControlPlane
    keda_bin: Path
    namespace: str
    nats_url: str
    workdir: Path
    cooldown: int = 2
    polling: int = 1
    timeout: float = 10.0
    handler: str = "switchyard.worker.handlers:echo"
    model: str = MODEL

    url: str = field(default="", init=False)
    metrics_port: int = field(default=0, init=False)
    scaler_port: int = field(default=0, init=False)
    node: TestNode | None = field(default=None, init=False)
    kcm: ControllerManager | None = field(default=None, init=False)
    servers: list[Server] = field(default_factory=list, init=False)

    def start(self) -> ColdStartStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cp, ns = self.cp, self.namespace
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The real PodSecurity admission refuses any worker pod that is not "restricted".
        cp.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted", "--overwrite",
                   check=True)
        self.kcm = ControllerManager(cp, self.keda_bin, controllers=CONTROLLERS).start()
        self.node = TestNode(cp, ns, self.workdir / "node", labels=NODE_LABELS, selector=WORKER_POD).start()
        self._apply()
        op_kc = cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
        self._run("operator", ["operator", "--kubeconfig", str(op_kc), "--identity", f"op-{ns}", "--namespaces", ns,
                               "--lease-namespace", OPERATOR_NS, "--lease-seconds", "4", "--resync-seconds", "5"])
        wait(lambda: self.get("rolebinding", "main-gateway"), 60, "the gateway's RBAC")
        wait(lambda: self.get("deployment", FLEET), 60, "the rendered fleet")
        gw_kc = cp.service_account_kubeconfig(ns, "main-gateway")
        for attempt in range(3):  # another process may take a picked port before the gateway binds it
            if attempt:
                self._apply()
            port, self.metrics_port = free_port(), free_port()
            gateway = self._run("gateway", ["gateway", "--configmap", "main-routing", "--namespace", ns,
                                            "--kubeconfig", str(gw_kc), "--nats", self.nats_url, "--port", str(port),
                                            "--metrics-port", str(self.metrics_port),
                                            "--scaler-port", str(self.scaler_port)])
            self.url = f"http://127.0.0.1:{port}"
            wait(lambda: gateway.exited is not None or http.status(f"{self.url}/readyz") == 200, 60, "gateway ready")
            if gateway.exited is None:
                break
        else:
            raise AssertionError(f"the gateway did not start:\n{gateway.tail()}")
        wait(lambda: self.condition(SCALED_OBJECT, "Ready") == "True", 60, f"{SCALED_OBJECT} Ready")
        wait(lambda: self.metric("switchyard_gateway_scaler_streams") >= 1, 60, "KEDA's stream open")

    def _apply(self) -> None:
        self.scaler_port = free_port()
        self.cp.kubectl("apply", "-n", self.namespace, "-f", "-", check=True, input=manifests(
            self.nats_url, self.scaler_port, cooldown=self.cooldown, polling=self.polling, timeout=self.timeout,
            handler=self.handler, model=self.model))

    def _run(self, name: str, args: list[str]) -> Server:
        import sys

        server = Server(name, [sys.executable, "-m", "switchyard.cli.main", *args, "--log-level", "INFO"],
                        self.workdir / f"{name}.log").start()
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()
        if self.node is not None:
            self.node.stop()
        if self.kcm is not None:
            self.kcm.stop()

    def __enter__(self) -> ColdStartStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observations ----------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        r = self.cp.kubectl("get", kind, name, "-n", self.namespace, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def replicas(self) -> int | None:
        dep = self.get("deployment", FLEET)
        return None if dep is None else dep["spec"].get("replicas")

    def condition(self, scaled_object: str, kind: str) -> str | None:
        conds = ((self.get("scaledobject", scaled_object) or {}).get("status") or {}).get("conditions") or []
        return next((c["status"] for c in conds if c["type"] == kind), None)

    def pods(self) -> list[dict[str, Any]]:
        r = self.cp.kubectl("get", "pods", "-n", self.namespace, "-l", f"switchyard.dev/fleet={FLEET}", "-o", "json",
                            check=True)
        return json.loads(r.stdout)["items"]

    def ready_endpoints(self) -> set[str]:
        """Pod names the EndpointSlice controller published as ready endpoints of the worker Service."""
        r = self.cp.kubectl("get", "endpointslices", "-n", self.namespace, "-l",
                            f"kubernetes.io/service-name={SERVICE}", "-o", "json", check=True)
        return {ep["targetRef"]["name"] for s in json.loads(r.stdout)["items"] for ep in s.get("endpoints") or []
                if (ep.get("conditions") or {}).get("ready") and ep.get("targetRef")}

    def metric(self, name: str) -> float:
        return http.metric(f"http://127.0.0.1:{self.metrics_port}/metrics", name)

    def log_tails(self) -> str:
        parts = [f"--- {s.name}\n{s.tail(20)}" for s in self.servers]
        if self.kcm is not None:
            parts.append(f"--- kube-controller-manager\n{self.kcm.log_tail(20)}")
        if self.node is not None:
            parts += [f"--- pod {p}\n{self.node.log_tail(p, 20)}" for p in self.node.pods]
            parts.append(f"--- node events\n{self.node.events[-20:]}")
        return "\n".join(parts)
