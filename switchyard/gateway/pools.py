"""/v1/pools: tenants create, read, renew and delete their pools (SIE's pool lifecycle).

Only keys with `managePools` (their own tenant's pools) and admin keys (every tenant's)
may call these. A pool of another tenant answers 404 exactly like a missing one, so
names cannot be probed by reading; creating a taken name answers 409 (names are one
namespace, like Kubernetes resource names). Limits come from the Gateway's
spec.poolApi and bind only pools made here; Pools declared in manifests are shown but
are managed where they are declared.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..api.meta import DNS_LABEL
from ..api.pool import DEFAULT_POOL
from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from .auth import authenticate_request
from .http import json_response, read_json
from .poolstore import LeaseLapsed, NameTaken, PoolRecord, PoolStore, iso
from .state import GatewayState, state_of

FIELDS = ("name", "gpus", "models", "ttl_seconds", "tenant")
NAME = re.compile(DNS_LABEL)
MAX_NAME = 63
MAX_MODELS = 64
DEFAULT_TTL_S = 3600
MAX_BODY = 64 * 1024


# -- access ------------------------------------------------------------------------------


def _manager(request: web.Request) -> tuple[GatewayState, RoutingTable, KeyRoute, PoolStore]:
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    if key is None or not key.can("managePools"):
        who = f"API key {key.name!r}" if key is not None else "an anonymous request"
        raise ApiError("forbidden", f"{who} may not manage pools: it needs managePools (or admin)")
    if st.pool_store is None:
        raise ApiError("not_ready", "this gateway has no pool store yet", headers={"Retry-After": "1"})
    return st, table, key, st.pool_store


def _visible(key: KeyRoute, pool: PoolRecord) -> bool:
    """Admin: all; else its tenant's pools, and tenant-less pools its `pools` list allows."""
    if key.admin:
        return True
    if pool.tenant:
        return pool.tenant == key.owner
    return key.allows_pool(pool.name)


def _declared(table: RoutingTable, store: PoolStore, name: str) -> PoolRecord | None:
    """A pool of the table that is not in the store (manifests, the default pool)."""
    route = table.pools.get(name)
    if route is None or (store.holds_declared and name != DEFAULT_POOL):
        return None  # cluster mode: a table entry the API server no longer has was just deleted
    return PoolRecord(route.name, route.tenant, dict(route.gpus), tuple(route.models), route.ttl_seconds, 0.0,
                      api=False)


async def _find(table: RoutingTable, store: PoolStore, key: KeyRoute, name: str) -> PoolRecord:
    record = await store.get(name) if NAME.match(name) and len(name) <= MAX_NAME else None
    if record is None:
        record = _declared(table, store, name)
    if record is None or not _visible(key, record):
        raise ApiError("unknown_pool", f"pool {name!r} does not exist")
    return record


def _managed(record: PoolRecord, table: RoutingTable) -> None:
    """Renew and delete touch only pools made through /v1/pools."""
    if record.name in (DEFAULT_POOL, table.default_pool):
        raise ApiError("pool_protected", f"pool {record.name!r} is the default pool: it always exists")
    if not record.api:
        raise ApiError("pool_protected", f"pool {record.name!r} is declared in the gateway's manifests, not made "
                                         "through /v1/pools: change it where it is declared")


# -- views -------------------------------------------------------------------------------


def reserved(table: RoutingTable, record: PoolRecord) -> dict[str, int]:
    """Workers per profile: gpus[P] for each of the pool's models offering P (x1 without models)."""
    out = {}
    for profile, n in record.gpus.items():
        offering = sum(1 for m in record.models if m in table.models and profile in table.models[m].machine_profiles)
        out[profile] = n * (offering if record.models else 1)
    return out


