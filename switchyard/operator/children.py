"""What each resource should own, as plain Kubernetes objects (pure functions).

Names are derived from the owner's name, so re-applying after a crash finds and
updates the same objects instead of creating duplicates.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..api import catalog as cat
from ..api.gateway import Gateway
from ..api.pool import DEFAULT_POOL, Pool
from ..api.table import RoutingTable
from ..api.upstream import Upstream
from ..contracts import ADDRESS_KEY, POOL_LABEL, TABLE_KEY, TRIGGER_TYPE, Obj, scaled_object_name
from ..contracts import MANAGED_BY as _MANAGED_BY

MANAGED_BY = {**_MANAGED_BY, "app.kubernetes.io/part-of": "switchyard"}
OWNER_LABEL = "switchyard.dev/owner"  # <kind>.<name>, for pruning without a garbage collector
EPOCH_ANNOTATION = "switchyard.dev/epoch"
HASH_ANNOTATION = "switchyard.dev/hash"
DIGEST_ANNOTATION = "switchyard.dev/digest"  # a catalog shard's content digest, as its index names it
RUN_AS = 65532
TLS_DIR = "/etc/switchyard/tls"  # where the Gateway's spec.listeners.tls Secret is mounted

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def gateway_name(gw: str) -> str:
    return f"{gw}-gateway"


def routing_name(gw: str) -> str:
    return f"{gw}-routing"


def shard_name(gw: str, i: int) -> str:
    return cat.shard_object(routing_name(gw), i)


def lease_name(pool: str) -> str:
    return f"switchyard-pool-{pool}"


def owner_ref(owner: Any) -> Obj:
    return {"apiVersion": owner.apiVersion, "kind": owner.kind, "name": owner.metadata.name,
            "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True}


def _meta(owner: Any, name: str, extra_labels: dict[str, str] | None = None) -> Obj:
    return {
        "name": name,
        "namespace": owner.metadata.namespace,
        "labels": {**MANAGED_BY, OWNER_LABEL: f"{owner.kind.lower()}.{owner.metadata.name}", **(extra_labels or {})},
        "ownerReferences": [owner_ref(owner)],
    }


# -- Gateway ---------------------------------------------------------------------------

def routing_configmap(gw: Gateway, table: RoutingTable) -> Obj:
    """The table inline, as one ConfigMap (routing.json): what a catalog below the inline size is."""
    return routing_configmaps(gw, cat.Catalog(table, table.to_json(), None, ()))[-1]


def routing_configmaps(gw: Gateway, catalog: cat.Catalog) -> list[Obj]:
    """The table as stored objects (api/catalog.py): shards first, the index ConfigMap last, the
    order they must be written in so that a gateway never assembles half of two epochs."""
    table = catalog.table
    meta = _meta(gw, routing_name(gw.name))
    meta["annotations"] = {EPOCH_ANNOTATION: str(table.epoch), HASH_ANNOTATION: table.hash}
    if catalog.inline is not None:
        return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                 "data": {TABLE_KEY: catalog.inline.decode()}}]
    out: list[Obj] = []
    for shard in catalog.shards:
        smeta = _meta(gw, shard_name(gw.name, shard.index))
        smeta["annotations"] = {DIGEST_ANNOTATION: shard.digest}  # no epoch: an unchanged shard is never rewritten
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": smeta,
                    "binaryData": {cat.SHARD_KEY: base64.b64encode(shard.payload).decode()}})
    out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {cat.INDEX_KEY: orjson.dumps(catalog.index).decode()}})
    return out


def gateway_service_account(gw: Gateway) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(gw, gateway_name(gw.name))}


def gateway_role(gw: Gateway, scaled_objects: Sequence[str] = ()) -> Obj:
    """Exactly what a gateway pod needs: read its routing ConfigMaps (index and shards), worker endpoints and pool
    leases; create, renew (an annotation) and delete Pools for /v1/pools; write the run counts into Planners'
    status (server-side apply of `status.runs` only, gateway/plannerstatus.py); touch the ScaledObjects
    that scale on it when its scaler starts (scaledobjects.py)."""
    rules: list[Obj] = [
        {"apiGroups": [""], "resources": ["configmaps"],
         "resourceNames": [routing_name(gw.name), *(shard_name(gw.name, i) for i in range(cat.MAX_SHARDS))],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "watch"]},
        {"apiGroups": ["switchyard.dev"], "resources": ["pools"],
         "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        {"apiGroups": ["switchyard.dev"], "resources": ["planners/status"], "verbs": ["patch"]},
    ]
    if scaled_objects:  # never an empty resourceNames: that would mean every ScaledObject
        rules.append({"apiGroups": ["keda.sh"], "resources": ["scaledobjects"],
                      "resourceNames": sorted(scaled_objects), "verbs": ["get", "patch"]})
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(gw, gateway_name(gw.name)), "rules": rules}


def gateway_role_binding(gw: Gateway) -> Obj:
    name = gateway_name(gw.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(gw, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": gw.metadata.namespace}],
    }


def gateway_selector(gw: Gateway) -> dict[str, str]:
    return {"app.kubernetes.io/name": "switchyard-gateway", "switchyard.dev/gateway": gw.name}


def gateway_deployment(gw: Gateway, image: str) -> Obj:
    s = gw.spec
    http, metrics, scaler = s.listeners.http.port, s.listeners.metrics.port, s.listeners.scaler.port
    labels = gateway_selector(gw)
    container: Obj = {
        "name": "gateway",
        "image": s.image or image,
        "args": ["gateway", "--configmap", routing_name(gw.name), "--namespace", gw.metadata.namespace or "default",
                 "--nats", s.nats.url, "--host", "0.0.0.0", "--port", str(http), "--metrics-port", str(metrics),
                 "--scaler-port", str(scaler)],
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "http", "containerPort": http}, {"name": "metrics", "containerPort": metrics},
                  {"name": "scaler", "containerPort": scaler}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {}}]
    if s.listeners.grpc is not None:  # only when the Gateway turns gRPC on: no port that nothing serves
        container["args"] += ["--grpc-port", str(s.listeners.grpc.port)]
        container["ports"].append({"name": "grpc", "containerPort": s.listeners.grpc.port})
    if s.listeners.tls is not None:  # the whole directory, never subPath: the kubelet then updates it on rotation
        container["args"] += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key",
                              "--tls-min-version", s.listeners.tls.min_version]
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": s.listeners.tls.secret_name}})
        for probe in ("readinessProbe", "livenessProbe"):
            container[probe]["httpGet"]["scheme"] = "HTTPS"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(gw, gateway_name(gw.name), labels),
        "spec": {
            "replicas": s.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, **MANAGED_BY}},
                "spec": {
                    "serviceAccountName": gateway_name(gw.name),
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def gateway_service(gw: Gateway) -> Obj:
    s = gw.spec.listeners
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(gw, gateway_name(gw.name)),
        "spec": {
            "selector": gateway_selector(gw),
            "ports": [
                {"name": "http", "port": s.http.port, "targetPort": "http"},
                {"name": "metrics", "port": s.metrics.port, "targetPort": "metrics"},
                {"name": "scaler", "port": s.scaler.port, "targetPort": "scaler"},
                *([{"name": "grpc", "port": s.grpc.port, "targetPort": "grpc"}] if s.grpc is not None else []),
            ],
        },
    }


# -- Upstream ----------------------------------------------------------------------------

def scaler_address(gw: Gateway) -> str:
    """Where KEDA dials the gateways' external scaler: the override, else the gateway Service."""
    service = f"{gateway_name(gw.name)}.{gw.metadata.namespace}.svc"
    return gw.spec.scaler.address or f"{service}:{gw.spec.listeners.scaler.port}"


