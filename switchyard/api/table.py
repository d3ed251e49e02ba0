"""The compiled routing table: immutable, hashed, the only config a gateway serves.

The operator writes it into a ConfigMap as JSON; standalone mode compiles it in
process. Both go through `switchyard.api.compile`, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import orjson

FORMAT_VERSION = 1
DEFAULT_COLD_START_S = 180.0  # a typical GPU node + image pull + model load


@dataclass(frozen=True, slots=True)
class BundleRoute:
    name: str
    priority: int
    profiles: tuple[str, ...] = ()  # empty: serves every profile
    weight: int | None = None  # percent of the model's split (routing.py); None: not in the split

    def serves(self, profile: str | None) -> bool:
        return not self.profiles or profile is None or profile in self.profiles


@dataclass(frozen=True, slots=True)
class BreakerRoute:
    """spec.circuitBreaker: a lane's circuit opens after this many consecutive worker failures."""

    consecutive_failures: int
    cool_off_s: float
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class FallbackRoute:
    """spec.fallback: where a request goes when the model's lane cannot start a worker within after_s."""

    model: str
    after_s: float


@dataclass(frozen=True, slots=True)
class ModelRoute:
    model: str
    upstream: str
    operations: tuple[str, ...]
    bundles: tuple[BundleRoute, ...]  # sorted: lowest priority first
    profiles: Mapping[str, Mapping[str, Any]]
    machine_profiles: tuple[str, ...]
    default_machine_profile: str
    timeout_s: float
    max_attempts: int
    worker_service: str
    cold_start_s: float = DEFAULT_COLD_START_S  # the ETA of a 202 until a cold start is measured
    aliases: tuple[str, ...] = ()  # other names of the model (RoutingTable.aliases maps them to it)
    breaker: BreakerRoute | None = None  # None: no circuit breaker on its lanes
    fallback: FallbackRoute | None = None
    # Its JSON form, made once: the operator reuses routes of unchanged Upstreams from pass to
    # pass (compile.RouteMemo), so a table of 10,000 models does not rebuild 10,000 dicts each time.
    wire: dict[str, Any] | None = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PoolRoute:
    name: str
    gpus: Mapping[str, int]
    ttl_seconds: int
    models: tuple[str, ...] = ()  # models its dedicated workers serve (rendered by the operator)
    tenant: str = ""  # "": any key its `pools` list allows; else only that tenant's keys and admin keys

    def allows(self, key: KeyRoute | None) -> bool:
        """May `key` send work to this pool? (A key's own `pools` list is checked separately.)"""
        return not self.tenant or (key is not None and (key.admin or key.owner == self.tenant))


@dataclass(frozen=True, slots=True)
class KeyRoute:
    name: str
    sha256: str  # hex digest of the key; the key itself is never kept
    pools: tuple[str, ...] | None
    models: tuple[str, ...] | None
    tenant: str = ""  # jobs and request ids are scoped by it; "" = the key's name
    admin: bool = False  # reads every tenant's jobs and the /health detail, manages every pool
    manage_pools: bool = False  # creates, renews and deletes its tenant's pools (/v1/pools)
    tier: str = "default"  # spec.auth.apiKeys[].tier: which limits apply
    operations: tuple[str, ...] | None = None  # None: every operation
    scopes: frozenset[str] = frozenset()  # admin rights held one by one (api.gateway.Scope)
    not_before: float | None = None  # unix seconds; before it: 401 key_not_yet_valid
    not_after: float | None = None  # from it: 401 key_expired
    allowed_cidrs: tuple[str, ...] | None = None  # client IPs it may come from; None: any
    successor: str = ""  # rotation: the key replacing this one ("" when not rotating)
    sunset_at: float | None = None  # rotation: when this key stops working

    @property
    def owner(self) -> str:
        return self.tenant or self.name

    def can(self, scope: str) -> bool:
        """Holds this admin right (api.gateway.Scope)? An admin key holds every one."""
        return self.admin or scope in self.scopes or (scope == "managePools" and self.manage_pools)

    def allows_operation(self, op: str) -> bool:
        return self.operations is None or op in self.operations

    def allows_pool(self, pool: str) -> bool:
        return self.pools is None or pool in self.pools

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class StepRoute:
    name: str
    model: str
    operation: str
    depends_on: tuple[str, ...]
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PlannerRoute:
    name: str
    steps: tuple[StepRoute, ...]
    output: str


