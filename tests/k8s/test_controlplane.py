"""The test control plane is a real API server: RBAC, CRD schemas and etcd storage all apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.testing.controlplane import ControlPlane


def scaled_object(name: str, namespace: str, **spec: Any) -> str:
    return json.dumps({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                       "metadata": {"name": name, "namespace": namespace}, "spec": spec})


VALID_SPEC: dict[str, Any] = {
    "scaleTargetRef": {"name": "switchyard-worker"},
    "minReplicaCount": 0,
    "maxReplicaCount": 4,
    "triggers": [{"type": "external-push", "metadata": {"scalerAddress": "switchyard-gateway.default.svc:9090"}}],
}


def test_kubectl_lists_bootstrapped_namespaces(control_plane: ControlPlane) -> None:
    names = control_plane.kubectl("get", "namespaces", "-o", "name", check=True).stdout.split()
    assert {"namespace/default", "namespace/kube-system"} <= set(names)


def test_valid_scaled_object_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("apply", "-f", "-", input=scaled_object("worker", namespace, **VALID_SPEC), check=True)
    got = control_plane.kubectl("get", "scaledobject", "worker", "-n", namespace, "-o", "json", check=True)
    assert json.loads(got.stdout)["spec"]["triggers"][0]["metadata"]["scalerAddress"].endswith(":9090")


@pytest.mark.parametrize(("change", "expected"), [
    ({"triggers": None}, "spec.triggers: Required value"),
    ({"minReplicaCount": "two"}, "spec.minReplicaCount: Invalid value"),
    ({"minReplicaCount": 5, "maxReplicaCount": 2}, "minReplicaCount must be less than or equal to maxReplicaCount"),
], ids=["no-triggers", "string-min-replicas", "min-above-max"])
def test_scaled_object_violating_keda_schema_is_rejected(
    control_plane: ControlPlane, namespace: str, change: dict[str, Any], expected: str
) -> None:
    spec = {k: v for k, v in {**VALID_SPEC, **change}.items() if v is not None}
    result = control_plane.kubectl("apply", "-f", "-", input=scaled_object("bad", namespace, **spec))
    assert result.returncode != 0
    assert expected in result.stderr


def test_service_account_is_least_privilege(control_plane: ControlPlane, namespace: str) -> None:
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "reader")
    as_sa = lambda *args: control_plane.kubectl(*args, "-n", namespace, kubeconfig=kubeconfig)  # noqa: E731

    # The TokenRequest token authenticates (not 401) but grants nothing by itself.
    denied = as_sa("get", "secrets")
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and f"system:serviceaccount:{namespace}:reader" in denied.stderr

    # A RoleBinding is exactly what it takes, and only in its namespace.
    control_plane.kubectl("create", "role", "secret-reader", "--verb=list", "--resource=secrets", "-n", namespace,
                          check=True)
    control_plane.kubectl("create", "rolebinding", "reader", "--role=secret-reader",
                          f"--serviceaccount={namespace}:reader", "-n", namespace, check=True)
    assert as_sa("get", "secrets").returncode == 0
    assert "Forbidden" in control_plane.kubectl("get", "secrets", "-n", "kube-system", kubeconfig=kubeconfig).stderr


def test_data_survives_apiserver_restart(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "configmap", "survivor", "--from-literal=answer=42", "-n", namespace, check=True)

    control_plane.restart_apiserver()

    got = control_plane.kubectl("get", "configmap", "survivor", "-n", namespace, "-o", "jsonpath={.data.answer}",
                                check=True)
    assert got.stdout == "42"
