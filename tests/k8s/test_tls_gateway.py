"""spec.listeners.tls against a real API server: the CRD takes it, the operator mounts the Secret."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import ROOT, Proc, get, operator, wait

from switchyard.testing.controlplane import ControlPlane

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from tlscerts import TestCA


@pytest.fixture
def op(installed: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Proc]:
    proc = operator(installed, tmp_path, "op-tls", namespace)
    yield proc
    proc.kill()
    print(proc.tail(60))  # shown when the test failed


def pod_spec(cp: ControlPlane, ns: str) -> dict:
    dep = get(cp, ns, "deployment", "main-gateway")
    return dep["spec"]["template"]["spec"] if dep else {}


def test_the_operator_mounts_the_tls_secret_into_the_gateway(installed: ControlPlane, namespace: str, op: Proc,
                                                              tmp_path: Path) -> None:
    cp, ns = installed, namespace
    leaf = TestCA().issue(hosts=(f"main-gateway.{ns}.svc",))
    leaf.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    cp.kubectl("create", "secret", "tls", "gateway-cert", "-n", ns, "--cert", str(tmp_path / "tls.crt"),
               "--key", str(tmp_path / "tls.key"), check=True)
    cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
    wait(lambda: pod_spec(cp, ns), 30, "gateway Deployment")
    assert all(v["name"] != "tls" for v in pod_spec(cp, ns)["volumes"])

    patch = {"spec": {"listeners": {"tls": {"secretName": "gateway-cert", "minVersion": "1.3"}}}}
    cp.kubectl("patch", "gateway", "main", "-n", ns, "--type", "merge", "-p", json.dumps(patch), check=True)
    spec = wait(lambda: (s := pod_spec(cp, ns)) and any(v["name"] == "tls" for v in s["volumes"]) and s,
                30, "the Secret mounted")
    container = spec["containers"][0]
    assert {"name": "tls", "secret": {"secretName": "gateway-cert", "defaultMode": 420}} in spec["volumes"]
    assert {"name": "tls", "mountPath": "/etc/switchyard/tls", "readOnly": True} in container["volumeMounts"]
    args = container["args"]
    assert args[args.index("--tls-cert") + 1] == "/etc/switchyard/tls/tls.crt"
    assert args[args.index("--tls-min-version") + 1] == "1.3"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"

    # The API server refuses what the model refuses.
    bad = {"spec": {"listeners": {"tls": {"secretName": "gateway-cert", "minVersion": "1.1"}}}}
    r = cp.kubectl("patch", "gateway", "main", "-n", ns, "--type", "merge", "-p", json.dumps(bad))
    assert r.returncode != 0 and "minVersion" in r.stderr

    # TLS off again: the mount goes.
    cp.kubectl("patch", "gateway", "main", "-n", ns, "--type", "json",
               "-p", json.dumps([{"op": "remove", "path": "/spec/listeners/tls"}]), check=True)
    wait(lambda: (s := pod_spec(cp, ns)) and all(v["name"] != "tls" for v in s["volumes"]), 30, "the mount removed")
