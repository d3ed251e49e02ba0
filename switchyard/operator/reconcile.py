"""Reconcile one namespace: current resources in, desired children and statuses out.

Level-triggered: every pass reads everything it needs and derives the whole desired
state, so a missed event, a hand edit or a deleted child is repaired by the next
pass, and a pass interrupted by a crash is simply done again (server-side apply
with derived names cannot create duplicates).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from ..api import catalog as cat
from ..api import compile_table
from ..api.compile import RouteMemo
from ..api.gateway import Gateway
from ..api.issues import issues_from_validation
from ..api.loader import KINDS, ResourceSet
from ..api.pool import DEFAULT_POOL, RENEWED_AT_ANNOTATION, Pool
from ..api.secret import Secret
from ..api.table import RoutingTable
from ..api.upstream import Upstream
from ..contracts import (
    MACHINE_PROFILE_LABEL,
    MANAGED_SELECTOR,
    POOL_API_LABEL,
    POOL_LABEL,
    SERVICE_LABEL,
    Obj,
    ObjectKey,
    endpoint_ready,
    gateway_written,
)
from . import children, fleets
from .cache import Watched, settle
from .children import FleetRef
from .kube import (
    BY_KIND,
    CONFIGMAP,
    DEPLOYMENT,
    ENDPOINT_SLICE,
    LEASE,
    POD,
    RESOURCE_KINDS,
    ROLE,
    ROLE_BINDING,
    SCALED_OBJECT,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    Kind,
    Kube,
)
from .status import condition, micro, now_micro, ready_changed, warn, write_status

log = logging.getLogger("switchyard.operator")

CHILD_KINDS = (CONFIGMAP, SERVICE_ACCOUNT, ROLE, ROLE_BINDING, SERVICE, DEPLOYMENT, SCALED_OBJECT, LEASE)
# What a pass reads, as the operator's cache watches it (operator/cache.py). Pods change
# with every readiness flip: read, but their changes reach a pass through EndpointSlices.
WATCHED = (*(Watched(k, MANAGED_SELECTOR) for k in CHILD_KINDS), *(Watched(k) for k in RESOURCE_KINDS),
           Watched(ENDPOINT_SLICE), Watched(POD, MACHINE_PROFILE_LABEL, hint=False))
# Upstream writes (ScaledObjects, rendered fleets, statuses) one pass may make. A burst of
# thousands of Upstreams is spread over several short passes, each of which reads and
# compiles afresh, so the routing table (written first, never budgeted) never waits
# behind the burst: a change reaches gateways within one short pass.
WRITES_PER_PASS = 400
DEFAULT_POOL_KEY = ObjectKey("Pool", DEFAULT_POOL)
# An Upstream's children as last found current: (what they were derived from, its problems, (kind, name) it owns).
ChildrenDone = tuple[Any, list[str], list[tuple[str, str]]]


@dataclass
class Observed:
    raw: dict[ObjectKey, Obj] = field(default_factory=dict)  # (kind, name) -> object as read
    models: dict[ObjectKey, Any] = field(default_factory=dict)  # (kind, name) -> validated model
    issues: dict[ObjectKey, list[str]] = field(default_factory=dict)  # (kind, name) -> problems
    pool_expiry: dict[str, str] = field(default_factory=dict)  # pool name -> when its lease lapses
    children: dict[tuple[str, str], Obj] = field(default_factory=dict)  # (kind, name) -> managed child
    pool_fleets: dict[str, list[fleets.PoolFleet]] = field(default_factory=dict)  # pool -> fleets it runs
    unrendered: dict[ObjectKey, list[str]] = field(default_factory=dict)  # pool -> why some workers are not run
    too_large: dict[str, str] = field(default_factory=dict)  # gateway -> why its catalog cannot be stored
    budget: int = 0  # writes of Upstream children and statuses this pass may still make
    deferred: set[ObjectKey] = field(default_factory=set)  # objects whose writes wait for the next pass
    # An Upstream's key -> (the validated Upstream, its fleets): made once per Upstream object, which
    # stays the same object across passes while its resourceVersion does (Reconciler._valid)
    fleet_refs: dict[ObjectKey, tuple[Any, list[FleetRef]]] = field(default_factory=dict)
    fleet_refs_before: dict[ObjectKey, tuple[Any, list[FleetRef]]] = field(default_factory=dict)
    validated: int = 0  # resources validated afresh this pass (changed since the last one)
    named: dict[str, ObjectKey] = field(default_factory=dict)  # a model's printed ref (its issues') -> its key

    def add_model(self, key: ObjectKey, model: Any) -> None:
        self.models[key] = model
        self.named[model.ref] = key

    def fleets(self, key: ObjectKey, up: Upstream) -> list[FleetRef]:
        held = self.fleet_refs.get(key) or self.fleet_refs_before.get(key)
        if held is None or held[0] is not up:
            held = (up, children.fleets(up))
        self.fleet_refs[key] = held
        return held[1]

    def problem(self, key: ObjectKey, text: str, into: dict[ObjectKey, list[str]] | None = None) -> None:
        target = self.issues if into is None else into
        target.setdefault(key, [])
        if text not in target[key]:
            target[key].append(text)


@dataclass
class Outcome:
    requeue_after: float | None = None  # seconds, e.g. until the next pool lease lapses
    tables: dict[str, RoutingTable] = field(default_factory=dict)


class Lister(Protocol):
    async def list(self, kind: Kind, namespace: str | None, *, labels: str | None = None) -> list[Obj]: ...


class Reconciler:
    def __init__(self, kube: Kube, image: str, catalog_limits: cat.Limits = cat.Limits(),
                 writes_per_pass: int = WRITES_PER_PASS, reads: Lister | None = None) -> None:
        self.kube = kube
        self.reads: Lister = reads or kube  # the operator's cache; the API server itself when None
        # namespace -> (kind, name) -> (resourceVersion, model or None, problems): a pass validates
        # only the resources that changed since the last one.
        self._valid: dict[str, dict[tuple[str, str], tuple[str, Any, list[str]]]] = {}
        # Per namespace and Gateway: the routes of unchanged Upstreams, reused by compile_table.
        self._routes: dict[tuple[str, str], RouteMemo] = {}
        # Per namespace, an Upstream's key -> what its children and status were derived from when
        # they were last found (or made) current: an Upstream whose inputs did not move is skipped,
        # so a change to one of 10,000 renders one Upstream's children and one status.
        self._children_done: dict[str, dict[ObjectKey, ChildrenDone]] = {}
        self._status_done: dict[str, dict[ObjectKey, Any]] = {}
        self._fleet_refs: dict[str, dict[ObjectKey, tuple[Any, list[FleetRef]]]] = {}
        self.image = image
        self.catalog_limits = catalog_limits
        self.writes_per_pass = writes_per_pass
        # What we last applied, and the resourceVersion it produced: a pass that finds
        # both unchanged skips the write, so a quiet namespace costs reads only.
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}

    async def reconcile(self, ns: str) -> Outcome:
        obs = await self._observe(ns)
        obs.budget = self.writes_per_pass
        outcome = Outcome()
        gateways = sorted((m for k, m in obs.models.items() if k.kind == "Gateway"), key=lambda g: g.name)
        if gateways:
            await self._ensure_default_pool(ns, obs)
        expired = await self._pool_leases(ns, obs, outcome)
        rs = await self._resource_set(ns, obs, expired)
        scaled_on = self._scaled_on(obs, gateways)
        for gw in gateways:
            names = [f.name for key, (up, g) in scaled_on.items() if g is gw for f in obs.fleets(key, up)]
            table = await self._gateway(gw, rs, obs, names)
            if table is not None:
                outcome.tables[gw.name] = table
        await self._upstreams(ns, obs, scaled_on)
        await self._pools(ns, obs, gateways, expired)
        await self._statuses(ns, obs, outcome, expired)
        await self._prune(ns, obs)
        self._fleet_refs[ns] = obs.fleet_refs
        settle(obs.validated)
        if obs.deferred:  # a burst: the rest in the next pass, which reads (and compiles) afresh
            outcome.requeue_after = 0.0
            log.info("pass write budget spent; continuing in the next pass",
                     extra={"namespace": ns, "deferred": len(obs.deferred), "budget": self.writes_per_pass})
        return outcome

    # -- observe ---------------------------------------------------------------------

    async def _observe(self, ns: str) -> Observed:
        obs = Observed()
        listings = await asyncio.gather(*(self.reads.list(k, ns, labels=MANAGED_SELECTOR) for k in CHILD_KINDS),
                                        *(self.reads.list(k, ns) for k in RESOURCE_KINDS))
        for kind, items in zip(CHILD_KINDS, listings, strict=False):  # then RESOURCE_KINDS
            for child in items:
                obs.children[(kind.kind, child["metadata"]["name"])] = child
        before, valid, made = self._valid.get(ns, {}), {}, 0
        for kind, items in zip(RESOURCE_KINDS, listings[len(CHILD_KINDS):], strict=True):
            for raw in items:
                name, rv = raw["metadata"]["name"], raw["metadata"].get("resourceVersion", "")
                key = ObjectKey(kind.kind, name)
                obs.raw[key] = raw
                held = before.get((kind.kind, name))
                if held is None or held[0] != rv or not rv:
                    held = (rv, *self._validate(kind.kind, key, raw))
                    made += 1
                valid[(kind.kind, name)] = held
                if held[1] is not None:
                    obs.add_model(key, held[1])
                for text in held[2]:
                    obs.problem(key, text)
        self._valid[ns] = valid
        obs.validated = made
        obs.fleet_refs_before = self._fleet_refs.get(ns, {})
        return obs

    @staticmethod
    def _validate(kind: str, key: ObjectKey, raw: Obj) -> tuple[Any, list[str]]:
        try:
            return KINDS[kind].model_validate(raw), []
        except ValidationError as exc:
            return None, [f"{issue.field}: {issue.message}" for issue in issues_from_validation(str(key), exc)]

    async def _ensure_default_pool(self, ns: str, obs: Observed) -> None:
        """`default` always exists: recreated whenever it is missing."""
        if DEFAULT_POOL_KEY in obs.raw:
            return
        raw = await self.kube.create({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool",
                                      "metadata": {"name": DEFAULT_POOL, "namespace": ns,
                                                   "labels": {"switchyard.dev/protected": "true"}},
                                      "spec": {"ttlSeconds": 0}})
        obs.raw[DEFAULT_POOL_KEY] = raw
        obs.add_model(DEFAULT_POOL_KEY, Pool.model_validate(raw))
        log.info("created the default pool", extra={"namespace": ns})

    async def _pool_leases(self, ns: str, obs: Observed, outcome: Outcome) -> set[str]:
        """Make sure each pool has its Lease, renewed as its `renewed-at` annotation asks; return
        pools whose lease lapsed. (Gateways renew by annotating the Pool: they never write Leases.)"""
        leases = {(c["metadata"].get("labels") or {}).get(POOL_LABEL): c
                  for (kind, _), c in obs.children.items() if kind == "Lease"}  # read by _observe
        expired: set[str] = set()
        now = time.time()
        for key, pool in obs.models.items():
            if key.kind != "Pool":
                continue
            lease = leases.get(pool.name)
            if lease is None:
                lease = await self.kube.create(children.pool_lease(pool, now_micro()))
            spec = lease["spec"]
            renewed = _ts(spec.get("renewTime") or spec.get("acquireTime"))
            moved = children.renewal(renewed, pool.spec.ttl_seconds,
                                     pool.metadata.annotations.get(RENEWED_AT_ANNOTATION), now)
            if moved is not None or (spec.get("leaseDurationSeconds") or 0) != pool.spec.ttl_seconds:
                renewed = renewed if moved is None else moved
                lease = await self.kube.apply(children.pool_lease_update(pool, micro(renewed)))
                if moved is not None:
                    log.info("pool lease renewed", extra={"namespace": ns, "pool": pool.name,
                                                          "renew_time": micro(renewed)})
            if pool.name == DEFAULT_POOL or not pool.spec.ttl_seconds:
                continue
            left = renewed + pool.spec.ttl_seconds - now
            if left <= 0:
                expired.add(pool.name)
            else:
                outcome.requeue_after = min(outcome.requeue_after or left, left)
            obs.pool_expiry[pool.name] = datetime.fromtimestamp(renewed + pool.spec.ttl_seconds,
                                                                UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return expired

    async def _resource_set(self, ns: str, obs: Observed, expired: set[str]) -> ResourceSet:
        rs = ResourceSet()
        for key, model in obs.models.items():
            if key.kind == "Pool" and model.name in expired:
                continue
            rs.add(model)
        wanted = {k.secret_ref.name for g in rs.gateways for k in g.spec.auth.api_keys}
        for name in sorted(wanted):
            raw = await self.kube.get(SECRET, ns, name)
            if raw is not None:
                rs.secrets.append(Secret.model_validate(raw))
        return rs

    # -- act -------------------------------------------------------------------------------

    async def _gateway(self, gw: Gateway, rs: ResourceSet, obs: Observed,
                       scaled_objects: list[str]) -> RoutingTable | None:
        """Compile and store the Gateway's table; None when it cannot be stored (too large): the
        gateways then keep serving the last table, and the Gateway says why in its status."""
        result = compile_table(rs, gateway=gw.name,
                               memo=self._routes.setdefault((gw.metadata.namespace or "", gw.name), {}))
        for issue in result.issues:
            if (key := obs.named.get(issue.ref)) is not None:  # every issue names one of the pass's models
                obs.problem(key, f"{issue.field}: {issue.message}" if issue.field else issue.message)
        current = obs.children.get(("ConfigMap", children.routing_name(gw.name)))
        old = (current or {}).get("metadata", {}).get("annotations") or {}
        old_epoch = int(old.get(children.EPOCH_ANNOTATION, "0") or 0)
        epoch = old_epoch if old.get(children.HASH_ANNOTATION) == result.table.hash else old_epoch + 1
        table = result.table.with_epoch(max(epoch, 1))
        try:
            catalog: cat.Catalog | None = cat.split(table, self.catalog_limits)
        except cat.CatalogTooLarge as exc:
            obs.too_large[gw.name] = str(exc)
            catalog = None
        routing = children.routing_configmaps(gw, catalog) if catalog is not None else []
        # Shards first, a few at a time (only changed ones are written), then the index.
        await bounded([self._ensure(obj, obs) for obj in routing[:-1]])
        for obj in routing[-1:] + children.gateway_children(gw, None, self.image, scaled_objects):
            await self._ensure(obj, obs)
        if catalog is not None:  # shards the index no longer names: only after it was written
            keep = {o["metadata"]["name"] for o in routing}
            prefix = children.routing_name(gw.name) + "-"
            for (kind, name), child in list(obs.children.items()):
                if kind == "ConfigMap" and name.startswith(prefix) and name not in keep and \
                        (child["metadata"].get("labels") or {}).get(children.OWNER_LABEL) == f"gateway.{gw.name}":
                    await self.kube.delete(CONFIGMAP, gw.metadata.namespace or "", name)
                    self._applied.pop(("ConfigMap", gw.metadata.namespace or "", name), None)
        return table if catalog is not None else None

    def _scaled_on(self, obs: Observed, gateways: list[Gateway]) -> dict[ObjectKey, tuple[Upstream, Gateway]]:
        """Upstream key -> (Upstream, the Gateway whose scaler KEDA asks); a problem where there is none."""
        by_name = {g.name: g for g in gateways}
        out = {}
        for key, up in obs.models.items():
            if key.kind != "Upstream":
                continue
            target = up.spec.gateway_ref or (gateways[0].name if gateways else None)
            if target is None or target not in by_name:
                obs.problem(key, f"no Gateway {target!r} in this namespace to scale on" if target
                            else "no Gateway in this namespace to scale on")
                continue
            out[key] = (up, by_name[target])
        return out

    async def _upstreams(self, ns: str, obs: Observed, scaled_on: dict[ObjectKey, tuple[Upstream, Gateway]]) -> None:
        writes: list[Awaitable[None]] = []
        wanted: dict[str, set[str]] = {"ScaledObject": set(), "Deployment": set(), "Service": set()}
        done = self._children_done.get(ns, {})
        fresh: dict[ObjectKey, ChildrenDone] = {}
        self._children_done[ns] = fresh
        for key, (up, gw) in scaled_on.items():
            sig = self._children_inputs(key, up, gw, obs)
            held = done.get(key)
            if held is not None and held[0] == sig:  # nothing it is derived from moved: all current
                for why in held[1]:
                    obs.problem(key, why)
                for kind, name in held[2]:
                    wanted[kind].add(name)
                fresh[key] = held
                continue
            problems: list[str] = []
            mine: list[tuple[str, str]] = []
            ups: list[Awaitable[None]] = []
            profiles = {p.name: p for p in gw.spec.machine_profiles}
            for fleet in obs.fleets(key, up):
                if fleet.rendered and (blocked := fleets.problem(up, gw, fleet)) is not None:
                    problems.append(blocked)  # no ScaledObject either: KEDA would scale nothing
                    continue
                mine.append(("ScaledObject", fleet.name))
                kept = gateway_written(obs.children.get(("ScaledObject", fleet.name)), children.scaler_address(gw))
                so = children.scaled_object(up, gw, fleet, kept)
                if fleet.rendered:
                    dep = fleets.fleet_deployment(up, gw, fleet, profiles[fleet.machine_profile or ""])
                    mine.append(("Deployment", fleet.deployment))
                    ups.append(self._fleet(key, dep, so, obs, problems))
                else:
                    ups.append(self._ensure(so, obs, budget_for=key))
            if any(f.rendered for f in obs.fleets(key, up)):
                mine.append(("Service", up.spec.workers.service))
                ups.append(self._ensure(fleets.worker_service(up), obs, budget_for=key))
            for why in problems:
                obs.problem(key, why)
            for kind, name in mine:
                wanted[kind].add(name)
            writes.append(self._upstream_children(key, ups, (sig, problems, mine), obs, fresh))
        await bounded(writes)
        # A valid Upstream's children that no fleet wants any more (fleets changed, or no Gateway
        # left to scale on): never leave KEDA scaling a Deployment on a stale trigger.
        owners = {f"upstream.{k.name}" for k in obs.models if k.kind == "Upstream"}
        for (kind, name), child in list(obs.children.items()):
            if kind in wanted and name not in wanted[kind] and \
                    (child["metadata"].get("labels") or {}).get(children.OWNER_LABEL) in owners:
                await self.kube.delete(BY_KIND[kind], ns, name)
                self._applied.pop((kind, ns, name), None)
                log.info("deleted a child no fleet wants", extra={"namespace": ns, "kind": kind, "object": name})

    @staticmethod
    def _children_inputs(key: ObjectKey, up: Upstream, gw: Gateway, obs: Observed) -> Any:
        """What an Upstream's children are rendered from: it, its Gateway, and its children as they are."""
        def rv(obj: Obj | None) -> str | None:
            return obj["metadata"].get("resourceVersion") if obj is not None else None

        refs = obs.fleets(key, up)
        names = [("ScaledObject", f.name) for f in refs] + [("Deployment", f.deployment) for f in refs if f.rendered] \
            + [("Service", up.spec.workers.service)]
        return (rv(obs.raw.get(key)), rv(obs.raw.get(ObjectKey("Gateway", gw.name))),
                tuple(rv(obs.children.get(n)) for n in names))

    async def _upstream_children(self, key: ObjectKey, writes: list[Awaitable[None]],
                                 done: tuple[Any, list[str], list[tuple[str, str]]], obs: Observed,
                                 into: dict[ObjectKey, Any]) -> None:
        for write in writes:
            await write
        # All written (or found current): skipped until an input moves. Not with a problem: a
        # Deployment in the way may go without any input of ours moving.
        if key not in obs.deferred and not done[1]:
            into[key] = done

    async def _fleet(self, key: ObjectKey, dep: Obj, so: Obj, obs: Observed, problems: list[str]) -> None:
        """A rendered fleet's Deployment, then its ScaledObject. Created at 0 replicas once, then applied
        without `replicas` (KEDA's). A Deployment of that name the Upstream does not own is left alone."""
        name, mine = dep["metadata"]["name"], dep["metadata"]["labels"][children.OWNER_LABEL]
        current = obs.children.get(("Deployment", name))
        if current is None:
            try:
                await self.kube.create(fleets.seed(dep), field_manager=fleets.SEED_MANAGER)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = await self.kube.get(DEPLOYMENT, dep["metadata"]["namespace"], name)  # not ours, or a race
        if current is not None and (current["metadata"].get("labels") or {}).get(children.OWNER_LABEL) != mine:
            why = (f"workers: Deployment {name!r} exists and is not this Upstream's rendered fleet; "
                   "rename it, or name it in a fleet's deployment")
            problems.append(why)
            obs.problem(key, why)
            return
        await self._ensure(dep, obs, budget_for=key)
        await self._ensure(so, obs, budget_for=key)

    async def _pools(self, ns: str, obs: Observed, gateways: list[Gateway], expired: set[str]) -> None:
        """Pool fleets: while a valid pool's Lease is live, each of its models' rendered fleets on the
        profiles it reserves, at gpus[profile] replicas; any other pool fleet is retired."""
        by_name = {g.name: g for g in gateways}
        ups = [m for k, m in obs.models.items() if k.kind == "Upstream"]
        writes: list[Awaitable[None]] = []
        for key, pool in sorted((k, m) for k, m in obs.models.items() if k.kind == "Pool"):
            if pool.name in expired or obs.issues.get(key) or not pool.spec.models or not gateways:
                continue
            # The Gateway whose NATS and machine profiles the workers use: as for Upstreams, the
            # one named, else the first by name.
            gw = by_name.get(pool.spec.gateway_ref or gateways[0].name)
            if gw is None:
                obs.problem(key, f"no Gateway {pool.spec.gateway_ref!r} in this namespace to run workers for",
                            obs.unrendered)
                continue
            profiles = {p.name: p for p in gw.spec.machine_profiles}
            obs.pool_fleets.setdefault(pool.name, [])  # filled by _pool_fleet with what it runs
            todo: list[fleets.PoolFleet] = []
            for model in pool.spec.models:
                up = next((u for u in ups if u.spec.model == model and u.spec.gateway_ref in (None, gw.name)), None)
                if up is None:
                    obs.problem(key, f"model {model!r}: no Upstream serves it on Gateway {gw.name!r}", obs.unrendered)
                    continue
                rendered, problems = fleets.pool_fleets(pool, up, gw)
                for why in problems:
                    obs.problem(key, why, obs.unrendered)
                todo += rendered
            # The gateway bounds what POST /v1/pools accepts; this bounds what actually runs (an Upstream
            # with several bundles runs gpus[P] workers per bundle), so a tenant's pool never exceeds it.
            limit = gw.spec.pool_api.max_workers_per_pool
            if pool.metadata.labels.get(POOL_API_LABEL) == "true" and sum(pf.replicas for pf in todo) > limit:
                obs.problem(key, f"its fleets would run {sum(pf.replicas for pf in todo)} workers, more than Gateway "
                                 f"{gw.name!r} spec.poolApi.maxWorkersPerPool ({limit}) allows a pool made through "
                                 "the API; none are run", obs.unrendered)
                continue
            for pf in todo:
                dep = fleets.pool_deployment(pf, gw, profiles[pf.fleet.machine_profile or ""])
                writes.append(self._pool_fleet(key, dep, pf, obs))
        await bounded(writes)
        wanted = {pf.fleet.deployment for fs in obs.pool_fleets.values() for pf in fs}
        for (kind, name), child in list(obs.children.items()):
            if kind == "Deployment" and name not in wanted and _is_pool_fleet(child):
                await self._retire(ns, child)

    async def _pool_fleet(self, key: ObjectKey, dep: Obj, pf: fleets.PoolFleet, obs: Observed) -> None:
        """A pool fleet's Deployment, replicas included; one of that name it does not own is left alone."""
        name, mine = dep["metadata"]["name"], dep["metadata"]["labels"][children.OWNER_LABEL]
        current = obs.children.get(("Deployment", name))
        if current is None:
            try:
                current = await self.kube.create(dep)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = await self.kube.get(DEPLOYMENT, dep["metadata"]["namespace"], name)
        if current is not None and (current["metadata"].get("labels") or {}).get(children.OWNER_LABEL) != mine:
            obs.problem(key, f"Deployment {name!r} exists and is not this pool's fleet; rename it or the pool",
                        obs.unrendered)
            return
        obs.pool_fleets[pf.pool.name].append(pf)
        await self._ensure(dep, obs)

    async def _retire(self, ns: str, dep: Obj) -> None:
        """A pool fleet no pool wants (lapsed, deleted, changed): scaled to 0 first, so its workers drain
        as in any scale-down even where no garbage collector runs, then deleted once it has no replicas."""
        meta, name = dep["metadata"], dep["metadata"]["name"]
        status = dep.get("status") or {}
        if dep["spec"].get("replicas") != 0:
            await self.kube.merge_patch(DEPLOYMENT, ns, name, {"spec": {"replicas": 0}})
            log.info("pool fleet scaled to 0", extra={"namespace": ns, "object": name})
        elif not status.get("replicas") and \
                status.get("observedGeneration", meta.get("generation")) == meta.get("generation"):
            # (no observedGeneration: no controller runs it, so nothing to wait for)
            await self.kube.delete(DEPLOYMENT, ns, name)
            log.info("pool fleet deleted", extra={"namespace": ns, "object": name})
        self._applied.pop(("Deployment", ns, name), None)

    async def _statuses(self, ns: str, obs: Observed, outcome: Outcome, expired: set[str]) -> None:
        live = await self._live_workers(ns, obs)
        done = self._status_done.get(ns, {})
        fresh: dict[ObjectKey, Any] = {}
        self._status_done[ns] = fresh
        todo = []
        for key, raw in obs.raw.items():
            sig = None
            if key.kind == "Upstream":  # the many: skipped while what their status says is unchanged
                sig = (raw["metadata"].get("resourceVersion"), tuple(obs.issues.get(key, [])),
                       tuple(sorted(live.get(key.name, {}).items())), key in obs.deferred)
                if sig[0] and done.get(key) == sig:
                    fresh[key] = sig
                    continue
            todo.append(self._status(key, raw, obs, outcome, expired, live, sig, fresh))
        await bounded(todo)

    async def _status(self, key: ObjectKey, raw: Obj, obs: Observed, outcome: Outcome, expired: set[str],
                      live: dict[str, dict[str, int]], sig: Any = None,
                      done: dict[ObjectKey, Any] | None = None) -> None:
        kind, name = key.kind, key.name
        problems = obs.issues.get(key, [])
        prev = (raw.get("status") or {}).get("conditions")
        gen = raw["metadata"].get("generation")
        status: Obj = {"observedGeneration": gen}
        workers = _pool_workers(obs, name) if kind == "Pool" and name not in expired and not problems else {}
        reserved, ready_n = (sum(w[k] for w in workers.values()) for k in ("reserved", "ready"))
        if kind == "Gateway" and name in obs.too_large:
            ready = condition("Ready", False, "CatalogTooLarge",
                              f"the routing table cannot be stored: {obs.too_large[name]}; gateways keep serving "
                              "the last table stored", gen, prev)
        elif kind == "Pool" and name in expired:
            ready = condition("Ready", False, "LeaseExpired",
                              "the pool's Lease was not renewed in time; requests for it get 410", gen, prev)
            status["phase"] = "Expired"
        elif problems:
            ready = condition("Ready", False, "Invalid", "; ".join(problems), gen, prev)
            status["phase"] = "Invalid" if kind == "Planner" else None
        elif kind == "Pool" and obs.unrendered.get(key):
            ready = condition("Ready", False, "WorkersNotRendered", "; ".join(obs.unrendered[key]), gen, prev)
            status["phase"] = "Active"
        elif kind == "Pool" and ready_n < reserved:
            ready = condition("Ready", False, "WorkersStarting", f"{ready_n} of {reserved} reserved workers ready "
                              f"({_per_profile(workers)})", gen, prev)
            status["phase"] = "Active"
        elif kind == "Pool" and reserved:
            ready = condition("Ready", True, "WorkersReady", f"the pool's Lease is current; all {reserved} reserved "
                              f"workers ready ({_per_profile(workers)})", gen, prev)
            status["phase"] = "Active"
        else:
            ready = condition("Ready", True, *_ready_reason(kind, name, outcome), gen, prev)
            status["phase"] = {"Planner": "Valid", "Pool": "Active"}.get(kind)
        status["conditions"] = [ready]
        if kind == "Gateway" and name in outcome.tables:
            status.update(configEpoch=outcome.tables[name].epoch, configHash=outcome.tables[name].hash)
        if kind == "Upstream":
            status["liveWorkers"] = live.get(name, {})
        if kind == "Pool":
            status["expiresAt"] = obs.pool_expiry.get(name)
            status["workers"] = workers or None
        status = _drop_none(status)
        current = raw.get("status") or {}
        if kind == "Upstream" and key in obs.deferred:
            return  # its children are not all written yet: Ready would claim too much
        if {k: current.get(k) for k in status} != status or ("workers" in current and "workers" not in status):
            if kind == "Upstream" and not self._spend(obs, key):
                return
            await write_status(self.kube, raw, status)
        elif sig is not None and done is not None:
            done[key] = sig  # found as it should be: skipped until one of its inputs moves
        # Workers starting is progress, not a fault: no Warning Event for it.
        if ready["status"] == "False" and ready["reason"] != "WorkersStarting" and ready_changed(prev, ready):
            await warn(self.kube, raw, ready["reason"], ready["message"])

    async def _live_workers(self, ns: str, obs: Observed) -> dict[str, dict[str, int]]:
        """Ready endpoints of each Upstream's worker Service, by machine profile."""
        ups = {k.name: m for k, m in obs.models.items() if k.kind == "Upstream"}
        if not ups:
            return {}
        by_service: dict[str, list[Obj]] = {}
        for s in await self.reads.list(ENDPOINT_SLICE, ns):
            by_service.setdefault((s["metadata"].get("labels") or {}).get(SERVICE_LABEL, ""), []).append(s)
        profile_of = {p["metadata"]["name"]: p["metadata"]["labels"][MACHINE_PROFILE_LABEL]
                      for p in await self.reads.list(POD, ns, labels=MACHINE_PROFILE_LABEL)}
        out: dict[str, dict[str, int]] = {}
        for name, up in ups.items():
            counts: Counter[str] = Counter()
            only = up.spec.machine_profiles[0] if len(up.spec.machine_profiles) == 1 else "unknown"
            for s in by_service.get(up.spec.workers.service, []):
                for ep in s.get("endpoints") or []:
                    if endpoint_ready(ep):  # terminating ones too are not live (contracts.py)
                        pod = (ep.get("targetRef") or {}).get("name", "")
                        counts[profile_of.get(pod, only)] += 1
            out[name] = dict(counts)
        return out

    async def _ensure(self, obj: Obj, obs: Observed, budget_for: ObjectKey | None = None) -> None:
        """Server-side apply, unless this exact object is what we applied and nobody touched it since.

        `budget_for`: the resource whose child this is; its write counts against the pass's
        budget, and waits for the next pass once that is spent."""
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        current = obs.children.get((obj["kind"], meta["name"]))
        rv = current["metadata"]["resourceVersion"] if current else ""
        if self._applied.get(key) == (digest, rv):
            return
        if budget_for is not None and not self._spend(obs, budget_for):
            return
        result = await self.kube.apply(obj)
        self._applied[key] = (digest, result["metadata"]["resourceVersion"])

    @staticmethod
    def _spend(obs: Observed, key: ObjectKey) -> bool:
        """One write from the pass's budget (checked and spent before any await: writes run
        concurrently); False, and `key` deferred, once it is spent."""
        if obs.budget <= 0:
            obs.deferred.add(key)
            return False
        obs.budget -= 1
        return True

    async def _prune(self, ns: str, obs: Observed) -> None:
        """Delete children whose owner is gone (works with or without a garbage collector)."""
        owners = {raw["metadata"].get("uid") for raw in obs.raw.values()}

        async def prune(kind_name: str, name: str) -> None:
            await self.kube.delete(BY_KIND[kind_name], ns, name)
            self._applied.pop((kind_name, ns, name), None)
            log.info("pruned orphan", extra={"kind": kind_name, "namespace": ns, "object": name})

        deletes: list[Awaitable[None]] = []
        for (kind_name, name), child in obs.children.items():
            refs = child["metadata"].get("ownerReferences") or []
            if kind_name == "Deployment" and _is_pool_fleet(child):
                continue  # retired by _pools: scaled to 0 before it goes
            if refs and not any(r.get("uid") in owners for r in refs):
                deletes.append(prune(kind_name, name))
        await bounded(deletes)  # thousands when many Upstreams go at once


