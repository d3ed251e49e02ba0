"""Gateway: listeners, auth, limits and CORS of one gateway deployment."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from .meta import DNS_LABEL, Model, Resource, Status
from .pool import DEFAULT_POOL
from .upstream import Operation

# An OTLP/HTTP base URL: scheme, host[:port], an optional path; no query, userinfo or spaces.
OTLP_ENDPOINT = r"^https?://[A-Za-z0-9.\[\]:_-]+(/[A-Za-z0-9._~/-]*)?$"


class HttpListener(Model):
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port of the inference API.")
    max_connections: int = Field(default=1024, ge=1, le=100_000,
                                 description="Open client connections per gateway process; more are closed at once.")
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600,
                                          description="Time a client has to send a request line and headers.")
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600,
                                        description="Time a client has to send the whole request body.")
    keep_alive_timeout_seconds: float = Field(default=75.0, gt=0, le=3600,
                                              description="An idle keep-alive connection is closed after this.")


class MetricsListener(Model):
    port: int = Field(default=9090, ge=1, le=65535, description="Port of /metrics (Prometheus).")


class ScalerListener(Model):
    port: int = Field(default=9091, ge=1, le=65535,
                      description="Port of the KEDA external-push scaler (gRPC) that KEDA dials for demand.")


class GrpcListener(Model):
    """switchyard.v1.Inference over gRPC, with grpc.health.v1 and server reflection (docs/api.md, gRPC)."""

    port: int = Field(default=50051, ge=1, le=65535, description="gRPC port of the inference API.")
    max_receive_message_bytes: int | None = Field(
        default=None, ge=1024, le=1024**3,
        description="Largest request message; larger ones get RESOURCE_EXHAUSTED. Default and upper bound: "
                    "maxRequestBodyBytes, the HTTP body limit. Read when the gateway starts.")
    max_send_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, le=1024**3,
        description="Largest response message; a larger result fails with RESOURCE_EXHAUSTED. Read when the "
                    "gateway starts.")
    keepalive_time_seconds: float = Field(
        default=60.0, ge=1, le=86_400,
        description="The gateway pings a connection idle this long, and closes it when the ping is not "
                    "answered within keepaliveTimeoutSeconds. Read when the gateway starts.")
    keepalive_timeout_seconds: float = Field(default=20.0, ge=1, le=3600,
                                             description="How long a keepalive ping may go unanswered.")
    min_client_ping_interval_seconds: float = Field(
        default=30.0, ge=1, le=86_400,
        description="Clients pinging more often than this get GOAWAY (too_many_pings).")


class ListenerTls(Model):
    """TLS on the HTTP (WebSocket included), gRPC and metrics listeners, from a Secret the operator mounts
    into the gateway pods. The KEDA scaler listener stays plain: only the in-cluster scaler reaches it."""

    secret_name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253,
        description="A kubernetes.io/tls Secret (tls.crt, tls.key) in the Gateway's namespace. A rotated "
                    "Secret is picked up by the running gateways: new connections get the new certificate, "
                    "open ones are kept.")
    min_version: Literal["1.2", "1.3"] = Field(default="1.2",
                                               description="Oldest TLS version accepted; never below 1.2.")


class Listeners(Model):
    http: HttpListener = Field(default_factory=HttpListener)
    metrics: MetricsListener = Field(default_factory=MetricsListener)
    scaler: ScalerListener = Field(default_factory=ScalerListener)
    grpc: GrpcListener | None = Field(default=None, description="The gRPC listener (switchyard.v1.Inference). "
                                                                "Empty: no gRPC.")
    tls: ListenerTls | None = Field(default=None, description="TLS on the HTTP (WebSocket included), gRPC "
                                                              "and metrics listeners. Empty: plain HTTP and gRPC.")

    @model_validator(mode="after")
    def _grpc_port_is_its_own(self) -> Listeners:
        if self.grpc is not None and self.grpc.port in (self.http.port, self.metrics.port, self.scaler.port):
            raise ValueError(f"listeners.grpc.port {self.grpc.port} is taken by another listener")
        return self


class Scaler(Model):
    address: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9.\[\]:-]+:[0-9]{1,5}$", max_length=261,
        description="host:port that KEDA dials for this Gateway's scaler, written into every ScaledObject. "
                    "Default: the gateway Service, <name>-gateway.<namespace>.svc:<listeners.scaler.port>. "
                    "Set it when KEDA runs where that name does not resolve (e.g. outside the cluster).")


class Toleration(Model):
    key: str | None = Field(default=None, max_length=317, description="Taint key; empty with Exists: every taint.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal")
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None,
                                                                                 description="Empty: every effect.")
    toleration_seconds: int | None = Field(default=None, ge=0, description="NoExecute only.")


class MachineProfile(Model):
    """Where workers of one machine profile run: defined once per Gateway, used by every rendered fleet."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="The name Upstreams list in machineProfiles.")
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32,
                                          description="Pod nodeSelector, e.g. {nvidia.com/gpu.product: NVIDIA-L4}.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Pod tolerations.")
    resources: dict[str, str] = Field(
        default_factory=dict, max_length=16,
        description="Extended resources each worker gets as requests and limits, e.g. {nvidia.com/gpu: \"1\"}.")


