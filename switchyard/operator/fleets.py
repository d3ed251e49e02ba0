"""Worker fleets the operator renders from an Upstream's `workers.template` (pure functions).

Each rendered fleet is one Deployment (KEDA owns its replica count) whose pods run
`switchyard worker` for one (machine profile, bundle) of the model, scheduled as the
Gateway's `machineProfiles` entry says, and one headless Service per Upstream whose
ready endpoints are the workers gateways route synchronous work to.

A Pool with `models` gets pool fleets: the same Deployments with `--pool <pool>`, held at
`gpus[profile]` replicas by the operator (no ScaledObject: reserved means always running)
and owned by the Pool, whose lifetime bounds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..api.gateway import Gateway, MachineProfile
from ..api.pool import DEFAULT_POOL, Pool
from ..api.upstream import Upstream
from ..contracts import MACHINE_PROFILE_LABEL, POOL_LABEL, Obj
from .children import MANAGED_BY, RESTRICTED_CONTAINER, RUN_AS, FleetRef, _meta, fleets, rendered_name

HEALTH_PORT = 8081
DRAIN_MARGIN_S = 5  # the drain outlasts an item started just before SIGTERM
GRACE_MARGIN_S = 10  # the kubelet's SIGKILL comes after the drain, never during it
UPSTREAM_LABEL = "switchyard.dev/upstream"
FLEET_LABEL = "switchyard.dev/fleet"
BUNDLE_LABEL = "switchyard.dev/bundle"
SEED_MANAGER = "switchyard-operator-seed"  # owns spec.replicas from creation until KEDA takes it


def problem(up: Upstream, gw: Gateway, fleet: FleetRef) -> str | None:
    """Why this rendered fleet cannot be rendered, or None."""
    if fleet.machine_profile not in {p.name for p in gw.spec.machine_profiles}:
        return (f"workers: machine profile {fleet.machine_profile!r} is not in Gateway {gw.name!r} "
                "spec.machineProfiles, so its fleet cannot be scheduled")
    if len(fleet.deployment) > 63:  # also a label value
        return f"workers: the rendered fleet name {fleet.deployment!r} is longer than 63 characters"
    return None


def drain_seconds(up: Upstream) -> int:
    return math.ceil(up.spec.timeout_seconds) + DRAIN_MARGIN_S


def grace_seconds(up: Upstream) -> int:
    return drain_seconds(up) + GRACE_MARGIN_S


def pod_labels(up: Upstream, fleet: FleetRef, pool: str | None = None) -> dict[str, str]:
    """`pool` only on pool fleets' pods: the Upstream's own fleets keep the labels they always had."""
    labels = {"app.kubernetes.io/name": "switchyard-worker", UPSTREAM_LABEL: up.name, FLEET_LABEL: fleet.deployment,
              MACHINE_PROFILE_LABEL: fleet.machine_profile or "", BUNDLE_LABEL: fleet.run_bundle}
    return {**labels, POOL_LABEL: pool} if pool else labels


def worker_args(up: Upstream, gw: Gateway, fleet: FleetRef, pool: str = DEFAULT_POOL) -> list[str]:
    assert up.spec.workers.template is not None
    return [*up.spec.workers.template.args, "--nats", gw.spec.nats.url, "--model", up.spec.model,
            "--bundle", fleet.run_bundle, "--machine-profile", fleet.machine_profile or "", "--pool", pool,
            "--health-port", str(HEALTH_PORT), "--health-host", "$(POD_IP)",
            "--drain-timeout", str(drain_seconds(up))]


def _resources(base: dict[str, Any], extended: dict[str, str]) -> dict[str, Any]:
    """The template's resources plus the profile's extended ones (e.g. GPUs) as requests and limits."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    if extended:
        out["requests"] = {**(out.get("requests") or {}), **extended}
        out["limits"] = {**(out.get("limits") or {}), **extended}
    return out


def fleet_deployment(up: Upstream, gw: Gateway, fleet: FleetRef, profile: MachineProfile) -> Obj:
    """No `replicas`: KEDA and its HPA own them (seed() sets the first value)."""
    return _deployment(up, gw, fleet, profile)


