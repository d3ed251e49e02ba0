"""The operator against a real kube-apiserver, running as its own service account."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import LOOP_PLANNER, OPERATOR_NS, ROOT, Proc, get, kubectl_json, operator, wait

from switchyard.testing.controlplane import ControlPlane

EXAMPLES = ROOT / "examples"


@pytest.fixture
def op(installed: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Proc]:
    proc = operator(installed, tmp_path, "op-a", namespace)
    yield proc
    proc.kill()
    print(proc.tail(60))  # shown when the test failed


def apply_examples(cp: ControlPlane, ns: str) -> None:
    cp.kubectl("apply", "-n", ns, "-f", str(EXAMPLES), check=True)


def routing(cp: ControlPlane, ns: str) -> dict:
    cm = get(cp, ns, "configmap", "main-routing")
    return json.loads(cm["data"]["routing.json"]) if cm else {}


def ready(cp: ControlPlane, ns: str, kind: str, name: str) -> dict | None:
    obj = get(cp, ns, kind, name)
    conds = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
    return conds.get("Ready")


def test_apply_creates_children_with_owner_references(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    table = wait(lambda: routing(cp, ns), 30, "routing ConfigMap", ) or {}
    assert set(table["models"]) == {"switchyard/echo", "sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-m3"}
    assert all(len(k["sha256"]) == 64 for k in table["keys"])
    assert "sy-demo-key" not in json.dumps(table)  # keys only as hashes
    gw = get(cp, ns, "gateway", "main")
    for kind, name in [("configmap", "main-routing"), ("deployment", "main-gateway"), ("service", "main-gateway"),
                       ("serviceaccount", "main-gateway"), ("role", "main-gateway"),
                       ("rolebinding", "main-gateway")]:
        child = wait(lambda: get(cp, ns, kind, name), 10, f"{kind}/{name}")
        refs = child["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "name": "main",
                         "uid": gw["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    for up in ("echo", "minilm.cpu", "minilm.l4", "bge-m3"):
        so = wait(lambda: get(cp, ns, "scaledobject", up), 10, f"ScaledObject {up}")
        assert so["metadata"]["ownerReferences"][0]["kind"] == "Upstream"
    # minilm's workers are rendered from its template: one Deployment per machine profile, at zero
    # (KEDA's to raise), scheduled as the Gateway's machineProfiles say, and the worker Service.
    for name in ("minilm-cpu", "minilm-l4"):
        dep = wait(lambda: get(cp, ns, "deployment", name), 10, f"rendered Deployment {name}")
        assert dep["metadata"]["ownerReferences"][0]["kind"] == "Upstream" and dep["spec"]["replicas"] == 0
        assert get(cp, ns, "scaledobject", name.replace("-", ".", 1))["spec"]["scaleTargetRef"] == {"name": name}
    gpu = get(cp, ns, "deployment", "minilm-l4")["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert wait(lambda: get(cp, ns, "service", "minilm-worker"), 10, "rendered worker Service")
    so = get(cp, ns, "scaledobject", "bge-m3")["spec"]
    counts = (so["idleReplicaCount"], so["minReplicaCount"], so["maxReplicaCount"], so["cooldownPeriod"])
    assert counts == (0, 1, 8, 600)
    assert so["scaleTargetRef"] == {"name": "bge-m3-worker"}
    assert so["triggers"][0]["type"] == "external-push"
    assert so["triggers"][0]["metadata"]["scalerAddress"] == f"main-gateway.{ns}.svc:9091"
    assert "idleReplicaCount" not in get(cp, ns, "scaledobject", "echo")["spec"]  # minReplicas 1
    lease = wait(lambda: get(cp, ns, "lease", "switchyard-pool-tenant-abc"), 10, "pool lease")
    assert lease["spec"]["leaseDurationSeconds"] == 3600
    assert wait(lambda: get(cp, ns, "pool", "default"), 10, "default pool created")
    for kind, name in [("gateway", "main"), ("upstream", "echo"), ("pool", "tenant-abc"),
                       ("planner", "embed-and-score")]:
        cond = wait(lambda: ready(cp, ns, kind, name), 20, f"{kind}/{name} Ready condition")
        assert cond["status"] == "True", cond
    gw = get(cp, ns, "gateway", "main")
    assert gw["status"]["observedGeneration"] == gw["metadata"]["generation"]
    assert gw["status"]["configEpoch"] == table["epoch"] and gw["status"]["configHash"] == table["hash"]
    assert get(cp, ns, "planner", "embed-and-score")["status"]["phase"] == "Valid"
    assert get(cp, ns, "pool", "tenant-abc")["status"]["expiresAt"]
    listing = cp.kubectl("get", "switchyard", "-n", ns, check=True).stdout
    for kind in ("gateway.switchyard.dev/main", "upstream.switchyard.dev/echo", "pool.switchyard.dev/tenant-abc",
                 "planner.switchyard.dev/embed-and-score"):
        assert kind in listing


def test_a_rendered_fleet_never_takes_over_a_deployment_it_does_not_own(installed: ControlPlane, namespace: str,
                                                                        op: Proc) -> None:
    cp, ns = installed, namespace
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "minilm-cpu"},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                       "template": {"metadata": {"labels": {"app": "theirs"}},
                                    "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(theirs), check=True)
    apply_examples(cp, ns)
    cond = wait(lambda: (c := ready(cp, ns, "upstream", "minilm")) and c["status"] == "False" and c, 30,
                "minilm not Ready")
    assert "Deployment 'minilm-cpu' exists and is not this Upstream's rendered fleet" in cond["message"]
    assert wait(lambda: get(cp, ns, "scaledobject", "minilm.l4"), 10, "the other fleet still rendered")
    dep = get(cp, ns, "deployment", "minilm-cpu")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "theirs:1"
    assert not dep["metadata"].get("ownerReferences") and get(cp, ns, "scaledobject", "minilm.cpu") is None


def test_change_propagates_and_hand_edits_are_repaired(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    first = wait(lambda: routing(cp, ns), 30, "routing ConfigMap")
    cp.kubectl("patch", "upstream", "echo", "-n", ns, "--type=merge", "-p",
               '{"spec": {"timeoutSeconds": 7, "scaling": {"maxReplicas": 9}}}', check=True)
    table = wait(lambda: (t := routing(cp, ns)) and t["epoch"] > first["epoch"] and t, 20, "a new epoch")
    assert table["models"]["switchyard/echo"]["timeoutSeconds"] == 7
    wait(lambda: get(cp, ns, "scaledobject", "echo")["spec"]["maxReplicaCount"] == 9, 20, "ScaledObject updated")
    # A child deleted by hand comes back; a child edited by hand is put back.
    cp.kubectl("delete", "configmap", "main-routing", "-n", ns, check=True)
    again = wait(lambda: routing(cp, ns), 20, "routing ConfigMap recreated")
    assert again["hash"] == table["hash"]
    cp.kubectl("patch", "scaledobject", "echo", "-n", ns, "--type=merge", "-p",
               '{"spec": {"maxReplicaCount": 100}}', check=True)
    wait(lambda: get(cp, ns, "scaledobject", "echo")["spec"]["maxReplicaCount"] == 9, 20, "hand edit reverted")
    cp.kubectl("delete", "deployment", "main-gateway", "-n", ns, check=True)
    wait(lambda: get(cp, ns, "deployment", "main-gateway"), 20, "gateway Deployment recreated")


def test_deleted_resource_contribution_disappears(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    wait(lambda: "BAAI/bge-m3" in routing(cp, ns).get("models", {}), 30, "bge-m3 in the table")
    wait(lambda: get(cp, ns, "scaledobject", "bge-m3"), 20, "bge-m3 ScaledObject")
    cp.kubectl("delete", "planner", "embed-and-score", "-n", ns, check=True)  # it references bge-m3
    cp.kubectl("delete", "upstream", "bge-m3", "-n", ns, check=True)
    wait(lambda: "BAAI/bge-m3" not in routing(cp, ns)["models"], 20, "bge-m3 gone from the table")
    wait(lambda: get(cp, ns, "scaledobject", "bge-m3") is None, 20, "its ScaledObject pruned")
    assert "embed-and-score" not in routing(cp, ns)["planners"]


def test_default_pool_exists_and_is_protected(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    wait(lambda: get(cp, ns, "pool", "default"), 30, "default pool")
    refused = cp.kubectl("delete", "pool", "default", "-n", ns)
    assert refused.returncode != 0 and "the default pool is protected" in refused.stderr
    assert "default" in routing(cp, ns)["pools"]


def test_invalid_planner_and_pool_get_conditions_and_events(installed: ControlPlane, namespace: str,
                                                              op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    cp.kubectl("apply", "-n", ns, "-f", "-", check=True, input=LOOP_PLANNER + """---