@dataclass(frozen=True, slots=True)
class CorsRoute:
    allow_origins: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    max_age_seconds: int = 600


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_connections: int = 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 75.0


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """spec.listeners.grpc: the gRPC server's options (read when its server starts)."""

    max_receive_bytes: int
    max_send_bytes: int = 64 * 1024 * 1024
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    min_ping_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class QueueLimits:
    replicas: int = 1
    max_bytes: int = 1024**3
    max_messages_per_lane: int = 100_000
    max_payload_bytes: int = 8 * 1024 * 1024  # what the NATS servers are configured with


@dataclass(frozen=True, slots=True)
class PoolApiLimits:
    max_workers_per_pool: int = 8
    max_pools_per_tenant: int = 4
    max_ttl_seconds: int = 86_400


@dataclass(frozen=True, slots=True)
class TracingRoute:
    endpoint: str  # OTLP/HTTP base URL; spans go to <endpoint>/v1/traces
    sample_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class LimitRoute:
    """spec.policy.stages[].limits[]: one limit (switchyard/gateway/policy/ counts it)."""

    name: str
    kind: str  # requests | items | tokens | concurrent
    per: str  # key | tenant | ip | global
    limit: int
    window_s: int | None = None  # a fixed window; None with a period or for concurrent
    period: str | None = None  # day | month (UTC calendar quotas)
    tiers: tuple[str, ...] | None = None  # only keys of these tiers; None: every request


@dataclass(frozen=True, slots=True)
class StageRoute:
    name: str
    enabled: bool = True
    limits: tuple[LimitRoute, ...] = ()
    params: Mapping[str, Any] | None = None  # the defaults stage
    config: Mapping[str, Any] | None = None  # a custom stage


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    stages: tuple[StageRoute, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageRoute:
    """spec.usage: the usage ledger's retention, and the anomaly rule (gateway/usage_anomaly.py)."""

    retention_days: int = 35
    anomaly_window_s: float = 300.0
    anomaly_baseline_s: float = 3600.0
    anomaly_factor: float = 10.0
    anomaly_min_requests: int = 100


@dataclass(frozen=True, slots=True)
class PriorityRoute:
    """spec.priority: the class of each tier's requests, and the tiers whose keys may send X-Priority."""

    tiers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    header_tiers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"tiers": dict(sorted(self.tiers.items())), "headerTiers": list(self.header_tiers)}

    @classmethod
    def from_dict(cls, v: Mapping[str, Any] | None) -> PriorityRoute:
        v = v or {}
        return cls(MappingProxyType(dict(v.get("tiers", {}))), tuple(v.get("headerTiers", ())))


