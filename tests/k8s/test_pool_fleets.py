"""Pools with dedicated workers: the operator against a real kube-apiserver, as its service account.

No Deployment controller runs here, so a pool fleet's pods never exist; where a test needs a
Deployment's readyReplicas it writes them to the status subresource itself, standing in for
that controller (the KEDA stack in test_pools_e2e.py runs the real one, and real workers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cluster import ROOT, Proc, get, kubectl_json, operator, wait
from test_argocd_health import health as argocd_health  # manifests/argocd/health.lua in a real Lua 5.1

from switchyard.api.pool import RENEWED_AT_ANNOTATION
from switchyard.contracts import POOL_API_LABEL
from switchyard.operator.children import RENEW_SKEW_S
from switchyard.testing.controlplane import ControlPlane

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def op(installed: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Proc]:
    installed.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"), check=True)
    proc = operator(installed, tmp_path, "op-pools", namespace)
    yield proc
    proc.kill()
    print(proc.tail(60))  # shown when the test failed


def apply_pool(cp: ControlPlane, ns: str, name: str, labels: dict[str, str] | None = None, **spec: Any) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", check=True, input=json.dumps(
        {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool", "metadata": {"name": name, "labels": labels or {}},
         "spec": spec}))


def ready(cp: ControlPlane, ns: str, pool: str) -> dict[str, Any] | None:
    conds = ((get(cp, ns, "pool", pool) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), None)


def renew_time(cp: ControlPlane, ns: str, pool: str) -> float:
    lease = get(cp, ns, "lease", f"switchyard-pool-{pool}")
    assert lease is not None
    return datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()


def annotate(cp: ControlPlane, ns: str, pool: str, ts: float) -> None:
    """What a gateway does on POST /v1/pools/{name}/renew."""
    value = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cp.kubectl("annotate", "pool", pool, "-n", ns, "--overwrite", f"{RENEWED_AT_ANNOTATION}={value}", check=True)


def annotate_and_wait(cp: ControlPlane, ns: str, pool: str, ts: float, gpus: dict[str, int]) -> None:
    """Annotate with a spec change, which bumps the generation: status.observedGeneration then
    tells when a pass has seen the annotation."""
    value = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cp.kubectl("patch", "pool", pool, "-n", ns, "--type=merge", "-p", json.dumps(
        {"metadata": {"annotations": {RENEWED_AT_ANNOTATION: value}}, "spec": {"gpus": gpus}}), check=True)
    generation = get(cp, ns, "pool", pool)["metadata"]["generation"]
    wait(lambda: get(cp, ns, "pool", pool)["status"]["observedGeneration"] == generation, 30, "a pass saw it")


def routing_pools(cp: ControlPlane, ns: str) -> dict[str, Any]:
    cm = get(cp, ns, "configmap", "main-routing")
    return json.loads(cm["data"]["routing.json"])["pools"] if cm else {}


def test_a_pool_runs_its_models_fleets_at_the_reserved_size_and_reports_ready_workers(
        installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_pool(cp, ns, "team-a", gpus={"cpu": 1, "l4": 2}, models=[MINILM], ttlSeconds=3600)
    pool_uid = wait(lambda: get(cp, ns, "pool", "team-a"), 10, "the pool")["metadata"]["uid"]
    for name, profile, size in (("pool-team-a-minilm-cpu", "cpu", 1), ("pool-team-a-minilm-l4", "l4", 2)):
        dep = wait(lambda: get(cp, ns, "deployment", name), 30, f"pool fleet {name}")
        assert dep["spec"]["replicas"] == size  # reserved: held by the operator, not KEDA
        assert dep["metadata"]["ownerReferences"] == [{"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool",
                                                       "name": "team-a", "uid": pool_uid, "controller": True,
                                                       "blockOwnerDeletion": True}]
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--pool") + 1] == "team-a" and args[args.index("--machine-profile") + 1] == profile
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["switchyard.dev/pool"] == "team-a" and labels["switchyard.dev/upstream"] == "minilm"
    scaled = {o["metadata"]["name"] for o in kubectl_json(cp, "get", "scaledobjects", "-n", ns)["items"]}
    assert "minilm.cpu" in scaled and not [s for s in scaled if "team-a" in s]  # no ScaledObject for a pool
    # The Upstream's own fleets stay as they were: at zero, scaled by KEDA on the default pool's lanes only.
    assert get(cp, ns, "deployment", "minilm-cpu")["spec"]["replicas"] == 0
    assert get(cp, ns, "scaledobject", "minilm.cpu")["spec"]["triggers"][0]["metadata"]["pool"] == "default"

    cond = wait(lambda: (c := ready(cp, ns, "team-a")) and c["reason"] == "WorkersStarting" and c, 30,
                "WorkersStarting")
    assert cond["status"] == "False" and "0 of 3 reserved workers ready" in cond["message"]
    status = get(cp, ns, "pool", "team-a")["status"]
    assert status["workers"] == {"cpu": {"reserved": 1, "ready": 0}, "l4": {"reserved": 2, "ready": 0}}
    assert status["phase"] == "Active"
    assert argocd_health(get(cp, ns, "pool", "team-a"))["status"] == "Progressing"  # not Degraded: on its way

    # Standing in for the Deployment controller: the fleets report their pods ready.
    for name, size in (("pool-team-a-minilm-cpu", 1), ("pool-team-a-minilm-l4", 2)):
        cp.kubectl("patch", "deployment", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
                   json.dumps({"status": {"replicas": size, "readyReplicas": size}}), check=True)
    cond = wait(lambda: (c := ready(cp, ns, "team-a")) and c["status"] == "True" and c, 30, "Ready")
    assert cond["reason"] == "WorkersReady" and "all 3 reserved workers ready" in cond["message"]
    assert get(cp, ns, "pool", "team-a")["status"]["workers"] == {
        "cpu": {"reserved": 1, "ready": 1}, "l4": {"reserved": 2, "ready": 2}}
    assert argocd_health(get(cp, ns, "pool", "team-a"))["status"] == "Healthy"

    # Fewer reserved: the fleet follows, and a profile no longer reserved is retired.
    cp.kubectl("patch", "pool", "team-a", "-n", ns, "--type=merge", "-p", '{"spec": {"gpus": {"cpu": 0, "l4": 1}}}',
               check=True)
    wait(lambda: get(cp, ns, "deployment", "pool-team-a-minilm-l4")["spec"]["replicas"] == 1, 30, "l4 fleet at 1")
    # Retired in two steps: scaled to 0 (its workers drain as in any scale-down), deleted once it has no pods.
    wait(lambda: get(cp, ns, "deployment", "pool-team-a-minilm-cpu")["spec"]["replicas"] == 0, 30, "cpu fleet at 0")
    cp.kubectl("patch", "deployment", "pool-team-a-minilm-cpu", "-n", ns, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"replicas": 0, "readyReplicas": 0}}), check=True)  # the controller's part
    wait(lambda: get(cp, ns, "deployment", "pool-team-a-minilm-cpu") is None, 30, "the cpu fleet deleted")

    # The gateway serves /v1/pools in cluster mode: its Role grants exactly that on Pools, and on
    # Planners only the patch of their status (the run counts, gateway/plannerstatus.py).
    role = get(cp, ns, "role", "main-gateway")
    assert [r for r in role["rules"] if r["apiGroups"] == ["switchyard.dev"]] == [
        {"apiGroups": ["switchyard.dev"], "resources": ["pools"],
         "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["switchyard.dev"], "resources": ["planners/status"], "verbs": ["patch"]}]


def test_a_renewal_annotation_extends_the_lease_forward_only(installed: ControlPlane, namespace: str,
                                                              op: Proc) -> None:
    cp, ns = installed, namespace
    apply_pool(cp, ns, "renewed", gpus={"cpu": 1}, models=[MINILM], ttlSeconds=60)
    wait(lambda: get(cp, ns, "lease", "switchyard-pool-renewed"), 30, "the pool's Lease")
    first = renew_time(cp, ns, "renewed")
    expires = wait(lambda: get(cp, ns, "pool", "renewed")["status"]["expiresAt"], 30, "expiresAt")

    later = max(time.time(), first + 1.5)  # a renewal visibly later than the lease's creation
    annotate(cp, ns, "renewed", later)
    wait(lambda: renew_time(cp, ns, "renewed") == pytest.approx(later, abs=1e-5), 30, "renewTime moved")
    wait(lambda: get(cp, ns, "pool", "renewed")["status"]["expiresAt"] > expires, 30, "expiresAt moved")

    annotate_and_wait(cp, ns, "renewed", first, {"cpu": 2})  # backwards: ignored
    assert renew_time(cp, ns, "renewed") == pytest.approx(later, abs=1e-5)
    annotate(cp, ns, "renewed", time.time() + 3600)  # a clock an hour ahead: at most now + skew
    wait(lambda: renew_time(cp, ns, "renewed") > later, 30, "renewTime moved again")
    assert renew_time(cp, ns, "renewed") <= time.time() + RENEW_SKEW_S


def test_a_lapsed_lease_retires_the_fleets_marks_the_pool_expired_and_no_renewal_revives_it(
        installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_pool(cp, ns, "brief", gpus={"cpu": 1}, models=[MINILM], ttlSeconds=10)
    wait(lambda: get(cp, ns, "deployment", "pool-brief-minilm-cpu"), 30, "the pool fleet")
    assert "brief" in routing_pools(cp, ns)
    # Nothing renews it: the operator's own requeue at the expiry retires the fleet.
    cond = wait(lambda: (c := ready(cp, ns, "brief")) and c["reason"] == "LeaseExpired" and c, 40, "LeaseExpired")
    assert cond["status"] == "False"
    wait(lambda: get(cp, ns, "deployment", "pool-brief-minilm-cpu") is None, 30, "the fleet deleted")
    status = get(cp, ns, "pool", "brief")["status"]
    assert status["phase"] == "Expired" and "workers" not in status
    wait(lambda: "brief" not in routing_pools(cp, ns), 30, "the pool left out of the routing table")

    lapsed = renew_time(cp, ns, "brief")
    annotate_and_wait(cp, ns, "brief", time.time(), {"cpu": 2})  # made after the lapse: revives nothing
    assert renew_time(cp, ns, "brief") == lapsed
    assert get(cp, ns, "deployment", "pool-brief-minilm-cpu") is None
    assert ready(cp, ns, "brief")["reason"] == "LeaseExpired"


def test_deleting_the_pool_removes_its_fleets(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    apply_pool(cp, ns, "gone", gpus={"l4": 1}, models=[MINILM], ttlSeconds=3600)
    wait(lambda: get(cp, ns, "deployment", "pool-gone-minilm-l4"), 30, "the pool fleet")
    cp.kubectl("delete", "pool", "gone", "-n", ns, check=True)
    # No garbage collector runs here: the operator removes the fleet itself.
    wait(lambda: get(cp, ns, "deployment", "pool-gone-minilm-l4") is None, 30, "the pool fleet removed")
    assert get(cp, ns, "deployment", "minilm-l4") is not None  # the Upstream's own fleet stays


def test_what_a_pool_cannot_run_is_its_ready_condition(installed: ControlPlane, namespace: str, op: Proc) -> None:
    cp, ns = installed, namespace
    # echo's workers are your own Deployment (no template): the operator cannot render them for a pool.
    apply_pool(cp, ns, "mixed", gpus={"cpu": 1}, models=["switchyard/echo", MINILM], ttlSeconds=3600)
    cond = wait(lambda: (c := ready(cp, ns, "mixed")) and c["reason"] == "WorkersNotRendered" and c, 30,
                "WorkersNotRendered")
    assert cond["status"] == "False"
    assert "Upstream 'echo' has no workers.template" in cond["message"] and "--pool mixed" in cond["message"]
    assert wait(lambda: get(cp, ns, "deployment", "pool-mixed-minilm-cpu"), 30, "what it can run, it runs")
    assert "mixed" in routing_pools(cp, ns)  # still a pool: its requests route, to workers you run
    events = kubectl_json(cp, "get", "events", "-n", ns)["items"]
    assert any(e["involvedObject"]["name"] == "mixed" and e["reason"] == "WorkersNotRendered" for e in events)

    long = "p" * 55  # a valid pool name, but pool-<pool>-minilm-cpu is past 63 characters
    apply_pool(cp, ns, long, gpus={"cpu": 1}, models=[MINILM], ttlSeconds=3600)
    cond = wait(lambda: (c := ready(cp, ns, long)) and c["reason"] == "WorkersNotRendered" and c, 30, "too long")
    assert "longer than 63 characters" in cond["message"]

    # A pool made through /v1/pools (the gateway labels it) never runs more than spec.poolApi allows,
    # whatever its spec says (default maxWorkersPerPool 8); a pool you apply yourself is not bound.
    apply_pool(cp, ns, "big", {POOL_API_LABEL: "true"}, gpus={"cpu": 9}, models=[MINILM], ttlSeconds=3600)
    apply_pool(cp, ns, "mine", gpus={"cpu": 9}, models=[MINILM], ttlSeconds=3600)
    cond = wait(lambda: (c := ready(cp, ns, "big")) and c["reason"] == "WorkersNotRendered" and c, 30, "too big")
    assert "more than Gateway 'main' spec.poolApi.maxWorkersPerPool (8)" in cond["message"]
    assert wait(lambda: get(cp, ns, "deployment", "pool-mine-minilm-cpu"), 30, "mine")["spec"]["replicas"] == 9
    assert get(cp, ns, "deployment", "pool-big-minilm-cpu") is None

    # A Deployment of the fleet's name that the pool does not own is left alone.
    theirs = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pool-taken-minilm-cpu"},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                       "template": {"metadata": {"labels": {"app": "theirs"}},
                                    "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}}}
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(theirs), check=True)
    apply_pool(cp, ns, "taken", gpus={"cpu": 1}, models=[MINILM], ttlSeconds=3600)
    cond = wait(lambda: (c := ready(cp, ns, "taken")) and c["reason"] == "WorkersNotRendered" and c, 30, "taken")
    assert "Deployment 'pool-taken-minilm-cpu' exists and is not this pool's fleet" in cond["message"]
    dep = get(cp, ns, "deployment", "pool-taken-minilm-cpu")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "theirs:1" and dep["spec"]["replicas"] == 0