apiVersion: switchyard.dev/v1alpha1
kind: Pool
metadata: {name: h100s}
spec: {gpus: {h100: 1}}
""")
    cond = wait(lambda: (c := ready(cp, ns, "planner", "loop")) and c["status"] == "False" and c, 30, "Invalid")
    assert cond["reason"] == "Invalid" and "cycle" in cond["message"]
    assert get(cp, ns, "planner", "loop")["status"]["phase"] == "Invalid"
    cond = wait(lambda: (c := ready(cp, ns, "pool", "h100s")) and c["status"] == "False" and c, 30, "Invalid")
    assert "h100" in cond["message"]
    events = kubectl_json(cp, "get", "events", "-n", ns)["items"]
    assert any(e["involvedObject"]["name"] == "loop" and e["type"] == "Warning" and "cycle" in e["message"]
               for e in events)
    assert "loop" not in routing(cp, ns)["planners"] and "h100s" not in routing(cp, ns)["pools"]


@pytest.mark.parametrize("doc,expect", [
    ("kind: Upstream\nmetadata: {name: x}\nspec: {model: a/b, operations: [encode], machineProfiles: [cpu], "
     "workers: {service: w}, scaling: {minReplicas: 5, maxReplicas: 2}}", "minReplicas must be <= maxReplicas"),
    ("kind: Upstream\nmetadata: {name: x}\nspec: {model: a/b, operations: [fly], machineProfiles: [cpu], "
     "workers: {service: w}}", "Unsupported value: \"fly\""),
    ("kind: Upstream\nmetadata: {name: x}\nspec: {model: a/b, operations: [encode], machineProfiles: [cpu], "
     "defaultMachineProfile: l4, workers: {service: w}}", "defaultMachineProfile"),
    ("kind: Pool\nmetadata: {name: x}\nspec: {ttlSeconds: -1}", "spec.ttlSeconds"),
    ("kind: Gateway\nmetadata: {name: x}\nspec: {listeners: {http: {port: 70000}}}", "spec.listeners.http.port"),
    ("kind: Planner\nmetadata: {name: x}\nspec: {steps: [{name: a, model: m, operation: encode, dependsOn: [zz]}]}",
     "dependsOn"),
])
def test_invalid_resources_are_rejected_with_a_clear_message(installed: ControlPlane, namespace: str, doc: str,
                                                             expect: str) -> None:
    r = installed.kubectl("apply", "-n", namespace, "-f", "-", input="apiVersion: switchyard.dev/v1alpha1\n" + doc)
    assert r.returncode != 0
    assert expect in r.stderr, r.stderr


def test_operator_killed_mid_reconcile_leaves_no_duplicates(installed: ControlPlane, namespace: str,
                                                            tmp_path: Path) -> None:
    cp, ns = installed, namespace
    docs = "\n---\n".join(
        f"apiVersion: switchyard.dev/v1alpha1\nkind: Upstream\nmetadata: {{name: m{i}}}\n"
        f"spec: {{model: org/m{i}, operations: [encode], machineProfiles: [cpu], workers: {{service: w{i}}}}}"
        for i in range(30))
    apply_examples(cp, ns)
    cp.kubectl("apply", "-n", ns, "-f", "-", input=docs, check=True)
    first = operator(cp, tmp_path, "op-crash", ns)
    try:
        wait(lambda: len(kubectl_json(cp, "get", "scaledobjects", "-n", ns)["items"]) >= 5, 30, "reconcile under way")
    finally:
        first.kill()  # SIGKILL, mid-pass
    second = operator(cp, tmp_path, "op-after", ns)
    try:
        wait(lambda: len(routing(cp, ns).get("models", {})) == 33, 60, "all 33 models compiled")
        # 34: minilm's rendered workers are one fleet per machine profile, each with its ScaledObject.
        wait(lambda: len(kubectl_json(cp, "get", "scaledobjects", "-n", ns)["items"]) == 34, 30, "34 ScaledObjects")
        for kind in ("configmaps", "deployments", "services", "roles", "rolebindings", "leases"):
            names = [o["metadata"]["name"] for o in kubectl_json(cp, "get", kind, "-n", ns)["items"]]
            assert len(names) == len(set(names))
        managed = kubectl_json(cp, "get", "configmaps", "-n", ns, "-l",
                               "app.kubernetes.io/managed-by=switchyard-operator")["items"]
        assert [c["metadata"]["name"] for c in managed] == ["main-routing"]
    finally:
        second.kill()


def test_two_replicas_one_leader_and_takeover(installed: ControlPlane, namespace: str, tmp_path: Path) -> None:
    cp, ns = installed, namespace
    lease_name = "switchyard-operator"
    a = operator(cp, tmp_path, "op-a", ns)
    b = operator(cp, tmp_path, "op-b", ns)
    try:
        # An earlier test's operator may still hold the lease: it is taken over once it lapses.
        holder = wait(lambda: (h := get(cp, OPERATOR_NS, "lease", lease_name)["spec"]["holderIdentity"])
                      in ("op-a", "op-b") and h, 30, "a leader")
        apply_examples(cp, ns)
        wait(lambda: routing(cp, ns), 30, "the leader reconciles")
        leader, standby = (a, b) if holder == "op-a" else (b, a)
        leader.kill()  # SIGKILL: no graceful release; the standby waits out the lease
        new = wait(lambda: (h := get(cp, OPERATOR_NS, "lease", lease_name)["spec"]["holderIdentity"]) != holder and h,
                   30, "takeover")
        assert new == ("op-b" if holder == "op-a" else "op-a")
        cp.kubectl("patch", "upstream", "echo", "-n", ns, "--type=merge", "-p",
                   '{"spec": {"timeoutSeconds": 3}}', check=True)
        wait(lambda: routing(cp, ns)["models"]["switchyard/echo"]["timeoutSeconds"] == 3, 30, "the new leader acts")
        assert "became leader" in standby.tail(200)
    finally:
        a.kill()
        b.kill()



def test_operator_survives_an_api_server_restart(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_examples(cp, ns)
    wait(lambda: routing(cp, ns), 30, "routing ConfigMap")
    cp.restart_apiserver()
    cp.kubectl("patch", "upstream", "echo", "-n", ns, "--type=merge", "-p", '{"spec": {"timeoutSeconds": 11}}',
               check=True)
    wait(lambda: routing(cp, ns)["models"]["switchyard/echo"]["timeoutSeconds"] == 11, 60,
         "change after the restart propagates")


def test_an_operator_scoped_to_namespaces_never_touches_another(installed: ControlPlane, namespace: str,
                                                                tmp_path: Path) -> None:
    """`--namespaces` bounds what the operator reads and writes. A leader once found its namespaces
    by listing every namespace's resources, and then reconciled them all: an operator scoped to one
    namespace rendered, and renewed pool Leases in, namespaces it was never given."""
    cp, ns = installed, namespace
    other = f"{ns[:50]}-other"
    cp.kubectl("create", "namespace", other, check=True)
    apply_examples(cp, other)
    apply_examples(cp, ns)
    proc = operator(cp, tmp_path, "op-scoped", ns)
    try:
        wait(lambda: routing(cp, ns), 60, "the routing table in the operator's namespace")
        # Past its first round as leader and one resync (every 5 s): under the old discovery both had
        # rendered the other namespace's table at once. An absence needs a window; this is it.
        time.sleep(6)
        assert get(cp, other, "configmap", "main-routing") is None
        assert not (get(cp, other, "upstream", "echo").get("status") or {})
        assert not [e for e in kubectl_json(cp, "get", "events", "-n", other)["items"]
                    if (e.get("source") or {}).get("component") == "switchyard-operator"]
    finally:
        proc.kill()
        print(proc.tail(60))
