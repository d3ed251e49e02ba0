"""Scale from zero that really happens: from a request through the SDK to a worker pod and back to zero.

Real KEDA, kube-apiserver, kube-controller-manager (Deployment, ReplicaSet, HPA and
EndpointSlice controllers), nats-server, the operator, a cluster-mode gateway and worker
processes. The kubelet's part is played by the test node (switchyard/testing/node.py), the
one stand-in: it runs the pods the ReplicaSet creates as local processes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from switchyard.client import Accepted, Client, InferenceResult
from switchyard.natsserver import NatsServer
from switchyard.testing.coldstart import FLEET, KEY, MODEL, NODE_LABELS, ColdStartStack, wait
from switchyard.testing.controlplane import ControlPlane
from switchyard.testing.keda import KedaOperator
from switchyard.testing.node import TestNode

FAST = {"sleep_s": 0}


def test_a_request_at_zero_starts_a_worker_pod_completes_and_the_fleet_returns_to_zero(
        installed: ControlPlane, keda: KedaOperator, keda_bin: Path, namespace: str, tmp_path: Path,
        nats: NatsServer) -> None:
    # The latch handler (switchyard/testing/handlers.py) echoes at once, or, for the held item, once
    # the test creates a file: that item keeps the lane's demand above zero, so the fleet stays up
    # through the warm checks however slow the machine (a 2 s cooldown once scaled it away first).
    release = tmp_path / "release-held"
    with ColdStartStack(installed, keda_bin, namespace, nats.url, tmp_path, cooldown=2, polling=1,
                        handler="switchyard.testing.handlers:latch") as stack, \
            Client(stack.url, KEY, timeout=30) as client, ThreadPoolExecutor(1) as pool:
        node = stack.node
        assert node is not None
        assert stack.replicas() == 0 and not stack.pods()

        # Accepted at zero: 202s, the items queued for the fleet.
        accepted = [client.encode(MODEL, [f"queued-{i}"], params=FAST) for i in range(3)]
        assert all(isinstance(a, Accepted) for a in accepted), accepted
        held = client.encode(MODEL, ["held"], params={"until": str(release)})
        assert isinstance(held, Accepted), held
        # The SDK call that waits for capacity, while the loop runs.
        waiting = pool.submit(client.encode, MODEL, ["cold"], params=FAST, wait_for_capacity=True,
                              capacity_timeout=120, poll_interval=0.2)

        wait(lambda: stack.metric('switchyard_gateway_scaler_pushes_total{active="true"}') >= 1, 30,
             "StreamIsActive pushed true")
        wait(lambda: stack.replicas() == 1, 30, lambda: f"KEDA scaled {FLEET} to 1\n{stack.log_tails()}")
        (pod,) = wait(lambda: stack.pods(), 30, "the ReplicaSet's pod")
        name = pod["metadata"]["name"]
        # Admitted in a namespace that enforces Pod Security "restricted"; scheduled as the Gateway's
        # cpu machine profile says, onto the test node that matches it.
        assert stack.get("namespace", namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] \
            == "restricted"
        assert pod["spec"]["nodeSelector"] == NODE_LABELS
        wait(lambda: stack.get("pod", name)["spec"].get("nodeName") == node.name, 30, "the pod bound")
        wait(lambda: node.event_times("started"), 30, lambda: f"the test node started the worker\n{stack.log_tails()}")

        result = waiting.result(timeout=120)
        assert isinstance(result, InferenceResult) and result.items == [{"text": "cold"}]
        for i, a in enumerate(accepted):  # nothing accepted is lost
            done = client.wait_for_job(a, 60, poll_interval=0.2)
            assert done.items == [{"text": f"queued-{i}"}], done

        # Ready: the real EndpointSlice controller publishes the pod, so the gateway routes to it at once,
        # and the operator's next pass reports it in the Upstream's status.
        wait(lambda: name in stack.ready_endpoints(), 30, lambda: f"{name} a ready endpoint\n{stack.log_tails()}")
        wait(lambda: stack.get("upstream", "echo")["status"]["liveWorkers"] == {"cpu": 1}, 60,
             lambda: f"liveWorkers\n{stack.get('upstream', 'echo').get('status')}\n{stack.log_tails()}")
        warm = wait(lambda: client.encode(MODEL, ["warm"], params=FAST), 30, "a synchronous answer")
        assert isinstance(warm, InferenceResult) and warm.items == [{"text": "warm"}], warm

        # A pod deleted with an item in flight: SIGTERM, the worker finishes the item, then exits.
        wait(lambda: stack.metric("switchyard_gateway_worker_in_flight{") >= 1, 30, "the held item in flight")
        installed.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=True)
        wait(lambda: "SIGTERM" in [w for _, p, w in node.events if p == name], 60, f"{name} sent SIGTERM")
        release.touch()
        done = client.wait_for_job(held, 60, poll_interval=0.2)
        assert done.items == [{"text": "held"}], done
        wait(lambda: "removed" in [w for _, p, w in node.events if p == name], 60, f"{name} removed")
        _drained(node, name, in_flight=1)

        # Idle: after the cooldown KEDA scales to 0, the ReplicaSet's new pod is deleted, and it drains too.
        wait(lambda: stack.replicas() == 0, 60, lambda: f"KEDA scaled {FLEET} back to 0\n{stack.log_tails()}")
        wait(lambda: not stack.pods(), 60, lambda: f"the pods removed\n{stack.log_tails()}")
        for other in {p for _, p, w in node.events if w == "started"} - {name}:
            _scaled_down(node, other)


def _scaled_down(node: TestNode, pod: str) -> None:
    """The ReplicaSet's replacement pod, stopped by the scale to zero: drained if it had started
    pulling; if the SIGTERM came while it was still starting, it never began and exits 0
    (switchyard/earlystop.py), or -15 when it came before Python ran any of our code at all."""
    what = [w for _, p, w in node.events if p == pod]
    log = node.log_tail(pod, 200)
    if '"worker started"' in log:
        _drained(node, pod, in_flight=0)
        return
    assert "SIGTERM" in what and "SIGKILL" not in what, what
    assert "exited 0" in what or ("exited -15" in what and not log.strip()), (what, log)


def _drained(node: TestNode, pod: str, in_flight: int) -> None:
    """SIGTERM, then the worker stopped pulling, finished what it held, and exited 0 within its grace."""
    what = [w for _, p, w in node.events if p == pod]
    assert "SIGTERM" in what and "exited 0" in what and "SIGKILL" not in what, what
    log = node.log_tail(pod, 200)
    stopping = next(json.loads(line) for line in log.splitlines() if '"worker stopping"' in line)
    assert stopping["in_flight"] == in_flight, stopping
    assert "worker stopped" in log and "drain timed out" not in log, log
