"""The whole loop on a real cluster: scale from zero through KEDA to a worker pod, a pool, an OpenAI call.

Skipped unless Docker and kind are available (see conftest.py); the GitHub workflow
(.github/workflows/e2e.yaml) installs the real KEDA first. Each test makes its own namespace
with a Gateway, an API key and an echo Upstream whose workers the operator renders from the
image the tests loaded into kind, and reaches the gateway through `kubectl port-forward`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from switchyard.client import Client, InferenceResult

Cluster = Any  # conftest.Cluster: .kubectl(*args, check=True), .kubeconfig

ROOT = Path(__file__).resolve().parents[2]
KEY = "sy-e2e-key-0123456789abcdef"
MODEL = "switchyard/echo"
FLEET = "echo-cpu"  # the operator's name for the rendered fleet: <upstream>-<machineProfile>


def manifests(ns: str, image: str) -> str:
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: e2e-key, namespace: {ns}}}
stringData: {{key: {KEY}}}
---
apiVersion: switchyard.dev/v1alpha1
kind: Gateway
metadata: {{name: e2e, namespace: {ns}}}
spec:
  replicas: 1
  image: {image}
  nats: {{url: "nats://nats.switchyard-system:4222"}}
  auth:
    apiKeys:
      - {{name: e2e, secretRef: {{name: e2e-key}}, managePools: true}}
  machineProfiles: [{{name: cpu}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {{name: echo, namespace: {ns}}}
spec:
  model: {MODEL}
  operations: [encode, chat, generate]
  machineProfiles: [cpu]
  timeoutSeconds: 30
  scaling: {{minReplicas: 0, maxReplicas: 2, targetPendingPerReplica: 4, cooldownSeconds: 15,
            pollingIntervalSeconds: 2, coldStartSeconds: 60}}
  workers:
    service: echo-worker
    template:
      image: {image}
      args: [worker, --handler, "switchyard.worker.handlers:echo"]
      resources: {{requests: {{cpu: 50m, memory: 96Mi}}, limits: {{memory: 256Mi}}}}
"""


def wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def replicas(cluster: Cluster, ns: str, deployment: str) -> int | None:
    got = cluster.kubectl("get", "deployment", deployment, "-n", ns, "-o", "json", check=False)
    if got.returncode != 0:
        return None
    return int(json.loads(got.stdout)["spec"].get("replicas") or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def port_forward(cluster: Cluster, ns: str, target: str, port: int) -> Iterator[str]:
    local = free_port()
    proc = subprocess.Popen(["kubectl", f"--kubeconfig={cluster.kubeconfig}", "port-forward", "-n", ns, target,
                             f"{local}:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", local)) == 0
        wait(listening, 60, f"kubectl port-forward {target}")
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def stack(installed: Cluster, image: str) -> Iterator[tuple[Cluster, str, str]]:
    """A namespace with the Gateway (its pod Ready) and the echo Upstream at zero; the gateway's URL."""
    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    k = installed.kubectl
    k("create", "namespace", ns)
    try:
        subprocess.run(["kubectl", f"--kubeconfig={installed.kubeconfig}", "apply", "--server-side", "-f", "-"],
                       input=manifests(ns, image), text=True, check=True, capture_output=True)
        k("wait", "--for=condition=Ready", "gateway/e2e", "upstream/echo", "-n", ns, "--timeout=180s")
        k("rollout", "status", "deployment/e2e-gateway", "-n", ns, "--timeout=300s")
        wait(lambda: k("get", "scaledobject", FLEET, "-n", ns, "-o",
                       "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False).stdout == "True",
             180, "the fleet's ScaledObject Ready (KEDA reaches the gateway's scaler)")
        assert replicas(installed, ns, FLEET) == 0
        with port_forward(installed, ns, "svc/e2e-gateway", 8080) as url:
            yield installed, ns, url
    finally:
        k("delete", "namespace", ns, "--wait=false", check=False)


def test_a_request_at_zero_scales_a_worker_pod_through_keda_and_back(stack: tuple[Cluster, str, str]) -> None:
    cluster, ns, url = stack
    with Client(url, api_key=KEY, timeout=30) as client:
        out = client.encode(MODEL, ["from zero"], wait_for_capacity=True, capacity_timeout=300)
    assert isinstance(out, InferenceResult) and out.items == [{"text": "from zero"}], out
    assert (replicas(cluster, ns, FLEET) or 0) >= 1
    # The cooldown (15 s) after the last item: KEDA returns the fleet to zero and the pod goes.
    wait(lambda: replicas(cluster, ns, FLEET) == 0, 180, "KEDA scaling the fleet back to 0")
    wait(lambda: not cluster.kubectl("get", "pods", "-n", ns, "-l", f"switchyard.dev/fleet={FLEET}",
                                     "-o", "name").stdout.strip(), 120, "the worker pod gone")


def test_a_pool_runs_dedicated_workers_that_serve_its_pinned_requests(stack: tuple[Cluster, str, str]) -> None:
    cluster, ns, url = stack
    with Client(url, api_key=KEY, timeout=30) as client:
        pool = client.create_pool("e2e", {"cpu": 1}, models=[MODEL], ttl_s=120)
        assert pool.workers["cpu"]["reserved"] == 1
        wait(lambda: client.get_pool("e2e").workers["cpu"]["ready"] == 1, 300, "the pool's worker ready")
        out = client.encode(MODEL, ["pinned"], pool="e2e")
        assert isinstance(out, InferenceResult) and out.items == [{"text": "pinned"}]
        # The pool's worker served it: the Upstream's own fleet never left zero.
        assert replicas(cluster, ns, FLEET) == 0
        client.delete_pool("e2e")
    wait(lambda: not cluster.kubectl("get", "deployments", "-n", ns, "-l", "switchyard.dev/pool=e2e",
                                     "-o", "name").stdout.strip(), 120, "the pool fleet removed")


def test_an_openai_client_works_with_only_the_base_url_and_key_changed(stack: tuple[Cluster, str, str]) -> None:
    openai = pytest.importorskip("openai")
    _, _, url = stack
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, timeout=300,
                           default_headers={"Prefer": "wait=240"})  # hold through the cold start
    listed = [m.id for m in client.models.list()]
    assert MODEL in listed
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}])
    assert chat.choices and chat.choices[0].message.content