class SecretKeyRef(Model):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Secret in the Gateway's namespace.")
    key: str = Field(default="key", min_length=1, description="Key within the Secret; the value is the API key.")


# Admin rights a key can hold one by one; `admin: true` holds them all (gateway/auth.py, docs/security.md).
Scope = Literal["readAllJobs", "readFleet", "managePools", "readUsage"]


def check_cidrs(cidrs: list[str], what: str) -> list[str]:
    """Each an IPv4 or IPv6 network without host bits (10.0.0.0/8, not 10.0.0.1/8): a typo is not widened."""
    for c in cidrs:
        try:
            ipaddress.ip_network(c, strict=True)
        except ValueError as exc:
            raise ValueError(f"{what}: {c!r} is not a CIDR ({exc})") from None
    return cidrs


class KeyRotation(Model):
    """This key is being replaced by `successor`: both work until `sunsetAt`, then this one gets 401."""

    successor: str = Field(pattern=DNS_LABEL, max_length=63,
                           description="Name of the key (in this list, of the same tenant) that replaces this one.")
    sunset_at: AwareDatetime = Field(description="RFC 3339 time this key stops working. Until then its answers "
                                                 "carry Deprecation and Sunset headers.")


class ApiKey(Model):
    """One API key, read from a Secret and kept only as a SHA-256 hash once loaded."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Name shown in logs and errors.")
    secret_ref: SecretKeyRef
    pools: list[str] | None = Field(default=None, description="Pools this key may use; empty means any.")
    models: list[str] | None = Field(default=None, description="Models this key may use; empty means any.")
    tenant: str | None = Field(default=None, pattern=DNS_LABEL, max_length=63,
                               description="Tenant the key acts for: jobs and request ids are scoped by it. "
                                           "Default: the key's name.")
    admin: bool = Field(default=False, description="May read every tenant's jobs and the detail of /health, "
                                                   "and manage every tenant's pools.")
    manage_pools: bool = Field(default=False, description="May create, renew and delete its tenant's pools "
                                                          "through /v1/pools (within spec.poolApi).")
    tier: str = Field(default="default", pattern=DNS_LABEL, max_length=63,
                      description="Service tier of the key (e.g. free, pro): the limits that apply to it are chosen "
                                  "by tier.")
    operations: list[Operation] | None = Field(
        default=None, max_length=9,
        description="Operations this key may call (POST /v1/{op}/..., the OpenAI endpoints' generate and chat, "
                    "Planner steps); empty means any.")
    scopes: list[Scope] = Field(
        default_factory=list, max_length=4,
        description="Admin rights: readAllJobs (read and list every tenant's jobs and runs), readFleet (the "
                    "detail of /health and the WebSocket status topic), managePools (as managePools: true), "
                    "readUsage (GET /v1/usage). admin: true holds them all.")
    not_before: AwareDatetime | None = Field(default=None, description="RFC 3339 time before which the key "
                                                                        "gets 401 key_not_yet_valid.")
    not_after: AwareDatetime | None = Field(default=None, description="RFC 3339 time from which the key gets "
                                                                      "401 key_expired.")
    allowed_cidrs: list[str] | None = Field(
        default=None, max_length=64,
        description="Client IPs the key may be used from (IPv4/IPv6 CIDRs); others get 403 ip_not_allowed. The "
                    "client IP is the TCP peer, or X-Forwarded-For from spec.auth.trustedProxies. Empty: any.")
    rotation: KeyRotation | None = Field(default=None, description="Retire this key in favour of a successor "
                                                                   "after a grace period.")

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str] | None) -> list[str] | None:
        return check_cidrs(v, "allowedCidrs") if v is not None else None

    @model_validator(mode="after")
    def _window(self) -> ApiKey:
        if self.not_before is not None and self.not_after is not None and self.not_after <= self.not_before:
            raise ValueError(f"key {self.name!r}: notAfter must be later than notBefore")
        if self.rotation is not None and self.rotation.successor == self.name:
            raise ValueError(f"key {self.name!r}: rotation.successor names the key itself")
        return self


class Auth(Model):
    api_keys: list[ApiKey] = Field(default_factory=list)
    anonymous: bool = Field(
        default=False, description="Serve requests without a key. Off by default."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list, max_length=64,
        description="CIDRs of proxies whose X-Forwarded-For names the client IP (for allowedCidrs and the "
                    "failure limit). From any other peer the header is ignored. Empty: the TCP peer is the client.")
    max_failures_per_minute: int = Field(
        default=10, ge=1, le=10_000,
        description="Unknown keys one client IP may present per minute, counted across every gateway replica "
                    "(per process while NATS is away); past it every request from that IP that presents a key gets "
                    "429 too_many_auth_failures.")

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        return check_cidrs(v, "trustedProxies")

    @model_validator(mode="after")
    def _keys_consistent(self) -> Auth:
        by_name = {k.name: k for k in self.api_keys}
        dupes = sorted({k.name for k in self.api_keys if [x.name for x in self.api_keys].count(k.name) > 1})
        if dupes:
            raise ValueError(f"apiKeys has duplicate names: {', '.join(dupes)}")
        for k in self.api_keys:
            if k.rotation is None:
                continue
            successor = by_name.get(k.rotation.successor)
            if successor is None:
                raise ValueError(f"key {k.name!r}: rotation.successor {k.rotation.successor!r} is not in apiKeys")
            # The successor must act for the same tenant, or the old key's jobs would be lost to it.
            if (successor.tenant or successor.name) != (k.tenant or k.name):
                raise ValueError(f"key {k.name!r}: rotation.successor {successor.name!r} acts for tenant "
                                 f"{successor.tenant or successor.name!r}, not {k.tenant or k.name!r}")
            seen = {k.name}
            while successor is not None and successor.rotation is not None:
                if successor.name in seen:
                    raise ValueError(f"key {k.name!r}: rotation successors form a cycle")
                seen.add(successor.name)
                successor = by_name.get(successor.rotation.successor)
        return self


class Cors(Model):
    allow_origins: list[str] = Field(default_factory=list,
                                     description="Origins allowed by CORS; '*' for any. Empty: CORS off.")
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "X-Machine-Profile",
                                 "X-Pool", "X-Bundle", "X-Priority", "X-Job-Deadline", "Prefer"],
        description="Request headers a browser may send; the default is every header the gateway reads.")
    max_age_seconds: int = Field(default=600, ge=0, le=86_400)


class Nats(Model):
    url: str = Field(default="nats://nats:4222", min_length=1, description="NATS server the gateway queues work on.")
    max_payload_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="The max_payload the NATS servers are configured with. maxRequestBodyBytes must fit in it; "
                    "the gateway also reads the live value from the server and uses the smaller.")


class Queue(Model):
    replicas: Literal[1, 3, 5] = Field(default=1, description="Copies of the work stream and every KV bucket "
                                                             "in a NATS JetStream cluster (3 for R3).")
    max_bytes: int = Field(default=1024**3, ge=1024 * 1024,
                           description="Bytes the work stream may hold; past it new work gets 503 queue_full.")
    max_messages_per_lane: int = Field(default=100_000, ge=1,
                                       description="Queued items per lane, counted per tenant and priority "
                                                   "class (one queue each); past it new work of that tenant and "
                                                   "class on that lane gets 503 queue_full.")


class Jobs(Model):
    result_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86_400,
                                    description="How long jobs (202s, Planner runs) and their results are kept. "
                                                "A change applies to the jobs bucket at once, old records included.")
    sync_result_ttl_seconds: int = Field(default=300, ge=0, le=3600,
                                         description="How long the result of a request answered at once (200, or the "
                                                     "worker's error) can be fetched again by its X-Request-ID: "
                                                     "GET /v1/jobs/{id}, or the same request again. 0: not kept.")


class PoolApi(Model):
    """Bounds on the pools tenants make through POST /v1/pools; Pools you apply yourself are not bound."""

    max_workers_per_pool: int = Field(default=8, ge=0, le=10_000,
                                      description="Dedicated workers one pool may reserve: the sum over its "
                                                  "models of gpus of the profiles each offers.")
    max_pools_per_tenant: int = Field(default=4, ge=0, le=1000, description="Pools one tenant may hold at once.")
    max_ttl_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400,
                                 description="Longest lease a created pool may ask for (ttl 0, never expiring, "
                                             "is refused).")


class OpenAiApi(Model):
    """The OpenAI-compatible endpoints (POST /v1/chat/completions, ...)."""

    default_wait_seconds: int = Field(
        default=0, ge=0, le=3600,
        description="Hold an OpenAI request this long through a cold start when it sends no `Prefer: wait` "
                    "(OpenAI clients cannot follow a 202), capped by the Upstream's timeoutSeconds; 0: no hold, "
                    "a 503 with Retry-After at once. The item is queued either way.")


class Tracing(Model):
    """OpenTelemetry traces of requests through this Gateway's gateways (docs/observability.md, Traces)."""

    endpoint: str | None = Field(
        default=None, pattern=OTLP_ENDPOINT, max_length=2048,
        description="Base URL of an OTLP/HTTP collector, as OTEL_EXPORTER_OTLP_ENDPOINT: spans go to "
                    "<endpoint>/v1/traces (e.g. http://otel-collector.observability:4318). Empty: tracing off.")
    sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Fraction of requests traced, decided by each gateway; a caller's traceparent joins its "
                    "trace but its sampled flag cannot force tracing on.")


