"""Run the operator and the gateway against the real API server, as their service accounts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchyard.testing.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "switchyard-system"
OPERATOR_SA = "switchyard-operator"


# A Planner whose steps depend on each other: refused by the operator (Ready=False).
LOOP_PLANNER = """
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: loop}
spec:
  steps:
    - {name: a, model: switchyard/echo, operation: encode, dependsOn: [b]}
    - {name: b, model: switchyard/echo, operation: encode, dependsOn: [a]}
"""

def install(cp: ControlPlane) -> None:
    """`kubectl apply -k manifests/`: CRDs, namespace, RBAC (the operator Deployment never runs here)."""
    cp.kubectl("apply", "--server-side", "-k", str(ROOT / "manifests"), check=True)
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
               *[f"crd/{p}.switchyard.dev" for p in ("gateways", "upstreams", "pools", "planners")], check=True)


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    out = cp.kubectl(*args, "-o", "json", check=True).stdout
    return json.loads(out)


def get(cp: ControlPlane, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    r = cp.kubectl("get", kind, name, "-n", ns, "-o", "json")
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (KeyError, TypeError, IndexError, ValueError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Proc:
    """A switchyard process (operator or gateway) with its log in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - the process's output, closed when it is stopped
        self.proc = subprocess.Popen([sys.executable, "-m", "switchyard.cli.main", *args], stdout=self._out,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                     start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def operator(cp: ControlPlane, workdir: Path, identity: str, namespaces: str, lease_seconds: int = 4) -> Proc:
    kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
    return Proc(["operator", "--kubeconfig", str(kubeconfig), "--identity", identity,
                 "--namespaces", namespaces, "--lease-namespace", OPERATOR_NS,
                 "--lease-seconds", str(lease_seconds), "--resync-seconds", "5", "--log-level", "INFO"],
                workdir / f"operator-{identity}.log")
