"""Resolve a request to its lane: model[:profile] -> bundle -> machine profile -> pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..api.table import KeyRoute, ModelRoute, RoutingTable
from ..errors import ApiError
from ..subjects import Lane


@dataclass(frozen=True, slots=True)
class Resolution:
    lane: Lane
    route: ModelRoute
    profile: str | None
    pinned: bool  # the caller named the pool: no 202, a 503 when it has no worker

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
        }


def resolve(
    table: RoutingTable,
    op: str | None,
    model_ref: str,
    *,
    machine_profile: str | None = None,
    pool: str | None = None,
    bundle: str | None = None,
    key: KeyRoute | None = None,
) -> Resolution:
    model, _, profile = model_ref.partition(":")
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

    chosen = _bundle(route, profile or None, bundle)
    return Resolution(Lane(model, chosen, mp, pool), route, profile or None, pinned)


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


def _bundle(route: ModelRoute, profile: str | None, wanted: str | None) -> str:
    compatible = [b.name for b in route.bundles if b.serves(profile)]
    what = f"{route.model}:{profile}" if profile else route.model
    if wanted is not None:
        if wanted not in compatible:
            raise ApiError("incompatible_bundle",
                           f"bundle {wanted!r} is not compatible with model {what!r} "
                           f"(compatible: {', '.join(compatible) or 'none'})")
        return wanted
    if not compatible:
        raise ApiError("incompatible_bundle", f"no bundle serves model {what!r}")
    return compatible[0]  # bundles are sorted by priority, lowest first
