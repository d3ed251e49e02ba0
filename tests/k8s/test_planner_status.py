"""A Planner's run counts in its status (`status.runs`), written by a cluster-mode gateway beside the
operator's conditions: a real API server, the operator and the gateway as their service accounts,
real NATS and a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cluster import ROOT, Proc, get, operator, wait
from test_gateway_cluster import KEY, endpoint_slice

from switchyard.gateway.plannerstatus import FIELD_MANAGER
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import http
from switchyard.testing.controlplane import ControlPlane

PLANNERS = """
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: echo-twice}
spec:
  steps:
    - {name: a, model: switchyard/echo, operation: encode}
    - {name: b, model: switchyard/echo, operation: encode, dependsOn: [a]}
---
apiVersion: switchyard.dev/v1alpha1
kind: Planner
metadata: {name: on-gpu}
spec:
  steps:
    - {name: only, model: BAAI/bge-m3, operation: encode}
"""


def runs(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    planner = get(cp, ns, "planner", name) or {}
    return (planner.get("status") or {}).get("runs")


def counts(r: dict[str, Any] | None) -> dict[str, int] | None:
    return {k: r[k] for k in ("started", "running", "succeeded", "failed", "cancelled")} if r else None


def ready(cp: ControlPlane, ns: str, name: str) -> dict[str, Any] | None:
    status = (get(cp, ns, "planner", name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)


def test_planner_status_runs_beside_the_operators_conditions(installed: ControlPlane, namespace: str,
                                                             tmp_path: Path, nats: NatsServer) -> None:
    cp, ns = installed, namespace
    op = operator(cp, tmp_path, "op-planner-status", ns)
    gateway = worker = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        cp.kubectl("apply", "-n", ns, "-f", "-", input=PLANNERS, check=True)
        role = wait(lambda: get(cp, ns, "role", "main-gateway"), 30, "gateway Role")
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RoleBinding")
        wait(lambda: (ready(cp, ns, "echo-twice") or {}).get("status") == "True", 30, "the operator's Ready")
        # Least privilege: patch on planners/status, and nothing else on Planners.
        assert [r for r in role["rules"] if any(x.startswith("planners") for x in r["resources"])] == [
            {"apiGroups": ["switchyard.dev"], "resources": ["planners/status"], "verbs": ["patch"]}]
        who = f"system:serviceaccount:{ns}:main-gateway"

        def can(verb: str, resource: str, *extra: str) -> bool:
            r = cp.kubectl("auth", "can-i", verb, resource, *extra, "-n", ns, "--as", who)
            return r.stdout.strip() == "yes"

        assert can("patch", "planners.switchyard.dev", "--subresource=status")
        assert not any([can("update", "planners.switchyard.dev", "--subresource=status"),
                        can("get", "planners.switchyard.dev", "--subresource=status"),
                        can("patch", "planners.switchyard.dev"), can("get", "planners.switchyard.dev"),
                        can("patch", "upstreams.switchyard.dev", "--subresource=status")])

        port = free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(cp.service_account_kubeconfig(ns, "main-gateway")), "--nats", nats.url, "--port",
                        str(port), "--metrics-port", str(free_port()), "--log-level", "INFO"],
                       tmp_path / "gateway.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 30, "gateway ready")
        # Nothing run yet: zeros, written once the gateway has read the counters from NATS.
        assert counts(wait(lambda: runs(cp, ns, "echo-twice"), 30, "status.runs")) == \
            {"started": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        worker = subprocess.Popen(
            [sys.executable, "-m", "switchyard.worker", "--nats", nats.url, "--model", "switchyard/echo",
             "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
             "--heartbeat-interval", "0.5"], env={**os.environ, "POD_NAME": "echo-worker-7d9f-x2"},
            start_new_session=True)
        cp.kubectl("apply", "-f", "-", input=endpoint_slice(ns, "echo-worker", "echo-worker-7d9f-x2", True),
                   check=True)
        wait(lambda: http.call(f"{url}/v1/encode/switchyard/echo", KEY, {"items": [1]})[0] == 200, 30,
             "echo worker live")
        status, body = http.call(f"{url}/v1/plans/echo-twice", KEY, {"items": [{"text": "x"}]},
                                 Prefer="wait=30")
        assert status == 200, body
        # bge-m3 has no worker here: one run stays queued, one is cancelled.
        for run_id in ("waits", "stopped"):
            status, body = http.call(f"{url}/v1/plans/on-gpu", KEY, {"items": [1]}, **{"X-Request-ID": run_id})
            assert status == 202, body
        status, body = http.call(f"{url}/v1/jobs/stopped/cancel", KEY, {})
        assert status == 200, body

        wait(lambda: counts(runs(cp, ns, "echo-twice")) ==
             {"started": 1, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0}, 30, "echo-twice counted")
        gpu = wait(lambda: (r := runs(cp, ns, "on-gpu")) and counts(r) ==
                   {"started": 2, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 1} and r, 30,
                   "on-gpu counted")
        assert gpu["lastRunAt"].endswith("Z") and "lastFailure" not in gpu
        # The operator's fields are still there, each field with its own manager.
        planner = get(cp, ns, "planner", "on-gpu")
        assert planner is not None
        assert planner["status"]["phase"] == "Valid" and ready(cp, ns, "on-gpu")["status"] == "True"
        shown = json.loads(cp.kubectl("get", "planner", "on-gpu", "-n", ns, "-o", "json", "--show-managed-fields",
                                      check=True).stdout)
        managers = {m["manager"]: m for m in shown["metadata"]["managedFields"] if m.get("subresource") == "status"}
        assert set(managers) == {"switchyard-operator", FIELD_MANAGER}
        assert list(managers[FIELD_MANAGER]["fieldsV1"]["f:status"]) == ["f:runs"]
        assert "f:runs" not in managers["switchyard-operator"]["fieldsV1"]["f:status"]
        # The operator writes its status again (a new generation): the counts stay.
        cp.kubectl("patch", "planner", "on-gpu", "-n", ns, "--type=merge", "-p",
                   '{"spec": {"steps": [{"name": "only", "model": "BAAI/bge-m3", "operation": "encode", '
                   '"params": {"v": 2}}]}}', check=True)
        generation = get(cp, ns, "planner", "on-gpu")["metadata"]["generation"]
        wait(lambda: (ready(cp, ns, "on-gpu") or {}).get("observedGeneration") == generation, 30,
             "the operator's status for the new generation")
        assert counts(runs(cp, ns, "on-gpu")) == {"started": 2, "running": 1, "succeeded": 0, "failed": 0,
                                                  "cancelled": 1}
        # And the gateway writes again beside them.
        status, body = http.call(f"{url}/v1/jobs/waits/cancel", KEY, {})
        assert status == 200, body
        wait(lambda: counts(runs(cp, ns, "on-gpu")) ==
             {"started": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 2}, 30, "the second cancel")
        assert ready(cp, ns, "on-gpu")["observedGeneration"] == generation
        assert get(cp, ns, "planner", "on-gpu")["status"]["phase"] == "Valid"
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait(10)
        if gateway is not None:
            gateway.kill()
            print(gateway.tail(40))
        op.kill()
        print(op.tail(40))