LimitKind = Literal["requests", "items", "tokens", "concurrent"]
LimitScope = Literal["key", "tenant", "ip", "global"]
BUILTIN_STAGES = ("limits", "defaults")  # the stages every gateway has; others come from entry points


class Limit(Model):
    """One limit of the `limits` stage, counted across every gateway replica (docs/policy.md)."""

    name: str = Field(pattern=DNS_LABEL, max_length=63,
                      description="Names the limit in RateLimit-Policy / RateLimit headers, errors and metrics.")
    kind: LimitKind = Field(description="requests, items (a request's items), tokens (generate and chat: "
                                        "input + output tokens the worker reports) or concurrent (requests "
                                        "in flight).")
    per: LimitScope = Field(default="key", description="Counted per key, per tenant, per client IP, or once "
                                                       "for everyone (global).")
    tiers: list[str] | None = Field(default=None, max_length=32,
                                    description="Applies only to keys of these tiers (spec.auth.apiKeys[].tier). "
                                                "Empty: every request, anonymous ones included.")
    limit: int = Field(ge=1, le=10**12, description="Units allowed per window (or at once, for concurrent).")
    window_seconds: int | None = Field(default=None, ge=1, le=86_400,
                                       description="A fixed window of this many seconds (aligned to the Unix "
                                                   "epoch). Not with period or kind concurrent.")
    period: Literal["day", "month"] | None = Field(default=None,
                                                   description="A quota per calendar day or month (UTC). Not "
                                                               "with windowSeconds or kind concurrent.")

    @model_validator(mode="after")
    def _one_window(self) -> Limit:
        if self.kind == "concurrent":
            if self.window_seconds is not None or self.period is not None:
                raise ValueError(f"limit {self.name!r}: a concurrent limit has no windowSeconds or period")
        elif (self.window_seconds is None) == (self.period is None):
            raise ValueError(f"limit {self.name!r}: set exactly one of windowSeconds and period")
        for tier in self.tiers or ():
            if not re.match(DNS_LABEL, tier):
                raise ValueError(f"limit {self.name!r}: tier {tier!r} is not a DNS label")
        return self