@dataclass(frozen=True, slots=True)
class RoutingTable:
    epoch: int
    gateway: str
    default_pool: str
    max_request_body_bytes: int
    anonymous: bool
    result_ttl_seconds: int
    cors: CorsRoute
    models: Mapping[str, ModelRoute]
    pools: Mapping[str, PoolRoute]
    keys: tuple[KeyRoute, ...]
    planners: Mapping[str, PlannerRoute]
    http: HttpLimits = field(default_factory=HttpLimits)
    queue: QueueLimits = field(default_factory=QueueLimits)
    pool_api: PoolApiLimits = field(default_factory=PoolApiLimits)
    tracing: TracingRoute | None = None  # None: tracing off (the request path checks only this)
    priority: PriorityRoute = field(default_factory=PriorityRoute)  # spec.priority
    openai_wait_s: int = 0  # spec.openai.defaultWaitSeconds: the hold of an OpenAI request without Prefer: wait
    grpc: GrpcLimits | None = None  # spec.listeners.grpc; None: no gRPC listener
    sync_result_ttl_seconds: int = 300  # spec.jobs.syncResultTtlSeconds: synchronous results kept to re-fetch
    trusted_proxies: tuple[str, ...] = ()  # spec.auth.trustedProxies: CIDRs whose X-Forwarded-For is believed
    max_auth_failures: int = 10  # spec.auth.maxFailuresPerMinute: unknown keys per client IP per minute
    policy: PolicyRoute = field(default_factory=PolicyRoute)  # spec.policy: the chain's stages
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # alias -> model
    usage: UsageRoute = field(default_factory=UsageRoute)  # spec.usage
    hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.to_dict()))

    def bundles(self) -> dict[str, list[str]]:
        """Every bundle name and the models it serves."""
        return bundles_of(self.models.values())

    def model_of(self, name: str) -> str:
        """The model a name stands for: an alias's model, else the name itself."""
        return self.aliases.get(name, name)

    def machine_profiles(self) -> list[str]:
        return sorted({mp for r in self.models.values() for mp in r.machine_profiles})

    def with_epoch(self, epoch: int) -> RoutingTable:
        return replace(self, epoch=epoch)  # the hash leaves the epoch out: it stays valid

    # -- serialization -----------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # "tracing" only when on: tables without it keep the hash they had before the field existed.
        tracing = ({"tracing": {"endpoint": self.tracing.endpoint, "sampleRatio": self.tracing.sample_ratio}}
                   if self.tracing is not None else {})
        return {
            "formatVersion": FORMAT_VERSION,
            "epoch": self.epoch,
            "hash": self.hash,
            "gateway": self.gateway,
            "defaultPool": self.default_pool,
            "maxRequestBodyBytes": self.max_request_body_bytes,
            "anonymous": self.anonymous,
            "resultTtlSeconds": self.result_ttl_seconds,
            "syncResultTtlSeconds": self.sync_result_ttl_seconds,
            "cors": {
                "allowOrigins": list(self.cors.allow_origins),
                "allowHeaders": list(self.cors.allow_headers),
                "maxAgeSeconds": self.cors.max_age_seconds,
            },
            "models": {k: _model_to_dict(v) for k, v in sorted(self.models.items())},
            "pools": {
                k: {"gpus": dict(sorted(p.gpus.items())), "ttlSeconds": p.ttl_seconds, "models": list(p.models),
                    "tenant": p.tenant}
                for k, p in sorted(self.pools.items())
            },
            "keys": [
                {"name": k.name, "sha256": k.sha256, "pools": _opt_list(k.pools), "models": _opt_list(k.models),
                 "tenant": k.tenant, "admin": k.admin, "managePools": k.manage_pools, **_key_extras(k)}
                for k in self.keys
            ],
            "http": {
                "maxConnections": self.http.max_connections,
                "headerTimeoutSeconds": self.http.header_timeout_s,
                "bodyTimeoutSeconds": self.http.body_timeout_s,
                "keepAliveTimeoutSeconds": self.http.keep_alive_timeout_s,
            },
            "queue": {
                "replicas": self.queue.replicas,
                "maxBytes": self.queue.max_bytes,
                "maxMessagesPerLane": self.queue.max_messages_per_lane,
                "maxPayloadBytes": self.queue.max_payload_bytes,
            },
            "poolApi": {
                "maxWorkersPerPool": self.pool_api.max_workers_per_pool,
                "maxPoolsPerTenant": self.pool_api.max_pools_per_tenant,
                "maxTtlSeconds": self.pool_api.max_ttl_seconds,
            },
            "planners": {
                k: {
                    "output": p.output,
                    "steps": [
                        {"name": s.name, "model": s.model, "operation": s.operation,
                         "dependsOn": list(s.depends_on), "params": dict(s.params)}
                        for s in p.steps
                    ],
                }
                for k, p in sorted(self.planners.items())
            },
            **tracing,
            # Only when set: tables without it keep the hash they had before the field existed.
            **({"priority": self.priority.to_dict()} if self.priority != PriorityRoute() else {}),
            # Only when set: tables without it keep the hash they had before the field existed.
            **({"openaiDefaultWaitSeconds": self.openai_wait_s} if self.openai_wait_s else {}),
            **({"auth": {"trustedProxies": list(self.trusted_proxies), "maxFailuresPerMinute": self.max_auth_failures}}
               if self.trusted_proxies or self.max_auth_failures != 10 else {}),
            **({"grpc": {
                "maxReceiveBytes": self.grpc.max_receive_bytes, "maxSendBytes": self.grpc.max_send_bytes,
                "keepaliveTimeSeconds": self.grpc.keepalive_time_s,
                "keepaliveTimeoutSeconds": self.grpc.keepalive_timeout_s,
                "minPingIntervalSeconds": self.grpc.min_ping_interval_s,
            }} if self.grpc is not None else {}),
            **({"policy": _policy_to_dict(self.policy)} if self.policy.stages else {}),  # the hash stays without
            **({"aliases": dict(sorted(self.aliases.items()))} if self.aliases else {}),
            # Only when set: tables without it keep the hash they had before the field existed.
            **({"usage": _usage_to_dict(self.usage)} if self.usage != UsageRoute() else {}),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes | str) -> RoutingTable:
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoutingTable:
        if d.get("formatVersion") != FORMAT_VERSION:
            raise ValueError(f"unsupported routing table formatVersion {d.get('formatVersion')!r}")
        cors = d["cors"]
        return cls(
            epoch=int(d["epoch"]),
            gateway=d["gateway"],
            default_pool=d["defaultPool"],
            max_request_body_bytes=int(d["maxRequestBodyBytes"]),
            anonymous=bool(d["anonymous"]),
            result_ttl_seconds=int(d["resultTtlSeconds"]),
            sync_result_ttl_seconds=int(d.get("syncResultTtlSeconds", 300)),
            cors=CorsRoute(tuple(cors["allowOrigins"]), tuple(cors["allowHeaders"]),
                           int(cors["maxAgeSeconds"])),
            models=_frozen({k: _model_from_dict(k, v) for k, v in d["models"].items()}),
            pools=_frozen({
                k: PoolRoute(k, _frozen(dict(v["gpus"])), int(v["ttlSeconds"]), tuple(v.get("models", ())),
                             v.get("tenant", ""))
                for k, v in d["pools"].items()
            }),
            keys=tuple(
                KeyRoute(k["name"], k["sha256"], _opt_tuple(k.get("pools")), _opt_tuple(k.get("models")),
                         k.get("tenant", ""), bool(k.get("admin", False)), bool(k.get("managePools", False)),
                         **_key_extras_from(k))
                for k in d["keys"]
            ),
            http=_http_from_dict(d.get("http", {})),
            queue=_queue_from_dict(d.get("queue", {})),
            pool_api=_pool_api_from_dict(d.get("poolApi", {})),
            tracing=_tracing_from_dict(d.get("tracing")),
            priority=PriorityRoute.from_dict(d.get("priority")),
            openai_wait_s=int(d.get("openaiDefaultWaitSeconds", 0)),
            trusted_proxies=tuple(d.get("auth", {}).get("trustedProxies", ())),
            max_auth_failures=int(d.get("auth", {}).get("maxFailuresPerMinute", 10)),
            grpc=_grpc_from_dict(d.get("grpc")),
            policy=_policy_from_dict(d.get("policy")),
            aliases=_frozen(dict(d.get("aliases", {}))),
            usage=_usage_from_dict(d.get("usage")),
            planners=_frozen({
                k: PlannerRoute(
                    name=k,
                    output=v["output"],
                    steps=tuple(
                        StepRoute(s["name"], s["model"], s["operation"], tuple(s["dependsOn"]),
                                  _frozen(dict(s["params"])))
                        for s in v["steps"]
                    ),
                )
                for k, v in d["planners"].items()
            }),
            hash=d.get("hash", ""),
        )