def _deployment(up: Upstream, gw: Gateway, fleet: FleetRef, profile: MachineProfile,
                pool: PoolFleet | None = None) -> Obj:
    t = up.spec.workers.template
    assert t is not None and fleet.rendered
    labels = pod_labels(up, fleet, pool.pool.name if pool else None)
    container: Obj = {
        "name": "worker",
        "image": t.image,
        "args": worker_args(up, gw, fleet, pool.pool.name if pool else DEFAULT_POOL),
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}, *t.env],
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        # Ready only while connected to NATS and not draining: the EndpointSlice follows.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}, "periodSeconds": 10},
        "resources": _resources(t.resources, profile.resources),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *t.volume_mounts],
    }
    if t.command:
        container["command"] = list(t.command)
    pod: Obj = {
        "automountServiceAccountToken": False,  # workers never call the API server
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": grace_seconds(up),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *t.volumes],
    }
    if profile.node_selector:
        pod["nodeSelector"] = dict(profile.node_selector)
    if profile.tolerations:
        pod["tolerations"] = [tol.model_dump(by_alias=True, exclude_none=True) for tol in profile.tolerations]
    selector = {UPSTREAM_LABEL: up.name, FLEET_LABEL: fleet.deployment}
    spec: Obj = {"selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": {**labels, **MANAGED_BY}}, "spec": pod}}
    if pool is None:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(up, fleet.deployment, selector),
                "spec": spec}
    # Labelled with the pool and profile too, so the operator reads a pool's ready workers off its Deployments.
    meta = _meta(pool.pool, fleet.deployment, {**selector, POOL_LABEL: pool.pool.name,
                                                MACHINE_PROFILE_LABEL: fleet.machine_profile or ""})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": pool.replicas, **spec}}


def seed(deployment: Obj) -> Obj:
    """The Deployment as first created, under SEED_MANAGER, at 0 replicas (KEDA raises it to minReplicas).

    The server-side applies that follow never name `replicas`, so KEDA's count is never reset. The seed
    holds only what never changes for a fleet (selector, labels, container name and image), because the
    fields it sets stay co-owned by SEED_MANAGER and would survive the operator dropping them."""
    spec, container = deployment["spec"], deployment["spec"]["template"]["spec"]["containers"][0]
    return {"apiVersion": deployment["apiVersion"], "kind": deployment["kind"], "metadata": deployment["metadata"],
            "spec": {"replicas": 0, "selector": spec["selector"],
                     "template": {"metadata": spec["template"]["metadata"],
                                  "spec": {"containers": [{"name": container["name"], "image": container["image"]}]}}}}


def worker_service(up: Upstream) -> Obj:
    """Headless: only its EndpointSlices matter (cluster-mode gateways admit ready workers by pod name)."""
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(up, up.spec.workers.service),
        "spec": {"clusterIP": "None", "selector": {UPSTREAM_LABEL: up.name},
                 "ports": [{"name": "health", "port": HEALTH_PORT, "targetPort": "health"}]},
    }


# -- Pool fleets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolFleet:
    """One pool fleet: an Upstream's rendered fleet on one (profile, bundle), run for a pool at fixed size."""

    pool: Pool
    upstream: Upstream
    fleet: FleetRef  # deployment: pool_fleet_name(...); no ScaledObject
    replicas: int


def pool_fleet_name(pool: str, upstream: str, machine_profile: str, bundle: str | None = None) -> str:
    """`pool-<pool>-<upstream>-<profile>[-<bundle>]`: apart from the Upstream's own fleets in a listing."""
    return f"pool-{pool}-{rendered_name(upstream, machine_profile, bundle)}"


def pool_fleets(pool: Pool, up: Upstream, gw: Gateway) -> tuple[list[PoolFleet], list[str]]:
    """The fleets `pool` runs for `up`'s model, and why any cannot be rendered.

    For each machine profile P with gpus[P] > 0 that the Upstream offers, the Upstream's fleets
    on P (one per bundle where its fleets are per bundle; every bundle where its own Deployment
    serves them all), each at gpus[P] replicas."""
    if up.spec.workers.template is None:
        return [], [f"model {up.spec.model!r}: Upstream {up.name!r} has no workers.template, so the operator "
                    f"cannot render its workers for the pool; run them yourself with "
                    f"`switchyard worker --pool {pool.name}`"]
    out: list[PoolFleet] = []
    problems: list[str] = []
    bundles = [b.name for b in up.spec.bundles]
    for mp, count in sorted(pool.spec.gpus.items()):
        if count <= 0 or mp not in up.spec.machine_profiles:
            continue
        for own in fleets(up):
            if own.machine_profile != mp:
                continue
            for bundle in [own.run_bundle] if own.run_bundle else bundles:
                named = own.bundle or (bundle if not own.run_bundle else None)
                ref = FleetRef("", pool_fleet_name(pool.name, up.name, mp, named), mp, named, True, bundle)
                if len(ref.deployment) > 63:  # a label value too
                    problems.append(f"the pool fleet name {ref.deployment!r} (pool-<pool>-<upstream>-<profile>"
                                    f"[-<bundle>]) is longer than 63 characters; choose a shorter pool name")
                    continue
                if (why := problem(up, gw, ref)) is not None:
                    problems.append(f"model {up.spec.model!r} (Upstream {up.name!r}): {why.removeprefix('workers: ')}")
                    continue
                out.append(PoolFleet(pool, up, ref, count))
    return out, problems


def pool_deployment(pf: PoolFleet, gw: Gateway, profile: MachineProfile) -> Obj:
    """The Upstream's rendered fleet with `--pool`, the pool label on its pods, and `replicas` held by us."""
    return _deployment(pf.upstream, gw, pf.fleet, profile, pf)