class PolicyStage(Model):
    """One stage of the policy chain: a built-in (limits, defaults) or one installed as an entry point."""

    name: str = Field(pattern=DNS_LABEL, max_length=63,
                      description="limits, defaults, or the name of an entry point in the group switchyard.policy "
                                  "installed on the gateway. A name that is not installed refuses inference with "
                                  "503 policy_unavailable; it is never skipped.")
    enabled: bool = Field(default=True, description="false keeps the stage in the resource without running it.")
    limits: list[Limit] | None = Field(default=None, max_length=64, description="The limits stage only.")
    params: dict[str, Any] | None = Field(default=None, description="The defaults stage only: params set on "
                                                                    "every request that does not send them.")
    config: dict[str, Any] | None = Field(default=None, description="A custom stage only: handed to its "
                                                                    "factory, which validates it.")

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> PolicyStage:
        given = {f for f in ("limits", "params", "config") if getattr(self, f) is not None}
        wanted = {"limits": "limits", "defaults": "params"}.get(self.name, "config")
        stray = sorted(given - {wanted})
        if stray:
            raise ValueError(f"stage {self.name!r} takes {wanted!r}, not {', '.join(map(repr, stray))}")
        if self.name == "limits" and not self.limits:
            raise ValueError("stage 'limits' needs at least one limit")
        return self