def bundles_of(routes: Iterable[ModelRoute]) -> dict[str, list[str]]:
    """Bundle name -> the models among `routes` it serves."""
    out: dict[str, list[str]] = {}
    for route in routes:
        for b in route.bundles:
            out.setdefault(b.name, []).append(route.model)
    return {k: sorted(v) for k, v in sorted(out.items())}


def content_hash(d: Mapping[str, Any]) -> str:
    """SHA-256 over everything but the epoch and the hash itself."""
    body = {k: v for k, v in d.items() if k not in ("epoch", "hash")}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _key_extras(k: KeyRoute) -> dict[str, Any]:
    """The fields added to keys after the table format settled, each only when set: tables of keys
    without them keep the hash they had."""
    out: dict[str, Any] = {}
    if k.tier != "default":
        out["tier"] = k.tier
    if k.operations is not None:
        out["operations"] = list(k.operations)
    if k.scopes:
        out["scopes"] = sorted(k.scopes)
    if k.not_before is not None:
        out["notBefore"] = k.not_before
    if k.not_after is not None:
        out["notAfter"] = k.not_after
    if k.allowed_cidrs is not None:
        out["allowedCidrs"] = list(k.allowed_cidrs)
    if k.successor:
        out["rotation"] = {"successor": k.successor, "sunsetAt": k.sunset_at}
    return out


