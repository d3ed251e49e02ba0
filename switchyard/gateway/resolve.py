"""Resolve a request to its lane: model[:profile] -> bundle -> machine profile -> pool.

A model's name may be an alias (spec.aliases). The bundle is, in this order: the caller's X-Bundle;
else the weighted split (spec.bundles[].weight) among the compatible bundles, picked by a hash of the
tenant and request id, so a retry or a duplicate lands on the same lane and is deduplicated there;
else the compatible bundle of lowest priority.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.table import BundleRoute, KeyRoute, ModelRoute, RoutingTable
from ..errors import ApiError
from ..subjects import ANONYMOUS_TENANT, Lane

SERVED_BY = "X-Switchyard-Model"  # response header: the model[:profile] that served (an alias's, a fallback's)


@dataclass(frozen=True, slots=True)
class Resolution:
    lane: Lane
    route: ModelRoute
    profile: str | None
    pinned: bool  # the caller named the pool: no 202, a 503 when it has no worker
    split: tuple[BundleRoute, ...] = ()  # the weighted bundles this request was split among; () = no split
    named: str = ""  # the name the caller used, when it was an alias
    fallback_from: str = ""  # the model[:profile] whose lane could not start in time (spec.fallback)

    def params(self, request_params: Mapping[str, Any]) -> dict[str, Any]:
        """Profile defaults under the request's own params."""
        if not self.profile:
            return dict(request_params)
        return {**self.route.profiles[self.profile], **request_params}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.lane.model,
            "profile": self.profile,
            "upstream": self.route.upstream,
            "bundle": self.lane.bundle,
            "machine_profile": self.lane.machine_profile,
            "pool": self.lane.pool,
            "pinned_pool": self.pinned,
            "subject": self.lane.subject,
            **({"alias": self.named} if self.named else {}),
            **({"fallback_from": self.fallback_from} if self.fallback_from else {}),
            **({"split": [{"bundle": b.name, "weight": b.weight} for b in self.split]} if self.split else {}),
        }

    @property
    def served_model(self) -> str:
        """The model[:profile] that serves the request (an alias's or a fallback's model, not the name asked)."""
        return f"{self.lane.model}:{self.profile}" if self.profile else self.lane.model


def resolve(
    table: RoutingTable,
    op: str | None,
    model_ref: str,
    *,
    machine_profile: str | None = None,
    pool: str | None = None,
    bundle: str | None = None,
    key: KeyRoute | None = None,
    request_id: str = "",
) -> Resolution:
    if op is not None and key is not None and not key.allows_operation(op):  # before any model is looked up
        raise ApiError("forbidden", f"API key {key.name!r} may not call {op!r} (its operations: "
                                    f"{', '.join(key.operations or ())})")
    name, _, profile = model_ref.partition(":")
    model = table.model_of(name)
    route = table.models.get(model)
    if route is None:
        raise ApiError("unknown_model", f"model {model!r} is not served by gateway {table.gateway!r}")
    if profile and profile not in route.profiles:
        known = ", ".join(sorted(route.profiles)) or "none"
        raise ApiError("unknown_model", f"model {model!r} has no profile {profile!r} (profiles: {known})")
    if op is not None and op not in route.operations:
        raise ApiError("unsupported_operation",
                       f"model {model!r} does not support {op!r} (supported: {', '.join(route.operations)})")
    if key is not None and not key.allows_model(model):
        raise ApiError("forbidden", f"API key {key.name!r} may not use model {model!r}")

    mp, pool = split_machine_profile(machine_profile, pool)
    mp = mp or route.default_machine_profile
    if mp not in route.machine_profiles:
        raise ApiError("unknown_machine_profile",
                       f"model {model!r} is not offered on machine profile {mp!r} "
                       f"(offered: {', '.join(route.machine_profiles)})")

    pinned = pool is not None
    pool = pool or _default_pool(table, key)
    if pool not in table.pools or not table.pools[pool].allows(key):  # another tenant's pool: as if absent
        raise ApiError("unknown_pool", f"pool {pool!r} does not exist")
    if key is not None and not key.allows_pool(pool):
        raise ApiError("forbidden", f"API key {key.name!r} may not use pool {pool!r}")

    split: tuple[BundleRoute, ...] = ()
    if bundle is not None:
        chosen = _named_bundle(route, profile or None, bundle)
    else:
        tenant = key.owner if key is not None else ANONYMOUS_TENANT  # as auth.tenant_of: ids are scoped by it
        chosen, split = _bundle(route, profile or None, f"{tenant}\x00{request_id}")
    return Resolution(Lane(model, chosen, mp, pool), route, profile or None, pinned, split,
                      name if name != model else "")


def split_machine_profile(mp: str | None, pool: str | None) -> tuple[str | None, str | None]:
    """Accept 'pool/profile' in the machine-profile header, as the SDK's gpu= does."""
    if mp and "/" in mp:
        named_pool, _, mp = mp.partition("/")
        if pool and pool != named_pool:
            raise ApiError("bad_request", f"X-Pool {pool!r} contradicts machine profile pool {named_pool!r}")
        pool = named_pool
    return mp or None, pool or None


def _default_pool(table: RoutingTable, key: KeyRoute | None) -> str:
    if key is None or key.allows_pool(table.default_pool) or not key.pools:
        return table.default_pool
    return key.pools[0]  # a tenant key limited to its own pools


def _named_bundle(route: ModelRoute, profile: str | None, wanted: str) -> str:
    """X-Bundle: any compatible bundle, in the split or not (weight 0 included): explicit wins."""
    compatible = [b.name for b in route.bundles if b.serves(profile)]
    if wanted not in compatible:
        what = f"{route.model}:{profile}" if profile else route.model
        raise ApiError("incompatible_bundle",
                       f"bundle {wanted!r} is not compatible with model {what!r} "
                       f"(compatible: {', '.join(compatible) or 'none'})")
    return wanted


def _bundle(route: ModelRoute, profile: str | None, sticky: str) -> tuple[str, tuple[BundleRoute, ...]]:
    compatible = [b for b in route.bundles if b.serves(profile)]
    if not compatible:
        what = f"{route.model}:{profile}" if profile else route.model
        raise ApiError("incompatible_bundle", f"no bundle serves model {what!r}")
    split = tuple(b for b in compatible if b.weight)
    if not split:
        return compatible[0].name, ()  # bundles are sorted by priority, lowest first
    return pick(split, sticky).name, split


def pick(split: tuple[BundleRoute, ...], sticky: str) -> BundleRoute:
    """The bundle `sticky` (tenant and request id) lands on: a point in [0, total weight) from its hash.

    The weights of the bundles a profile leaves compatible are renormalized: 90/10 among three
    bundles of which one cannot serve the profile is still that profile's whole split.
    """
    total = sum(b.weight or 0 for b in split)
    point = int.from_bytes(hashlib.sha256(sticky.encode()).digest()[:8], "big") % total
    for b in split:
        point -= b.weight or 0
        if point < 0:
            return b
    return split[-1]  # unreachable: the points sum to total