class Policy(Model):
    """The policy chain run on every inference request after authentication (docs/policy.md)."""

    stages: list[PolicyStage] = Field(default_factory=list, max_length=32,
                                      description="Run in this order, on every protocol (HTTP, OpenAI, gRPC, "
                                                  "WebSocket). Empty: no stage.")

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"policy.stages names {', '.join(dupes)} more than once")
        limits = [lim.name for s in self.stages for lim in s.limits or ()]
        dupes = sorted({n for n in limits if limits.count(n) > 1})
        if dupes:
            raise ValueError(f"policy limit names must be unique: {', '.join(dupes)}")
        return self


class UsageAnomaly(Model):
    """When a key's request rate is an anomaly (docs/usage.md#anomalies): its requests in the last window
    reach `factor` times its average per window over the baseline before it, and at least minRequests."""

    window_seconds: int = Field(default=300, ge=10, le=86_400, description="The recent window a key's rate is "
                                                                           "measured over.")
    baseline_seconds: int = Field(default=3600, ge=60, le=7 * 86_400,
                                  description="The trailing time before the window whose average is the key's "
                                              "baseline; at least windowSeconds.")
    factor: float = Field(default=10.0, ge=1.5, le=1000.0, description="How many times its baseline a key's "
                                                                        "window must reach to be flagged.")
    min_requests: int = Field(default=100, ge=1, le=1_000_000_000,
                              description="Fewer requests than this in the window are never an anomaly, so a "
                                          "quiet key's few requests are not flagged.")

    @model_validator(mode="after")
    def _baseline_covers_window(self) -> UsageAnomaly:
        if self.baseline_seconds < self.window_seconds:
            raise ValueError(f"baselineSeconds ({self.baseline_seconds}) must be at least windowSeconds "
                             f"({self.window_seconds})")
        return self


class Usage(Model):
    """Usage accounting (docs/usage.md): the ledger workers append to, and the anomaly rule."""

    retention_days: int = Field(default=35, ge=1, le=400,
                                description="How long the usage ledger (the SWITCHYARD_USAGE stream) keeps a "
                                            "record: GET /v1/usage reads no further back. A change applies to "
                                            "the stream at once, old records included.")
    anomaly: UsageAnomaly = Field(default_factory=UsageAnomaly, description="Flagging a key's rate jumping "
                                                                             "by an order of magnitude.")


PriorityClass = Literal["high", "normal", "low"]  # subjects.PRIORITY_CLASSES: the order workers serve them in