def _key_extras_from(k: Mapping[str, Any]) -> dict[str, Any]:
    rotation = k.get("rotation") or {}
    return {
        "tier": str(k.get("tier", "default")),
        "operations": _opt_tuple(k.get("operations")) if "operations" in k else None,
        "scopes": frozenset(k.get("scopes", ())),
        "not_before": _opt_float(k.get("notBefore")),
        "not_after": _opt_float(k.get("notAfter")),
        "allowed_cidrs": tuple(k["allowedCidrs"]) if k.get("allowedCidrs") is not None else None,
        "successor": str(rotation.get("successor", "")),
        "sunset_at": _opt_float(rotation.get("sunsetAt")),
    }


def _opt_float(v: Any) -> float | None:
    return float(v) if v is not None else None


def _model_to_dict(r: ModelRoute) -> dict[str, Any]:
    """Shared, never to be modified: made once per route (see ModelRoute.wire)."""
    if r.wire is None:
        object.__setattr__(r, "wire", _model_wire(r))
    return r.wire  # type: ignore[return-value]


def _model_wire(r: ModelRoute) -> dict[str, Any]:
    # aliases, circuitBreaker, fallback and a bundle's weight only when set: tables without them keep their hash.
    shaping: dict[str, Any] = {}
    if r.aliases:
        shaping["aliases"] = list(r.aliases)
    if r.breaker is not None:
        shaping["circuitBreaker"] = {"consecutiveFailures": r.breaker.consecutive_failures,
                                     "coolOffSeconds": r.breaker.cool_off_s,
                                     "halfOpenProbes": r.breaker.half_open_probes}
    if r.fallback is not None:
        shaping["fallback"] = {"model": r.fallback.model, "afterSeconds": r.fallback.after_s}
    return {
        **shaping,
        "upstream": r.upstream,
        "operations": list(r.operations),
        "bundles": [{"name": b.name, "priority": b.priority, "profiles": list(b.profiles),
                     **({"weight": b.weight} if b.weight is not None else {})} for b in r.bundles],
        "profiles": {k: dict(v) for k, v in sorted(r.profiles.items())},
        "machineProfiles": list(r.machine_profiles),
        "defaultMachineProfile": r.default_machine_profile,
        "timeoutSeconds": r.timeout_s,
        "maxAttempts": r.max_attempts,
        "workerService": r.worker_service,
        "coldStartSeconds": r.cold_start_s,
    }


def _model_from_dict(model: str, v: Mapping[str, Any]) -> ModelRoute:
    return ModelRoute(
        model=model,
        upstream=v["upstream"],
        operations=tuple(v["operations"]),
        bundles=tuple(BundleRoute(b["name"], int(b["priority"]), tuple(b["profiles"]), _opt_int(b.get("weight")))
                      for b in v["bundles"]),
        profiles=_frozen({k: _frozen(dict(p)) for k, p in v["profiles"].items()}),
        machine_profiles=tuple(v["machineProfiles"]),
        default_machine_profile=v["defaultMachineProfile"],
        timeout_s=float(v["timeoutSeconds"]),
        max_attempts=int(v["maxAttempts"]),
        worker_service=v["workerService"],
        cold_start_s=float(v.get("coldStartSeconds", DEFAULT_COLD_START_S)),  # absent in tables written before it
        aliases=tuple(v.get("aliases", ())),
        breaker=_breaker_from_dict(v.get("circuitBreaker")),
        fallback=(FallbackRoute(v["fallback"]["model"], float(v["fallback"]["afterSeconds"]))
                  if v.get("fallback") else None),
    )


def _breaker_from_dict(v: Mapping[str, Any] | None) -> BreakerRoute | None:
    if not v:
        return None
    return BreakerRoute(int(v["consecutiveFailures"]), float(v["coolOffSeconds"]), int(v.get("halfOpenProbes", 1)))


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _usage_to_dict(u: UsageRoute) -> dict[str, Any]:
    return {"retentionDays": u.retention_days, "anomalyWindowSeconds": u.anomaly_window_s,
            "anomalyBaselineSeconds": u.anomaly_baseline_s, "anomalyFactor": u.anomaly_factor,
            "anomalyMinRequests": u.anomaly_min_requests}


