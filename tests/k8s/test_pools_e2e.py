"""A pool with dedicated workers, end to end: from the SDK's create_pool to the workers and back.

The KEDA stack of test_scale_from_zero.py (switchyard/testing/coldstart.py): real KEDA,
kube-apiserver, kube-controller-manager, nats-server, the operator, a cluster-mode gateway
and worker processes, with the test node (switchyard/testing/node.py) as the one stand-in,
playing the kubelet. The gateway writes the Pool resource (its Role allows it), the operator
runs the pool's fleet, and the lease lapses once nobody renews it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from switchyard.client import Accepted, Client, InferenceResult, PoolExpired
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing.coldstart import FLEET, KEY, MODEL, ColdStartStack, manifests, wait
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator
from switchyard.testing.node import TestNode

POOL = "team-a"
POOL_FLEET = f"pool-{POOL}-echo-cpu"  # pool-<pool>-<upstream>-<profile>
TTL_S = 8  # renewed every ttl/3 by the SDK while the owner's client is open


class PoolStack(ColdStartStack):
    """The cold-start stack, with a key that may manage its tenant's pools."""

    def _apply(self) -> None:
        self.scaler_port = free_port()
        doc = json.loads(manifests(self.nats_url, self.scaler_port, cooldown=self.cooldown, polling=self.polling,
                                   timeout=self.timeout, handler=self.handler, model=self.model))
        for obj in doc["items"]:
            if obj["kind"] == "Gateway":
                obj["spec"]["auth"]["apiKeys"][0]["managePools"] = True
        self.cp.kubectl("apply", "-n", self.namespace, "-f", "-", check=True, input=json.dumps(doc))

    def fleet_pods(self, fleet: str) -> list[str]:
        r = self.cp.kubectl("get", "pods", "-n", self.namespace, "-l", f"switchyard.dev/fleet={fleet}", "-o", "json",
                            check=True)
        return [p["metadata"]["name"] for p in json.loads(r.stdout)["items"]]


def worker_id(node: TestNode, pod: str) -> str:
    """The id a pod's worker answers with (results' `worker`), from its own log."""
    started = wait(lambda: next((json.loads(line) for line in node.log_tail(pod, 200).splitlines()
                                 if '"worker started"' in line), None), 30, f"{pod}'s worker started")
    return str(started["worker"])