@dataclass(frozen=True)
class FleetRef:
    """What one ScaledObject scales: a Deployment, on the lanes of a profile (and bundle), or all."""

    name: str  # the ScaledObject's
    deployment: str
    machine_profile: str | None = None
    bundle: str | None = None
    rendered: bool = False  # the operator makes the Deployment from workers.template (fleets.py)
    run_bundle: str = ""  # the bundle a rendered fleet's workers run


def rendered_name(upstream: str, machine_profile: str, bundle: str | None = None) -> str:
    return "-".join(p for p in (upstream, machine_profile, bundle) if p)


def fleets(up: Upstream) -> list[FleetRef]:
    w = up.spec.workers
    only = up.spec.bundles[0].name if len(up.spec.bundles) == 1 else ""
    if not w.fleets and w.template is not None:  # one rendered fleet per profile (and bundle, when several)
        lanes = [(mp, None if only else b.name) for mp in up.spec.machine_profiles
                 for b in (up.spec.bundles[:1] if only else up.spec.bundles)]
        return [FleetRef(scaled_object_name(up.name, mp, b), rendered_name(up.name, mp, b), mp, b, True, b or only)
                for mp, b in lanes]
    if not w.fleets:  # one Deployment for every machine profile
        return [FleetRef(scaled_object_name(up.name), w.deployment or w.service)]
    return [FleetRef(scaled_object_name(up.name, f.machine_profile, f.bundle),
                     f.deployment or rendered_name(up.name, f.machine_profile, f.bundle), f.machine_profile,
                     f.bundle, f.deployment is None, f.bundle or only) for f in w.fleets]