def _usage_from_dict(v: Mapping[str, Any] | None) -> UsageRoute:
    if not v:
        return UsageRoute()
    return UsageRoute(int(v["retentionDays"]), float(v["anomalyWindowSeconds"]), float(v["anomalyBaselineSeconds"]),
                      float(v["anomalyFactor"]), int(v["anomalyMinRequests"]))


def _http_from_dict(v: Mapping[str, Any]) -> HttpLimits:
    dflt = HttpLimits()
    return HttpLimits(
        max_connections=int(v.get("maxConnections", dflt.max_connections)),
        header_timeout_s=float(v.get("headerTimeoutSeconds", dflt.header_timeout_s)),
        body_timeout_s=float(v.get("bodyTimeoutSeconds", dflt.body_timeout_s)),
        keep_alive_timeout_s=float(v.get("keepAliveTimeoutSeconds", dflt.keep_alive_timeout_s)),
    )


def _grpc_from_dict(v: Mapping[str, Any] | None) -> GrpcLimits | None:
    if v is None:
        return None
    return GrpcLimits(int(v["maxReceiveBytes"]), int(v["maxSendBytes"]), float(v["keepaliveTimeSeconds"]),
                      float(v["keepaliveTimeoutSeconds"]), float(v["minPingIntervalSeconds"]))


def _queue_from_dict(v: Mapping[str, Any]) -> QueueLimits:
    dflt = QueueLimits()
    return QueueLimits(
        replicas=int(v.get("replicas", dflt.replicas)),
        max_bytes=int(v.get("maxBytes", dflt.max_bytes)),
        max_messages_per_lane=int(v.get("maxMessagesPerLane", dflt.max_messages_per_lane)),
        max_payload_bytes=int(v.get("maxPayloadBytes", dflt.max_payload_bytes)),
    )


def _pool_api_from_dict(v: Mapping[str, Any]) -> PoolApiLimits:
    dflt = PoolApiLimits()
    return PoolApiLimits(
        max_workers_per_pool=int(v.get("maxWorkersPerPool", dflt.max_workers_per_pool)),
        max_pools_per_tenant=int(v.get("maxPoolsPerTenant", dflt.max_pools_per_tenant)),
        max_ttl_seconds=int(v.get("maxTtlSeconds", dflt.max_ttl_seconds)),
    )


def _tracing_from_dict(v: Mapping[str, Any] | None) -> TracingRoute | None:
    if not v:
        return None
    return TracingRoute(endpoint=str(v["endpoint"]), sample_ratio=float(v.get("sampleRatio", 1.0)))


def _policy_to_dict(p: PolicyRoute) -> dict[str, Any]:
    return {"stages": [
        {"name": s.name, "enabled": s.enabled,
         **({"limits": [{"name": lim.name, "kind": lim.kind, "per": lim.per, "limit": lim.limit,
                         "windowSeconds": lim.window_s, "period": lim.period, "tiers": _opt_list(lim.tiers)}
                        for lim in s.limits]} if s.limits else {}),
         **({"params": dict(s.params)} if s.params is not None else {}),
         **({"config": dict(s.config)} if s.config is not None else {})}
        for s in p.stages]}


def _policy_from_dict(v: Mapping[str, Any] | None) -> PolicyRoute:
    if not v:
        return PolicyRoute()
    return PolicyRoute(tuple(
        StageRoute(
            name=s["name"], enabled=bool(s.get("enabled", True)),
            limits=tuple(LimitRoute(lim["name"], lim["kind"], lim["per"], int(lim["limit"]),
                                    lim.get("windowSeconds"), lim.get("period"), _opt_tuple(lim.get("tiers")))
                         for lim in s.get("limits", ())),
            params=_frozen(dict(s["params"])) if "params" in s else None,
            config=_frozen(dict(s["config"])) if "config" in s else None)
        for s in v.get("stages", ())))


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(d)


def _opt_list(t: tuple[str, ...] | None) -> list[str] | None:
    return None if t is None else list(t)


def _opt_tuple(v: list[str] | None) -> tuple[str, ...] | None:
    return None if v is None else tuple(v)