def lease_renewals(stack: PoolStack) -> int:
    """Whole TTL/3 periods the Lease's renewTime has moved past its acquireTime."""
    spec = (stack.get("lease", f"switchyard-pool-{POOL}") or {}).get("spec") or {}
    acquired, renewed = (datetime.fromisoformat(spec[k].replace("Z", "+00:00")) for k in ("acquireTime", "renewTime"))
    return int((renewed - acquired).total_seconds() // (TTL_S / 3))


def test_create_pool_brings_up_dedicated_workers_that_serve_only_the_pool_until_the_lease_lapses(
        installed: ControlPlane, keda: KedaOperator, keda_bin: Path, namespace: str, tmp_path: Path,
        nats: NatsServer) -> None:
    with PoolStack(installed, keda_bin, namespace, nats.url, tmp_path, cooldown=2, polling=1) as stack, \
            Client(stack.url, KEY, timeout=30) as user:
        node = stack.node
        assert node is not None
        owner = Client(stack.url, KEY, timeout=30)  # holds the lease: renews it until closed
        try:
            started = time.monotonic()
            info = owner.create_pool(POOL, {"cpu": 1}, models=[MODEL], ttl_s=TTL_S, renew=True)
            assert (info.name, info.models, info.gpus, info.ttl_seconds) == (POOL, [MODEL], {"cpu": 1}, TTL_S)
            assert owner.renewing() == [POOL]
            # The gateway wrote the Pool; the operator renders its fleet at the reserved size.
            pool = wait(lambda: stack.get("pool", POOL), 30, "the Pool resource")
            assert pool["spec"]["gatewayRef"] == "main" and pool["spec"]["models"] == [MODEL]
            dep = wait(lambda: stack.get("deployment", POOL_FLEET), 60, lambda: f"the pool fleet\n{stack.log_tails()}")
            assert dep["spec"]["replicas"] == 1
            args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
            assert args[args.index("--pool") + 1] == POOL

            # The Deployment and ReplicaSet controllers make the pod; the test node runs the worker. The
            # lease outlives several TTLs meanwhile: the SDK's renewals move it (through the operator).
            ready = wait(lambda: (p := user.get_pool(POOL)).ready("cpu") == p.reserved("cpu") == 1 and p, 120,
                         lambda: f"the pool's worker ready\n{stack.log_tails()}")
            assert ready.active
            print(f"pool ready {time.monotonic() - started:.1f} s after create_pool")  # a figure for docs/scaling.md
            (pod,) = stack.fleet_pods(POOL_FLEET)
            pool_worker = worker_id(node, pod)
            cond = wait(lambda: next((c for c in stack.get("pool", POOL)["status"]["conditions"]
                                      if c["type"] == "Ready" and c["status"] == "True"), None), 30, "Pool Ready")
            assert cond["reason"] == "WorkersReady"
            assert stack.get("pool", POOL)["status"]["workers"] == {"cpu": {"reserved": 1, "ready": 1}}
            # The SDK renews every ttl/3 (the gateway annotates the Pool), and the operator moves the Lease.
            wait(lambda: lease_renewals(stack) >= 2, 3 * TTL_S, lambda: f"the lease renewed\n{stack.log_tails()}")

            # Pinned requests are served by the pool's worker, and by nothing else: the Upstream's own
            # fleet is at zero, and stays there (its ScaledObject counts the default pool's lanes only).
            for i in range(5):
                r = user.encode(MODEL, [f"pinned-{i}"], pool=POOL)
                assert isinstance(r, InferenceResult) and r.items == [{"text": f"pinned-{i}"}], r
                assert r.worker == pool_worker, r
            assert stack.replicas() == 0 and not stack.fleet_pods(FLEET)

            # The pool's worker serves only the pool's lanes: an unpinned request waits for the default
            # fleet, which KEDA scales from zero, and is answered by that fleet's worker.
            shared = user.encode(MODEL, ["shared"])
            assert isinstance(shared, Accepted), shared
            done = user.wait_for_job(shared, 120, poll_interval=0.2)
            # (It may have scaled back to zero already: the test node remembers the pods it ran.)
            (shared_pod,) = {p for _, p, w in node.events if w == "started" and p.startswith(f"{FLEET}-")}
            assert done.items == [{"text": "shared"}] and done.worker == worker_id(node, shared_pod), done
        finally:
            owner.close()  # the renewal task stops with the client; the pool is not deleted
            closed = time.monotonic()

        # Nobody renews: the lease lapses, the operator retires the fleet (scaled to 0, then deleted),
        # the worker drains, and pinned requests answer 410.
        wait(lambda: stack.get("deployment", POOL_FLEET) is None, TTL_S + 90,
             lambda: f"the pool fleet removed\n{stack.log_tails()}")
        wait(lambda: not stack.fleet_pods(POOL_FLEET), 60, lambda: f"the pool's pod removed\n{stack.log_tails()}")
        print(f"pool fleet and pod gone {time.monotonic() - closed:.1f} s after the last renewer closed")
        wait(lambda: "exited 0" in [w for _, p, w in node.events if p == pod], 60, f"{pod} exited")
        what = [w for _, p, w in node.events if p == pod]
        assert "SIGTERM" in what and "SIGKILL" not in what, what  # drained within its grace period
        assert "worker stopped" in node.log_tail(pod, 200)
        with pytest.raises(PoolExpired):
            user.encode(MODEL, ["late"], pool=POOL)
        assert user.get_pool(POOL).state == "expired"
        status = stack.get("pool", POOL)["status"]
        assert status["phase"] == "Expired" and "workers" not in status
