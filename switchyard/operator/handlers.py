"""kopf wiring: every event is only a hint that a namespace needs a pass.

Handlers do no work themselves; they enqueue the namespace. kopf supplies what it
is good at (watching with relists, reconnects and timeouts); the work queue and
the reconciler supply level-triggered, idempotent passes.
"""

from __future__ import annotations

from typing import Any

import kopf

from ..gateway.cluster import POOL_LABEL
from .workqueue import NamespaceQueue

MANAGED = {"app.kubernetes.io/managed-by": "switchyard-operator"}

RESOURCES = [("switchyard.dev", "v1alpha1", plural) for plural in ("gateways", "upstreams", "pools", "planners")]
CHILDREN = [("", "v1", "configmaps"), ("", "v1", "services"), ("", "v1", "serviceaccounts"),
            ("apps", "v1", "deployments"), ("rbac.authorization.k8s.io", "v1", "roles"),
            ("rbac.authorization.k8s.io", "v1", "rolebindings"), ("keda.sh", "v1alpha1", "scaledobjects")]


def settings() -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    s.watching.server_timeout = 60  # the API server closes each watch after this...
    s.watching.client_timeout = 90  # ...and a connection silent for longer is dead (an idle LB dropped it)
    s.watching.connect_timeout = 10
    s.watching.reconnect_backoff = 1.0
    s.posting.enabled = False  # our own Events carry the reasons; kopf's would be noise
    return s


def register(queue: NamespaceQueue, *, kubeconfig: str | None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig:
            import os

            os.environ["KUBECONFIG"] = kubeconfig
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    def hint(namespace: str | None, **_: Any) -> None:
        if namespace:
            queue.enqueue(namespace)

    for group, version, plural in RESOURCES:
        kopf.on.event(group, version, plural, registry=registry)(hint)
    for group, version, plural in CHILDREN:
        kopf.on.event(group, version, plural, labels=MANAGED, registry=registry)(hint)
    kopf.on.event("coordination.k8s.io", "v1", "leases", labels={POOL_LABEL: kopf.PRESENT}, registry=registry)(hint)
    kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=registry)(hint)
    return registry
