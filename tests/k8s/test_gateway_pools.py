"""/v1/pools in cluster mode: the gateway writes Pool resources as its own ServiceAccount.

A real kube-apiserver, the operator (which renders the gateway's Role and keeps the pool
Leases) and a cluster-mode gateway running with the token of the ServiceAccount the
operator made. The SDK creates, renews and deletes pools; the test reads the resulting
Pool resources and Leases from the API server.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cluster import ROOT, Proc, get, operator, wait

from switchyard.api.pool import RENEWED_AT_ANNOTATION
from switchyard.client import Client, PoolExists, PoolExpired, PoolProtected, PoolTooLarge, TooManyPools, UnknownPool
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import http
from switchyard.testing.controlplane import ControlPlane

TEAM_A = "sy-team-a-key-0123456789abcdef"
TEAM_B = "sy-team-b-key-0123456789abcdef"
BGE = "BAAI/bge-m3"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def lease_expiry(cp: ControlPlane, ns: str, pool: str) -> float | None:
    lease = get(cp, ns, "lease", f"switchyard-pool-{pool}")
    if lease is None or not lease["spec"].get("renewTime"):
        return None
    return _ts(lease["spec"]["renewTime"]) + lease["spec"]["leaseDurationSeconds"]


def add_pool_keys(cp: ControlPlane, ns: str) -> None:
    """Two tenants' keys with managePools, next to the examples' keys."""
    cp.kubectl("patch", "secret", "switchyard-demo-key", "-n", ns, "--type=merge", "-p",
               json.dumps({"stringData": {"team-a": TEAM_A, "team-b": TEAM_B}}), check=True)
    gw = get(cp, ns, "gateway", "main")
    assert gw is not None
    keys = gw["spec"]["auth"]["apiKeys"] + [
        {"name": name, "secretRef": {"name": "switchyard-demo-key", "key": name}, "managePools": True}
        for name in ("team-a", "team-b")]
    cp.kubectl("patch", "gateway", "main", "-n", ns, "--type=merge", "-p",
               json.dumps({"spec": {"auth": {"apiKeys": keys}}}), check=True)


@pytest.fixture
def cluster_gateway(installed: ControlPlane, namespace: str, tmp_path: Path, nats: NatsServer) -> Any:
    cp, ns = installed, namespace
    op = operator(cp, tmp_path, "op-gw-pools", ns)
    gateway = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        add_pool_keys(cp, ns)
        role = wait(lambda: get(cp, ns, "role", "main-gateway"), 30, "gateway Role")
        sa_kubeconfig = cp.service_account_kubeconfig(ns, "main-gateway")
        wait(lambda: get(cp, ns, "rolebinding", "main-gateway"), 30, "gateway RoleBinding")
        port = free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(sa_kubeconfig), "--nats", nats.url, "--port", str(port), "--metrics-port",
                        str(free_port()), "--log-level", "INFO"], tmp_path / "gateway-pools.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 30, "gateway ready")
        # The operator's ConfigMap carries the new keys once it recompiled the Gateway.
        wait(lambda: http.call(f"{url}/v1/pools", TEAM_A)[0] == 200, 30, "pool keys in the table")
        yield cp, ns, url, role
    finally:
        if gateway is not None:
            gateway.kill()
            print(gateway.tail(40))
        op.kill()
        print(op.tail(40))


def test_gateway_role_grants_exactly_the_pool_verbs(cluster_gateway: Any) -> None:
    cp, ns, _, role = cluster_gateway
    rules = [r for r in role["rules"] if "pools" in r["resources"]]
    assert [(r["apiGroups"], r["resources"], sorted(r["verbs"]), r.get("resourceNames")) for r in rules] == \
        [(["switchyard.dev"], ["pools"], ["create", "delete", "get", "list", "patch", "watch"], None)]
    who = f"system:serviceaccount:{ns}:main-gateway"

    def can(verb: str, resource: str) -> bool:
        r = cp.kubectl("auth", "can-i", verb, resource, "-n", ns, "--as", who)
        return r.stdout.strip() == "yes"

    assert all(can(v, "pools.switchyard.dev") for v in ("get", "list", "watch", "create", "patch", "delete"))
    # Nothing more: no update or deletecollection, no Lease writes (the operator moves Leases).
    assert not any([can("update", "pools.switchyard.dev"), can("deletecollection", "pools.switchyard.dev"),
                    can("patch", "leases"), can("create", "leases"), can("patch", "upstreams.switchyard.dev")])


def test_sdk_creates_renews_and_deletes_pool_resources(cluster_gateway: Any) -> None:
    cp, ns, url, _ = cluster_gateway
    with Client(url, TEAM_A) as sy:
        info = sy.create_pool("team-a-l4", {"l4": 1}, models=[BGE], ttl_s=30, renew=False)
        assert (info.tenant, info.workers) == ("team-a", {"l4": {"reserved": 1, "ready": 0}})
        pool = get(cp, ns, "pool", "team-a-l4")
        assert pool is not None
        assert pool["spec"]["gatewayRef"] == "main" and pool["spec"]["tenant"] == "team-a"
        assert pool["spec"]["gpus"] == {"l4": 1} and pool["spec"]["models"] == [BGE]
        assert pool["spec"]["ttlSeconds"] == 30
        created_at = _ts(pool["metadata"]["annotations"][RENEWED_AT_ANNOTATION])
        # The operator gives it a Lease; the view's expiry is the Lease's.
        first = wait(lambda: lease_expiry(cp, ns, "team-a-l4"), 30, "pool Lease")
        assert sy.get_pool("team-a-l4").expires_at is not None
        # The pool reaches the routing table: a pinned request resolves to it (no worker: 503, not 404).
        status, body = wait(lambda: (r := http.call(f"{url}/v1/encode/{BGE}", TEAM_A, {"items": [1]},
                                                    **{"X-Pool": "team-a-l4", "X-Machine-Profile": "l4"}))
                            and r[0] != 404 and r, 30, "pool in the routing table")
        assert (status, body["error"]["code"]) == (503, "no_capacity"), body
        # Another tenant: as if absent, for reading, renewing, deleting and sending work.
        with Client(url, TEAM_B) as other:
            for call in (other.get_pool, other.renew_pool, other.delete_pool):
                with pytest.raises(UnknownPool):
                    call("team-a-l4")
            assert "team-a-l4" not in [p.name for p in other.list_pools()]
        status, body = http.call(f"{url}/v1/encode/{BGE}", TEAM_B, {"items": [1]}, **{"X-Pool": "team-a-l4"})
        assert (status, body["error"]["code"]) == (404, "unknown_pool")
        # spec.poolApi holds in cluster mode too, counted from the API server (examples: 4 per tenant,
        # 8 workers per pool); team-a's pool does not count against team-b.
        with Client(url, TEAM_B) as other:
            with pytest.raises(PoolExists):
                other.create_pool("team-a-l4", {"l4": 1}, models=[BGE], ttl_s=30, renew=False)
            with pytest.raises(PoolTooLarge):
                other.create_pool("huge", {"l4": 9}, models=[BGE], renew=False)
            for i in range(4):
                other.create_pool(f"team-b-{i}", {"l4": 1}, ttl_s=60, renew=False)
            with pytest.raises(TooManyPools):
                other.create_pool("team-b-4", {"l4": 1}, ttl_s=60, renew=False)
            assert get(cp, ns, "pool", "team-b-4") is None
            assert get(cp, ns, "pool", "team-b-0")["spec"]["tenant"] == "team-b"  # type: ignore[index]
        # A renewal is the annotation; the operator moves the Lease to it.
        time.sleep(1.1)  # a renewal later than creation by more than the annotation's resolution
        renewed = sy.renew_pool("team-a-l4")
        annotation = _ts(get(cp, ns, "pool", "team-a-l4")["metadata"]["annotations"][RENEWED_AT_ANNOTATION])
        assert annotation > created_at
        wait(lambda: (lease_expiry(cp, ns, "team-a-l4") or 0) > first, 30, "the operator moved the Lease")
        assert _ts(renewed.expires_at) > first  # type: ignore[arg-type]
        with pytest.raises(PoolProtected):
            sy.delete_pool("default")
        sy.delete_pool("team-a-l4")
        wait(lambda: get(cp, ns, "pool", "team-a-l4") is None, 30, "Pool resource deleted")
        with pytest.raises(UnknownPool):
            sy.get_pool("team-a-l4")


def test_a_pool_renewed_by_the_sdk_outlives_its_ttl_and_lapses_without_it(cluster_gateway: Any) -> None:
    cp, ns, url, _ = cluster_gateway
    with Client(url, TEAM_A) as sy:
        sy.create_pool("kept", {"l4": 1}, models=[BGE], ttl_s=6)  # renewed every 2 s
        sy.create_pool("dropped", {"l4": 1}, models=[BGE], ttl_s=3, renew=False)
        first = wait(lambda: lease_expiry(cp, ns, "kept"), 30, "pool Lease")
        # Past the first lease's end, the renewed pool's Lease has moved on.
        wait(lambda: (lease_expiry(cp, ns, "kept") or 0) > first + 3 and time.time() > first + 1, 40,
             "the Lease renewed past its first expiry")
        assert sy.get_pool("kept").state == "active"
        # The other one lapses: its requests answer 410, and a renewal does not revive it.
        wait(lambda: sy.get_pool("dropped").state == "expired", 30, "unrenewed pool expires")
        with pytest.raises(PoolExpired):
            sy.renew_pool("dropped")
        _status, body = wait(lambda: (r := http.call(f"{url}/v1/encode/{BGE}", TEAM_A, {"items": [1]},
                                                     **{"X-Pool": "dropped"})) and r[0] == 410 and r, 30,
                             "410 for the lapsed pool")
        assert body["error"]["code"] == "pool_expired"
        sy.delete_pool("dropped")
        sy.delete_pool("kept")
        assert sy.renewing() == []