def scaled_object(up: Upstream, gw: Gateway, fleet: FleetRef | None = None,
                  gateway_written: dict[str, str] | None = None) -> Obj:
    """KEDA scales a fleet's Deployment on the gateways' pending demand for its lanes.

    KEDA's scale-to-zero idiom: idleReplicaCount 0 with minReplicaCount >= 1, so
    an idle fleet has no pods and an active one at least one. `gateway_written` is
    what a gateway wrote into the trigger to make KEDA reconcile and reconnect
    (gateway/scaledobjects.py), kept so that re-applying never undoes it.
    """
    sc = up.spec.scaling
    fleet = fleet or fleets(up)[0]
    metadata = {
        ADDRESS_KEY: scaler_address(gw),
        "model": up.spec.model,
        "upstream": up.name,
        "targetPendingPerReplica": str(sc.target_pending_per_replica),
        "activationThreshold": str(sc.activation_threshold),
    }
    if fleet.machine_profile:  # the scaler counts only this fleet's lanes
        metadata["machineProfile"] = fleet.machine_profile
    if fleet.bundle:
        metadata["bundle"] = fleet.bundle
    if fleet.rendered:  # its workers run --pool default: a pool's lanes (its own fleets) never scale it
        metadata["pool"] = DEFAULT_POOL
    metadata.update(gateway_written or {})
    spec: Obj = {
        "scaleTargetRef": {"name": fleet.deployment},
        "minReplicaCount": max(sc.min_replicas, 1),
        "maxReplicaCount": sc.max_replicas,
        "pollingInterval": sc.polling_interval_seconds,
        "cooldownPeriod": sc.cooldown_seconds,
        "triggers": [{"type": TRIGGER_TYPE, "metadata": metadata}],
    }
    if sc.min_replicas == 0:
        spec["idleReplicaCount"] = 0
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _meta(up, fleet.name), "spec": spec}


# -- Pool ----------------------------------------------------------------------------------

def pool_lease(pool: Pool, now_iso: str) -> Obj:
    spec: Obj = {"holderIdentity": f"pool/{pool.name}", "acquireTime": now_iso, "renewTime": now_iso}
    if pool.spec.ttl_seconds:
        spec["leaseDurationSeconds"] = pool.spec.ttl_seconds
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": _meta(pool, lease_name(pool.name), {POOL_LABEL: pool.name}), "spec": spec}


def pool_lease_update(pool: Pool, renew_iso: str) -> Obj:
    """What the operator applies to an existing pool Lease: always every field it owns (holder,
    duration, renewTime), because a server-side apply that leaves one out removes it."""
    lease = pool_lease(pool, renew_iso)
    del lease["spec"]["acquireTime"]  # set once, at creation
    return lease


RENEW_SKEW_S = 5.0  # how far ahead of the operator's clock a gateway's renewal may be


def renewal(renewed: float, ttl: int, renewed_at: str | None, now: float) -> float | None:
    """The pool Lease's new renewTime for the `switchyard.dev/renewed-at` annotation, or None.

    Forward only; a gateway clock running ahead moves it at most to now + RENEW_SKEW_S; and a
    renewal made once the lease had lapsed (at renewed + ttl) revives nothing. An annotation
    that is not an RFC 3339 time is ignored, as is any on a pool that never expires."""
    if not renewed_at or not ttl:
        return None
    try:
        at = datetime.fromisoformat(renewed_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    ts = min((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp(), now + RENEW_SKEW_S)
    if ts <= renewed or ts >= renewed + ttl:
        return None
    return ts


def gateway_children(gw: Gateway, table: RoutingTable | None, image: str,
                     scaled_objects: Sequence[str] = ()) -> list[Obj]:
    """The Gateway's children; the routing ConfigMap (inline) first, unless `table` is None (the
    reconciler writes a sharded catalog itself, through routing_configmaps)."""
    routing = [routing_configmap(gw, table)] if table is not None else []
    return [*routing, gateway_service_account(gw), gateway_role(gw, scaled_objects),
            gateway_role_binding(gw), gateway_service(gw), gateway_deployment(gw, image)]
