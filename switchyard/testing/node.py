"""A test node: plays the kubelet (and the scheduler) for one namespace's pods. TEST CODE ONLY.

The test control plane has no kubelet, so without this, the pods a Deployment gets stay
Pending. `TestNode` is the one stand-in the tests allow, and it is never part of the product:

- it registers a Node, and binds each pending pod of its namespace (with the labels of its
  `selector`) whose nodeSelector the node's labels satisfy (nothing else of the scheduler);
- it runs each container as a local process from the pod's own command, args and env. The
  image is ignored: its entrypoint `switchyard` (our image's) is the venv's console script.
  Env `value`s and the downward API (`metadata.name`, `metadata.namespace`, `metadata.uid`,
  `spec.nodeName`, `status.podIP`) are resolved, and `$(VAR)` is expanded, as the kubelet does;
- the pod network: each pod gets an IP in 10.244.0.0/16 in its status (the EndpointSlice
  controller publishes it; the API server refuses loopback endpoints) and the process, which
  shares this machine's loopback, sees `127.244.x.y` for it, so servers bind loopback only;
- it reports the pod Running, and Ready while its httpGet readinessProbe answers 2xx (every
  periodSeconds), so the real EndpointSlice controller publishes it as a ready endpoint;
- on deletion it sends SIGTERM, waits up to the pod's grace period, then SIGKILL, and removes
  the pod (grace 0), as the kubelet does. A container that exits is restarted (restartPolicy
  Always), with restartCount raised.

It talks to the API server as the admin user over HTTPS (a watch for events, plus a poll
every `interval` s for the probes and timers).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..contracts import Obj
from .controlplane import ControlPlane

ENTRYPOINTS = {"switchyard": str(Path(sys.executable).with_name("switchyard"))}  # image entrypoint -> local
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined names are replaced, $$ is a literal $, the rest is kept."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


@dataclass
class PodRun:
    """One pod this node runs: its process, addresses and what was last reported."""

    uid: str
    ip: str  # in the API (status.podIP)
    local: str  # what the process binds (loopback)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    ready: bool | None = None
    next_probe: float = 0.0
    term_sent: float | None = None  # monotonic time of the SIGTERM


@dataclass
class TestNode:
    __test__ = False  # not a pytest test class
    cp: ControlPlane
    namespace: str
    workdir: Path
    name: str = field(default_factory=lambda: f"test-node-{random.randrange(16**6):06x}")
    labels: dict[str, str] = field(default_factory=dict)
    selector: dict[str, str] = field(default_factory=dict)  # run only the pods with these labels
    interval: float = 0.05

    pods: dict[str, PodRun] = field(default_factory=dict, init=False)
    events: list[tuple[float, str, str]] = field(default_factory=list, init=False)  # (wall time, pod, what)
    _latest: dict[str, Obj] = field(default_factory=dict, init=False)
    _wake: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> TestNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels}
        self._call("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                             "metadata": {"name": self.name, "labels": labels}})
        self._call("PATCH", f"/api/v1/nodes/{self.name}/status", {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node",
                            "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
            "addresses": [{"type": "InternalIP", "address": "10.244.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}, merge=True)
        for target in (self._watch, self._loop):
            t = threading.Thread(target=target, name=f"{self.name}-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(10)
        for run in self.pods.values():
            _kill(run.proc)
        try:
            self._call("DELETE", f"/api/v1/nodes/{self.name}")
        except (OSError, urllib.error.HTTPError):
            pass

    def __enter__(self) -> TestNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def event_times(self, what: str) -> list[float]:
        with self._lock:
            return [t for t, _, w in self.events if w == what]

    def log_tail(self, pod: str, lines: int = 40) -> str:
        log = self.workdir / pod / "container.log"  # kept after the pod is gone
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    # -- the API server ------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        pki = self.cp.workdir / "pki"  # type: ignore[operator]
        ctx = ssl.create_default_context(cafile=pki / "ca.crt")
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return ctx

    def _call(self, method: str, path: str, body: Obj | None = None, merge: bool = False) -> Obj:
        ctype = "application/merge-patch+json" if merge else "application/json"
        req = urllib.request.Request(self.cp.server + path, method=method, headers={"Content-Type": ctype},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def _watch(self) -> None:
        """Keep _latest current: a list, then a watch from its resourceVersion; again on any error."""
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        while not self._stop.is_set():
            try:
                listed = self._call("GET", base)
                with self._lock:
                    self._latest = {p["metadata"]["name"]: p for p in listed.get("items") or []}
                self._wake.set()
                rv = listed["metadata"]["resourceVersion"]
                url = f"{self.cp.server}{base}?watch=1&resourceVersion={rv}&timeoutSeconds=30"
                with urllib.request.urlopen(url, context=self._ssl(), timeout=40) as stream:
                    for line in stream:
                        if self._stop.is_set():
                            return
                        ev = json.loads(line)
                        if ev.get("type") == "ERROR":
                            break
                        pod = ev["object"]
                        with self._lock:
                            if ev["type"] == "DELETED":
                                self._latest.pop(pod["metadata"]["name"], None)
                            else:
                                self._latest[pod["metadata"]["name"]] = pod
                        self._wake.set()
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)

    # -- the kubelet ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                pods = list(self._latest.values())
            names = set()
            for pod in pods:
                names.add(pod["metadata"]["name"])
                try:
                    self._sync(pod)
                except (OSError, urllib.error.HTTPError, ValueError, KeyError) as exc:
                    self._note(pod["metadata"]["name"], f"error: {exc}")
            for gone in set(self.pods) - names:  # deleted by someone else (grace 0): stop at once
                _kill(self.pods.pop(gone).proc)

    def _note(self, pod: str, what: str) -> None:
        with self._lock:
            self.events.append((time.time(), pod, what))

    def _sync(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        name = meta["name"]
        if not self.selector.items() <= (meta.get("labels") or {}).items():
            return
        if not spec.get("nodeName"):
            if (spec.get("nodeSelector") or {}).items() <= self._node_labels().items() and \
                    not meta.get("deletionTimestamp"):
                self._call("POST", f"/api/v1/namespaces/{self.namespace}/pods/{name}/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.name}})
                self._note(name, "bound")
            return
        if spec["nodeName"] != self.name:
            return
        run = self.pods.get(name)
        if run is not None and run.uid != meta["uid"]:  # a new pod of the same name
            _kill(run.proc)
            run = None
        if meta.get("deletionTimestamp"):
            self._terminate(pod, run)
            return
        if run is None:
            run = self.pods[name] = self._allocate(meta["uid"])
        if run.proc is None or run.proc.poll() is not None:
            if run.proc is not None:
                run.restarts += 1
                self._note(name, f"exited {run.proc.returncode}")
            self._start(pod, run)
            self._report(pod, run, ready=False)
        if time.monotonic() >= run.next_probe:
            probe = spec["containers"][0].get("readinessProbe")
            run.next_probe = time.monotonic() + float((probe or {}).get("periodSeconds", 10))
            ready = self._probe(spec["containers"][0], run) if probe else True
            if ready != run.ready:
                self._report(pod, run, ready)
                self._note(name, "ready" if ready else "not ready")

    def _node_labels(self) -> dict[str, str]:
        return {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels}

    def _allocate(self, uid: str) -> PodRun:
        taken = {r.local for r in self.pods.values()}
        while True:
            c, d = random.randrange(1, 255), random.randrange(2, 255)
            if f"127.244.{c}.{d}" not in taken:
                return PodRun(uid=uid, ip=f"10.244.{c}.{d}", local=f"127.244.{c}.{d}")

    def _start(self, pod: Obj, run: PodRun) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        (container,) = spec["containers"]  # the workers have one; more is not needed here
        fields = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                  "metadata.uid": meta["uid"], "spec.nodeName": self.name, "status.podIP": run.local}
        env: dict[str, str] = {}
        for e in container.get("env") or []:
            if "valueFrom" in e:
                env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]  # KeyError: not supported
            else:
                env[e["name"]] = expand(e.get("value", ""), env)
        argv = [expand(a, env) for a in (container.get("command") or ["switchyard"])]
        argv[0] = ENTRYPOINTS.get(argv[0], argv[0])
        argv += [expand(a, env) for a in container.get("args") or []]
        home = self.workdir / meta["name"]
        home.mkdir(exist_ok=True)
        with open(home / "container.log", "ab") as out:
            run.proc = subprocess.Popen(argv, cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env={"PATH": os.environ.get("PATH", ""), "HOME": str(home), **env},
                                        start_new_session=True)
        self._note(meta["name"], "started")

    def _probe(self, container: Obj, run: PodRun) -> bool:
        get = container["readinessProbe"]["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port)
        try:
            with urllib.request.urlopen(f"http://{run.local}:{port}{get.get('path', '/')}", timeout=1) as resp:
                return 200 <= resp.status < 400
        except (OSError, urllib.error.HTTPError):
            return False

    def _report(self, pod: Obj, run: PodRun, ready: bool) -> None:
        run.ready = ready
        now, flag = _now(), "True" if ready else "False"
        name = pod["spec"]["containers"][0]["name"]
        status = {
            "phase": "Running", "hostIP": "10.244.0.1", "hostIPs": [{"ip": "10.244.0.1"}],
            "podIP": run.ip, "podIPs": [{"ip": run.ip}], "startTime": (pod.get("status") or {}).get("startTime") or now,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": now} for t, s in (
                ("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [{"name": name, "image": pod["spec"]["containers"][0]["image"], "imageID": "",
                                   "ready": ready, "started": True, "restartCount": run.restarts,
                                   "state": {"running": {"startedAt": now}}}],
        }
        self._call("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod['metadata']['name']}/status",
                   {"status": status}, merge=True)

    def _terminate(self, pod: Obj, run: PodRun | None) -> None:
        name = pod["metadata"]["name"]
        if run is not None and run.proc is not None and run.proc.poll() is None:
            if run.term_sent is None:
                os.killpg(run.proc.pid, signal.SIGTERM)
                run.term_sent = time.monotonic()
                self._note(name, "SIGTERM")
            grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
            if time.monotonic() - run.term_sent < grace:
                return  # the worker is draining
            self._note(name, "SIGKILL")
            _kill(run.proc)
        if run is not None and run.proc is not None:
            self._note(name, f"exited {run.proc.wait()}")
        try:
            self._call("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{name}",
                       {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                        "preconditions": {"uid": pod["metadata"]["uid"]}})
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 409):
                raise
        self.pods.pop(name, None)
        self._note(name, "removed")


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