def view(st: GatewayState, table: RoutingTable, store: PoolStore, record: PoolRecord) -> dict[str, Any]:
    expires = store.expires_at(record)
    ready: dict[str, int] = {}
    for beat in st.registry.live():
        if beat.pool == record.name:
            ready[beat.machine_profile] = ready.get(beat.machine_profile, 0) + 1
    want = reserved(table, record)
    return {
        "name": record.name,
        "tenant": record.tenant or None,
        "models": list(record.models),
        "gpus": dict(record.gpus),
        "ttl_seconds": record.ttl_seconds,
        "expires_at": iso(expires),
        "state": "expired" if expires is not None and expires < time.time() else "active",
        "workers": {p: {"reserved": want.get(p, 0), "ready": ready.get(p, 0)} for p in sorted({*want, *ready})},
    }


# -- handlers ----------------------------------------------------------------------------


async def create_pool(request: web.Request) -> web.Response:
    st, table, key, store = _manager(request)
    body = await read_json(request, min(table.max_request_body_bytes, MAX_BODY))
    record = _validate(table, key, body)
    existing = await store.get(record.name)
    if existing is None and _declared(table, store, record.name) is not None:  # in manifests, or default
        raise ApiError("pool_exists", f"pool {record.name!r} exists already")
    if existing is None:
        limit = table.pool_api.max_pools_per_tenant
        held = sum(1 for p in await store.list() if p.api and p.tenant == record.tenant)
        if held >= limit:
            raise ApiError("too_many_pools", f"tenant {record.tenant!r} holds {held} pools, the limit of "
                                             f"spec.poolApi.maxPoolsPerTenant ({limit}): delete one first")
        try:
            created = await store.create(record)
        except NameTaken as taken:  # another replica (or client) made it in between
            existing = taken.existing
        else:
            # Count again: two replicas creating at once each counted before the other's pool was there.
            # Both may back off then (the caller retries), but the limit is never exceeded.
            held = sum(1 for p in await store.list() if p.api and p.tenant == record.tenant)
            if held > limit:
                await store.delete(created.name)
                raise ApiError("too_many_pools", f"tenant {record.tenant!r} holds {held - 1} pools, the limit of "
                                                 f"spec.poolApi.maxPoolsPerTenant ({limit}): delete one first")
            return json_response(view(st, table, store, created), status=201)
    if existing is not None and existing.api and existing.same_spec(record):
        lapsed = store.expired_at(existing)
        if lapsed is None:
            return json_response(view(st, table, store, existing))  # an idempotent retry
        raise ApiError("pool_exists", f"pool {record.name!r} exists and its lease lapsed at {iso(lapsed)}: "
                                      "delete it to create it again")
    raise ApiError("pool_exists", f"pool {record.name!r} exists already with another spec or tenant")


async def list_pools(request: web.Request) -> web.Response:
    st, table, key, store = _manager(request)
    records = {r.name: r for r in await store.list()}
    for name in table.pools:
        if name not in records and (declared := _declared(table, store, name)) is not None:
            records[name] = declared
    return json_response({"pools": [view(st, table, store, r) for _, r in sorted(records.items())
                                    if _visible(key, r)]})


async def get_pool(request: web.Request) -> web.Response:
    st, table, key, store = _manager(request)
    record = await _find(table, store, key, request.match_info["name"])
    return json_response(view(st, table, store, record))


async def renew_pool(request: web.Request) -> web.Response:
    st, table, key, store = _manager(request)
    record = await _find(table, store, key, request.match_info["name"])
    _managed(record, table)
    try:
        renewed = await store.renew(record.name, time.time())
    except LeaseLapsed as exc:
        raise ApiError("pool_expired", f"pool {record.name!r} expired at {iso(exc.at)}: its lease was not "
                                       "renewed in time; delete it and create it again") from None
    if renewed is None:
        raise ApiError("unknown_pool", f"pool {record.name!r} does not exist")  # deleted meanwhile
    return json_response(view(st, table, store, renewed))


async def delete_pool(request: web.Request) -> web.Response:
    _st, table, key, store = _manager(request)
    name = request.match_info["name"]
    if name in (DEFAULT_POOL, table.default_pool):
        raise ApiError("pool_protected", f"pool {name!r} is the default pool: it cannot be deleted")
    record = await _find(table, store, key, name)
    _managed(record, table)
    if not await store.delete(record.name):
        raise ApiError("unknown_pool", f"pool {name!r} does not exist")
    return json_response({"name": record.name, "deleted": True})


