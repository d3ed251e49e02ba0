"""manifests/nats (one server) and manifests/nats-cluster (three): what they promise, checked in the files.

That the cluster config really forms a JetStream cluster is checked with real nats-servers
in tests/integration/test_nats_cluster.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SINGLE, CLUSTER = ROOT / "manifests/nats", ROOT / "manifests/nats-cluster"


def objects(directory: Path) -> list[dict[str, Any]]:
    files = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    return [doc for f in files for doc in yaml.safe_load_all((directory / f).read_text()) if doc]


def one(directory: Path, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects(directory) if o["kind"] == kind and o["metadata"]["name"] == name)


def conf(directory: Path) -> str:
    """nats.conf without comments."""
    return re.sub(r"#.*", "", (directory / "nats.conf").read_text())


@pytest.mark.parametrize("directory", [SINGLE, CLUSTER], ids=["nats", "nats-cluster"])
def test_pods_meet_pod_security_restricted(directory: Path) -> None:
    pod = one(directory, "StatefulSet", "nats")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPath" not in v for v in pod.get("volumes", []))


@pytest.mark.parametrize("directory", [SINGLE, CLUSTER], ids=["nats", "nats-cluster"])
def test_jetstream_on_a_volume_with_fsync_on_every_write(directory: Path) -> None:
    sts = one(directory, "StatefulSet", "nats")
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    text = conf(directory)
    assert re.search(r"store_dir:\s*" + re.escape(mounts["data"]) + r"\s", text)
    assert re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", text), "the fsync choice of docs/security.md"
    # Both offer the same Service, so a Gateway's spec.nats.url does not depend on which one runs.
    assert one(directory, "Service", "nats")["spec"]["ports"][0]["port"] == 4222


def test_cluster_is_three_servers_routed_to_each_other() -> None:
    sts = one(CLUSTER, "StatefulSet", "nats")
    replicas, service = sts["spec"]["replicas"], sts["spec"]["serviceName"]
    assert replicas == 3 and sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = one(CLUSTER, "Service", service)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert next(p for p in headless["spec"]["ports"] if p["name"] == "cluster")["port"] == 6222
    text = conf(CLUSTER)
    block = re.search(r"cluster\s*\{(.*?)\n\}", text, re.S)
    assert block, "nats.conf has no cluster block"
    assert re.search(r"\bname:\s*\S+", block.group(1))
    routes = re.findall(r"nats://([\w.-]+):(\d+)", block.group(1))
    assert sorted(routes) == [(f"nats-{i}.{service}", "6222") for i in range(replicas)]
    assert re.search(r"server_name:\s*\$POD_NAME", text), "JetStream in a cluster needs a stable name per server"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "cluster", "containerPort": 6222} in container["ports"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]


def test_one_can_be_applied_over_the_other() -> None:
    """A StatefulSet's spec is immutable but for replicas, template and a few more: these must agree."""
    single, cluster = (one(d, "StatefulSet", "nats")["spec"] for d in (SINGLE, CLUSTER))
    for field in ("serviceName", "selector", "podManagementPolicy", "volumeClaimTemplates"):
        assert single.get(field) == cluster.get(field), field


def test_cluster_keeps_quorum_through_drains_and_lets_routes_in() -> None:
    pdb = one(CLUSTER, "PodDisruptionBudget", "nats")
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = one(CLUSTER, "NetworkPolicy", "nats-ingress")
    routes = [r for r in policy["spec"]["ingress"] if {"protocol": "TCP", "port": 6222} in r.get("ports", [])]
    assert routes and all(r["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
                          for r in routes)


@pytest.mark.parametrize("directory", [SINGLE, CLUSTER], ids=["nats", "nats-cluster"])
def test_kustomize_renders(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["metadata"].get("namespace") for d in rendered} == {"switchyard-system"}
    cm = next(d for d in rendered if d["kind"] == "ConfigMap")
    sts = next(d for d in rendered if d["kind"] == "StatefulSet")
    assert sts["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]
    assert all(d["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "0" for d in rendered)