async def bounded(coros: Sequence[Awaitable[None]], limit: int = 8) -> None:
    """Run writes concurrently, a few at a time: the API server, not us, is the slow part."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[None]) -> None:
        async with gate:
            await coro

    await asyncio.gather(*(one(c) for c in coros))


def _is_pool_fleet(dep: Obj) -> bool:
    labels = dep["metadata"].get("labels") or {}
    return POOL_LABEL in labels and labels.get(children.OWNER_LABEL, "").startswith("pool.")


def _pool_workers(obs: Observed, pool: str) -> dict[str, dict[str, int]]:
    """Per machine profile, the workers the pool's fleets reserve and how many of them are ready."""
    out: dict[str, dict[str, int]] = {}
    for pf in obs.pool_fleets.get(pool, []):
        dep = obs.children.get(("Deployment", pf.fleet.deployment)) or {}
        counts = out.setdefault(pf.fleet.machine_profile or "", {"reserved": 0, "ready": 0})
        counts["reserved"] += pf.replicas
        # Never more ready than reserved: a fleet being shrunk still counts its old pods for a moment.
        counts["ready"] += min(pf.replicas, (dep.get("status") or {}).get("readyReplicas") or 0)
    return out


def _per_profile(workers: dict[str, dict[str, int]]) -> str:
    return ", ".join(f"{p}: {w['ready']}/{w['reserved']}" for p, w in sorted(workers.items()))


def _ready_reason(kind: str, name: str, outcome: Outcome) -> tuple[str, str]:
    if kind == "Gateway" and name in outcome.tables:
        t = outcome.tables[name]
        return "Compiled", f"routing table epoch {t.epoch} with {len(t.models)} model(s)"
    return {"Upstream": ("Compiled", "in the routing table; ScaledObject applied"),
            "Pool": ("LeaseHeld", "the pool's Lease is current"),
            "Planner": ("Valid", "steps form a DAG and every model resolves")}.get(kind, ("Ready", ""))


def _ts(value: str | None) -> float:
    if not value:
        return time.time()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _drop_none(d: Obj) -> Obj:
    return {k: (_drop_none(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}