# -- validation --------------------------------------------------------------------------


def _validate(table: RoutingTable, key: KeyRoute, body: Any) -> PoolRecord:
    if not isinstance(body, dict):
        raise ApiError("bad_request", "the body must be a JSON object: {\"name\", \"gpus\", \"models\"?, "
                                      "\"ttl_seconds\"?, \"tenant\"?}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError("bad_request", f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError("bad_request", "name is required: a DNS label (a-z, 0-9, '-', at most 63 characters)")
    if len(name) > MAX_NAME or not NAME.match(name):
        raise ApiError("bad_request", f"name must be a DNS label (a-z, 0-9 and inner '-', at most {MAX_NAME} "
                                      f"characters), not {name[:80]!r}")
    models = _models(table, key, body.get("models", []))
    gpus = _gpus(table, body.get("gpus"), models)
    ttl = body.get("ttl_seconds", min(DEFAULT_TTL_S, table.pool_api.max_ttl_seconds))
    max_ttl = table.pool_api.max_ttl_seconds
    if not _is_int(ttl) or not 1 <= ttl <= max_ttl:
        raise ApiError("bad_request", f"ttl_seconds must be an integer from 1 to {max_ttl} "
                                      f"(spec.poolApi.maxTtlSeconds), not {ttl!r}; a pool made here always expires")
    if key.pools is not None and not key.admin:
        raise ApiError("forbidden", f"API key {key.name!r} may use only the pools it lists "
                                    f"({', '.join(key.pools) or 'none'}): a pool it created would be closed to it")
    tenant = body.get("tenant")
    if tenant is not None and not key.admin:
        raise ApiError("forbidden", f"API key {key.name!r} may create pools only for its own tenant: "
                                    "'tenant' is for admin keys")
    if tenant is None:
        tenant = key.owner
    if not isinstance(tenant, str) or len(tenant) > MAX_NAME or not NAME.match(tenant):
        raise ApiError("bad_request", "tenant must be a DNS label (a-z, 0-9 and inner '-', at most 63 characters)")
    record = PoolRecord(name, tenant, gpus, models, int(ttl), time.time())
    total, limit = sum(reserved(table, record).values()), table.pool_api.max_workers_per_pool
    if total > limit:
        raise ApiError("pool_too_large", f"the pool reserves {total} workers, more than "
                                         f"spec.poolApi.maxWorkersPerPool ({limit})")
    return record


def _models(table: RoutingTable, key: KeyRoute, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
        raise ApiError("bad_request", "models must be a list of model ids")
    if len(raw) > MAX_MODELS:
        raise ApiError("bad_request", f"models may name at most {MAX_MODELS} models")
    if len(set(raw)) != len(raw):
        raise ApiError("bad_request", "models names a model twice")
    for m in raw:
        if m not in table.models:
            raise ApiError("unknown_model", f"model {m[:200]!r} is not served by gateway {table.gateway!r}")
        if not key.allows_model(m):
            raise ApiError("forbidden", f"API key {key.name!r} may not use model {m!r}")
    return tuple(sorted(raw))


def _gpus(table: RoutingTable, raw: Any, models: tuple[str, ...]) -> Mapping[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise ApiError("bad_request", "gpus is required: workers per machine profile, e.g. {\"l4\": 1}")
    offered = set(table.machine_profiles())
    out: dict[str, int] = {}
    for profile, n in sorted(raw.items()):
        if profile not in offered:
            raise ApiError("unknown_machine_profile",
                           f"no model of gateway {table.gateway!r} is offered on machine profile {profile[:80]!r} "
                           f"(offered: {', '.join(sorted(offered))})")
        if models and not any(profile in table.models[m].machine_profiles for m in models):
            raise ApiError("unknown_machine_profile",
                           f"none of the pool's models ({', '.join(models)}) is offered on machine profile "
                           f"{profile!r}: its gpus would reserve nothing")
        if not _is_int(n) or n < 0:
            raise ApiError("bad_request", f"gpus.{profile} must be a whole number of workers (0 or more)")
        out[profile] = n
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