class Priority(Model):
    """Priority classes of requests (docs/policy.md#priority-and-fairness): workers take high before normal
    before low when several wait on a lane, and the tenants of a class in turn."""

    tiers: dict[str, PriorityClass] = Field(
        default_factory=dict, max_length=64,
        description="The class of the requests of each tier's keys (spec.auth.apiKeys[].tier). A tier not "
                    "named here, and a request without a key, is normal.")
    header_tiers: list[str] = Field(
        default_factory=list, max_length=64,
        description="Keys of these tiers may choose a request's class with the X-Priority header (high, normal "
                    "or low). A key of any other tier that sends it gets 403.")

    @model_validator(mode="after")
    def _tiers_are_labels(self) -> Priority:
        for tier in [*self.tiers, *self.header_tiers]:
            if not re.match(DNS_LABEL, tier):
                raise ValueError(f"priority: tier {tier!r} is not a DNS label")
        return self


class GatewaySpec(Model):
    listeners: Listeners = Field(default_factory=Listeners, description="Ports the gateway listens on.")
    auth: Auth = Field(default_factory=Auth,
                       description="API keys; without keys and anonymous off, every request gets 401.")
    default_pool: str = Field(default=DEFAULT_POOL, pattern=DNS_LABEL, description="Pool of requests that name none.")
    max_request_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3,
                                        description="Larger bodies get 413.")
    cors: Cors = Field(default_factory=Cors, description="Browser access.")
    nats: Nats = Field(default_factory=Nats, description="The work queue.")
    jobs: Jobs = Field(default_factory=Jobs, description="Results of requests answered with 202.")
    queue: Queue = Field(default_factory=Queue, description="Limits and replication of the work stream.")
    scaler: Scaler = Field(default_factory=Scaler, description="How KEDA reaches the gateways' external scaler.")
    pool_api: PoolApi = Field(default_factory=PoolApi, description="Limits of POST /v1/pools.")
    openai: OpenAiApi = Field(default_factory=OpenAiApi, description="The OpenAI-compatible endpoints.")
    policy: Policy = Field(default_factory=Policy, description="The policy chain: limits, quotas, concurrency "
                                                             "and transforms, per tier, key, client IP or "
                                                             "globally (docs/policy.md).")
    priority: Priority = Field(default_factory=Priority, description="Priority classes of requests by key "
                                                                    "tier, and who may set X-Priority.")
    tracing: Tracing = Field(default_factory=Tracing, description="OpenTelemetry traces over OTLP/HTTP; off "
                                                                  "unless an endpoint is set. Hot-reloaded.")
    usage: Usage = Field(default_factory=Usage, description="Usage accounting: the ledger's retention and "
                                                            "anomalies.")
    machine_profiles: list[MachineProfile] = Field(
        default_factory=list, max_length=32,
        description="Scheduling of each machine profile (node selector, tolerations, GPU resources) for the "
                    "worker fleets the operator renders for Upstreams scaled on this Gateway. A rendered fleet's "
                    "profile must be listed here (with nothing set it runs anywhere).")
    replicas: int = Field(default=2, ge=0, le=100, description="Gateway pods the operator runs.")
    image: str | None = Field(default=None, description="Gateway image; default the operator's own.")

    @model_validator(mode="after")
    def _unique_profiles(self) -> GatewaySpec:
        names = [p.name for p in self.machine_profiles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"machineProfiles has duplicate names: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _grpc_within_body_limit(self) -> GatewaySpec:
        # One request size for every protocol: gRPC may not take more than HTTP does.
        grpc = self.listeners.grpc
        if grpc is not None and (grpc.max_receive_message_bytes or 0) > self.max_request_body_bytes:
            raise ValueError(f"listeners.grpc.maxReceiveMessageBytes ({grpc.max_receive_message_bytes}) exceeds "
                             f"maxRequestBodyBytes ({self.max_request_body_bytes})")
        return self


class GatewayStatus(Status):
    config_epoch: int | None = Field(default=None)
    config_hash: str | None = Field(default=None)


class Gateway(Resource[GatewaySpec, GatewayStatus]):
    KIND: ClassVar[str] = "Gateway"
    PLURAL: ClassVar[str] = "gateways"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sygw",)

    kind: Literal["Gateway"] = "Gateway"
