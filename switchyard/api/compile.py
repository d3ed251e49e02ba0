"""Resources -> one immutable RoutingTable, or issues naming resource and field.

One function serves standalone mode and the operator, so a config that works on
a laptop works in the cluster.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType

from .gateway import Gateway, GatewaySpec
from .issues import CompileError, ConfigIssue
from .loader import ResourceSet
from .planner import Planner
from .pool import DEFAULT_POOL, Pool
from .table import (
    BreakerRoute,
    BundleRoute,
    CorsRoute,
    FallbackRoute,
    GrpcLimits,
    HttpLimits,
    KeyRoute,
    LimitRoute,
    ModelRoute,
    PlannerRoute,
    PolicyRoute,
    PoolApiLimits,
    PoolRoute,
    PriorityRoute,
    QueueLimits,
    RoutingTable,
    StageRoute,
    StepRoute,
    TracingRoute,
    UsageRoute,
)
from .upstream import Upstream

# id(Upstream) -> (that Upstream, its route): the caller's memo across compiles. The operator
# keeps validated Upstreams by resourceVersion, so an unchanged one is the same object next
# pass and its route (and the route's JSON form) is reused; the memo holds each Upstream, so
# an id is never reused while it is in there. The output is what a compile without it gives.
RouteMemo = dict[int, tuple[Upstream, ModelRoute]]


@dataclass(frozen=True)
class CompileResult:
    table: RoutingTable
    issues: tuple[ConfigIssue, ...]

    def raise_for_issues(self) -> RoutingTable:
        if self.issues:
            raise CompileError(self.issues)
        return self.table


def compile_table(rs: ResourceSet, *, gateway: str | None = None, epoch: int = 1,
                  memo: RouteMemo | None = None) -> CompileResult:
    """Compile the resources that belong to `gateway` (the only one when None).

    Invalid resources are left out of the table and reported; the rest still
    compiles, so one bad Upstream cannot take a gateway's other models down.
    """
    issues: list[ConfigIssue] = []
    gw = _pick_gateway(rs.gateways, gateway, issues)
    name = gw.name if gw else (gateway or "standalone")
    spec = gw.spec if gw else GatewaySpec()

    def mine(ref: str | None) -> bool:
        return ref is None or ref == name

    upstreams = [u for u in rs.upstreams if mine(u.spec.gateway_ref)]
    models = _models(upstreams, issues, memo)
    aliases = _shaping(upstreams, models, issues)
    pools = _pools([p for p in rs.pools if mine(p.spec.gateway_ref)], models, issues)
    if spec.default_pool not in pools and gw is not None:
        issues.append(ConfigIssue(gw.ref, "spec.defaultPool", f"pool {spec.default_pool!r} does not exist"))
    keys = _keys(gw, rs, pools, models, issues) if gw else ()
    if gw is not None and spec.max_request_body_bytes > spec.nats.max_payload_bytes:
        issues.append(ConfigIssue(gw.ref, "spec.maxRequestBodyBytes",
                                  f"{spec.max_request_body_bytes} bytes cannot fit in a NATS message: "
                                  f"spec.nats.maxPayloadBytes is {spec.nats.max_payload_bytes}"))
    planners = _planners([p for p in rs.planners if mine(p.spec.gateway_ref)], models, issues)

    table = RoutingTable(
        epoch=epoch,
        gateway=name,
        default_pool=spec.default_pool if spec.default_pool in pools else DEFAULT_POOL,
        max_request_body_bytes=spec.max_request_body_bytes,
        anonymous=spec.auth.anonymous,
        result_ttl_seconds=spec.jobs.result_ttl_seconds,
        sync_result_ttl_seconds=spec.jobs.sync_result_ttl_seconds,
        trusted_proxies=tuple(spec.auth.trusted_proxies),
        max_auth_failures=spec.auth.max_failures_per_minute,
        cors=CorsRoute(tuple(spec.cors.allow_origins), tuple(spec.cors.allow_headers),
                       spec.cors.max_age_seconds),
        models=MappingProxyType(models),
        pools=MappingProxyType(pools),
        keys=keys,
        planners=MappingProxyType(planners),
        aliases=MappingProxyType(aliases),
        http=HttpLimits(
            max_connections=spec.listeners.http.max_connections,
            header_timeout_s=spec.listeners.http.header_timeout_seconds,
            body_timeout_s=spec.listeners.http.body_timeout_seconds,
            keep_alive_timeout_s=spec.listeners.http.keep_alive_timeout_seconds,
        ),
        queue=QueueLimits(
            replicas=spec.queue.replicas,
            max_bytes=spec.queue.max_bytes,
            max_messages_per_lane=spec.queue.max_messages_per_lane,
            max_payload_bytes=spec.nats.max_payload_bytes,
        ),
        pool_api=PoolApiLimits(spec.pool_api.max_workers_per_pool, spec.pool_api.max_pools_per_tenant,
                               spec.pool_api.max_ttl_seconds),
        tracing=(TracingRoute(spec.tracing.endpoint.rstrip("/"), spec.tracing.sample_ratio)
                 if spec.tracing.endpoint else None),
        openai_wait_s=spec.openai.default_wait_seconds,
        grpc=_grpc_limits(spec),
        priority=PriorityRoute(MappingProxyType(dict(spec.priority.tiers)), tuple(spec.priority.header_tiers)),
        policy=_policy(spec),
        usage=UsageRoute(spec.usage.retention_days, float(spec.usage.anomaly.window_seconds),
                         float(spec.usage.anomaly.baseline_seconds), spec.usage.anomaly.factor,
                         spec.usage.anomaly.min_requests),
    )
    return CompileResult(table, tuple(issues))


def _policy(spec: GatewaySpec) -> PolicyRoute:
    """spec.policy as the table carries it; whether a custom stage is installed is checked where it runs."""
    return PolicyRoute(tuple(
        StageRoute(s.name, s.enabled,
                   tuple(LimitRoute(lim.name, lim.kind, lim.per, lim.limit, lim.window_seconds, lim.period,
                                    tuple(lim.tiers) if lim.tiers else None) for lim in s.limits or ()),
                   MappingProxyType(dict(s.params)) if s.params is not None else None,
                   MappingProxyType(dict(s.config)) if s.config is not None else None)
        for s in spec.policy.stages))


def _grpc_limits(spec: GatewaySpec) -> GrpcLimits | None:
    g = spec.listeners.grpc
    if g is None:
        return None
    return GrpcLimits(g.max_receive_message_bytes or spec.max_request_body_bytes, g.max_send_message_bytes,
                      g.keepalive_time_seconds, g.keepalive_timeout_seconds, g.min_client_ping_interval_seconds)


def _pick_gateway(gateways: list[Gateway], wanted: str | None, issues: list[ConfigIssue]) -> Gateway | None:
    if wanted is not None:
        found = [g for g in gateways if g.name == wanted]
        if not found:
            issues.append(ConfigIssue(f"Gateway/{wanted}", "", "Gateway not found"))
        return found[0] if found else None
    if len(gateways) > 1:
        names = ", ".join(sorted(g.name for g in gateways))
        issues.append(ConfigIssue("Gateway/*", "", f"several Gateways ({names}); name the one to serve"))
    if not gateways:
        issues.append(ConfigIssue("Gateway/*", "", "no Gateway resource found"))
    return gateways[0] if gateways else None


def _models(upstreams: list[Upstream], issues: list[ConfigIssue], memo: RouteMemo | None) -> dict[str, ModelRoute]:
    out: dict[str, ModelRoute] = {}
    owner: dict[str, str] = {}
    used: RouteMemo = {}
    for u in sorted(upstreams, key=lambda u: u.name):
        s = u.spec
        if s.model in out:
            issues.append(ConfigIssue(u.ref, "spec.model",
                                      f"model {s.model!r} is already served by Upstream {owner[s.model]}"))
            continue
        owner[s.model] = u.name
        held = memo.get(id(u)) if memo is not None else None
        route = held[1] if held is not None and held[0] is u else _route(u)
        used[id(u)] = (u, route)
        out[s.model] = route
    if memo is not None:  # only what this compile used: a deleted Upstream leaves the memo
        memo.clear()
        memo.update(used)
    return out


def _shaping(upstreams: list[Upstream], models: dict[str, ModelRoute], issues: list[ConfigIssue]) -> dict[str, str]:
    """Aliases (unique across models and aliases: the first Upstream by name keeps one) and fallbacks
    (naming a served model). A conflicting alias or a dangling fallback is reported and left out;
    the model itself still serves."""
    aliases: dict[str, str] = {}
    for u in sorted(upstreams, key=lambda u: u.name):
        route = models.get(u.spec.model)
        if route is None or route.upstream != u.name:
            continue  # left out already (its model is another Upstream's)
        kept = []
        for i, alias in enumerate(route.aliases):
            taken = (f"model {alias!r} is served by Upstream {models[alias].upstream}" if alias in models else
                     f"alias {alias!r} already names {aliases[alias]!r}" if alias in aliases else None)
            if taken:
                issues.append(ConfigIssue(u.ref, f"spec.aliases[{i}]", f"{taken}; the alias is left out"))
                continue
            aliases[alias] = route.model
            kept.append(alias)
        fallback = route.fallback
        if fallback is not None and fallback.model not in models:
            issues.append(ConfigIssue(u.ref, "spec.fallback.model",
                                      f"no Upstream on this Gateway serves model {fallback.model!r} "
                                      "(name a model, not an alias); the fallback is left out"))
            fallback = None
        if len(kept) != len(route.aliases) or fallback is not route.fallback:
            models[route.model] = replace(route, aliases=tuple(kept), fallback=fallback)
    return aliases


def _route(u: Upstream) -> ModelRoute:
    s = u.spec
    cb = s.circuit_breaker
    return ModelRoute(
        model=s.model,
        upstream=u.name,
        operations=tuple(sorted(set(s.operations))),
        bundles=tuple(
            BundleRoute(b.name, b.priority, tuple(b.profiles), b.weight)
            for b in sorted(s.bundles, key=lambda b: (b.priority, b.name))
        ),
        profiles=MappingProxyType({p.name: MappingProxyType(dict(p.params)) for p in s.profiles}),
        machine_profiles=tuple(s.machine_profiles),
        default_machine_profile=s.default_machine_profile or s.machine_profiles[0],
        timeout_s=s.timeout_seconds,
        max_attempts=s.max_attempts,
        worker_service=s.workers.service,
        cold_start_s=float(s.scaling.cold_start_seconds),
        aliases=tuple(s.aliases),
        breaker=(BreakerRoute(cb.consecutive_failures, float(cb.cool_off_seconds), cb.half_open_probes)
                 if cb is not None else None),
        fallback=FallbackRoute(s.fallback.model, float(s.fallback.after_seconds)) if s.fallback else None,
    )


def _pools(pools: list[Pool], models: dict[str, ModelRoute], issues: list[ConfigIssue]) -> dict[str, PoolRoute]:
    # The default pool always exists and never expires, declared or not.
    out = {DEFAULT_POOL: PoolRoute(DEFAULT_POOL, MappingProxyType({}), 0)}
    offered = {mp for m in models.values() for mp in m.machine_profiles}
    for p in sorted(pools, key=lambda p: p.name):
        unknown = sorted(set(p.spec.gpus) - offered)
        if unknown:
            issues.append(ConfigIssue(p.ref, f"spec.gpus.{unknown[0]}",
                                      f"no Upstream offers machine profile {unknown[0]!r}"))
            continue
        ttl = 0 if p.name == DEFAULT_POOL else p.spec.ttl_seconds
        missing = [m for m in p.spec.models if m not in models]
        if missing:
            issues.append(ConfigIssue(p.ref, "spec.models", f"no Upstream serves model {missing[0]!r}"))
            continue
        out[p.name] = PoolRoute(p.name, MappingProxyType(dict(sorted(p.spec.gpus.items()))), ttl,
                                tuple(sorted(p.spec.models)), p.spec.tenant or "")
    return out


def _keys(gw: Gateway, rs: ResourceSet, pools: dict[str, PoolRoute], models: dict[str, ModelRoute],
          issues: list[ConfigIssue]) -> tuple[KeyRoute, ...]:
    secrets = {s.metadata.name: s for s in rs.secrets
               if s.metadata.namespace in (None, gw.metadata.namespace)}
    out = []
    for i, k in enumerate(gw.spec.auth.api_keys):
        field = f"spec.auth.apiKeys[{i}]"
        secret = secrets.get(k.secret_ref.name)
        value = secret.value(k.secret_ref.key) if secret else None
        if value is None:
            issues.append(ConfigIssue(gw.ref, f"{field}.secretRef",
                                      f"Secret {k.secret_ref.name!r} has no key {k.secret_ref.key!r}"))
            continue
        if len(value) < 16:
            issues.append(ConfigIssue(gw.ref, f"{field}.secretRef", "API key is shorter than 16 bytes"))
            continue
        bad = [p for p in k.pools or () if p not in pools] + [m for m in k.models or () if m not in models]
        if bad:
            issues.append(ConfigIssue(gw.ref, field, f"names unknown pool or model {bad[0]!r}"))
            continue
        rot = k.rotation
        out.append(KeyRoute(
            k.name, hash_key(value), _opt(k.pools), _opt(k.models), k.tenant or "", k.admin,
            k.manage_pools or "managePools" in k.scopes, k.tier, operations=_opt(list(k.operations or ())),
            scopes=frozenset(k.scopes), not_before=_stamp(k.not_before), not_after=_stamp(k.not_after),
            allowed_cidrs=tuple(k.allowed_cidrs) if k.allowed_cidrs is not None else None,
            successor=rot.successor if rot else "", sunset_at=rot.sunset_at.timestamp() if rot else None))
    # A successor left out above (its Secret missing, say) leaves the old key without one: say so, keep it.
    names = {r.name for r in out}
    for i, k in enumerate(gw.spec.auth.api_keys):
        if k.rotation is not None and k.name in names and k.rotation.successor not in names:
            issues.append(ConfigIssue(gw.ref, f"{field_of(i)}.rotation.successor",
                                      f"successor {k.rotation.successor!r} was left out of the table"))
    return tuple(out)


def _planners(planners: list[Planner], models: dict[str, ModelRoute],
              issues: list[ConfigIssue]) -> dict[str, PlannerRoute]:
    out = {}
    for p in sorted(planners, key=lambda p: p.name):
        problems = []
        for i, step in enumerate(p.spec.steps):
            model, _, profile = step.model.partition(":")
            route = models.get(model)
            if route is None:
                problems.append((f"spec.steps[{i}].model", f"no Upstream serves model {model!r}"))
            elif profile and profile not in route.profiles:
                problems.append((f"spec.steps[{i}].model", f"model {model!r} has no profile {profile!r}"))
            elif step.operation not in route.operations:
                problems.append((f"spec.steps[{i}].operation",
                                 f"model {model!r} does not support {step.operation!r}"))
        if problems:
            issues.extend(ConfigIssue(p.ref, f, m) for f, m in problems)
            continue
        steps = tuple(StepRoute(s.name, s.model, s.operation, tuple(s.depends_on),
                                MappingProxyType(dict(s.params))) for s in p.spec.steps)
        out[p.name] = PlannerRoute(p.name, steps, p.spec.output or steps[-1].name)
    return out


def field_of(i: int) -> str:
    return f"spec.auth.apiKeys[{i}]"


def _stamp(t: datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


def hash_key(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def _opt(v: list[str] | None) -> tuple[str, ...] | None:
    return tuple(v) if v else None
