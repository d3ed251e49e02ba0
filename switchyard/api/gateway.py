"""Gateway: listeners, auth, limits and CORS of one gateway deployment."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .meta import DNS_LABEL, Model, Resource, Status
from .pool import DEFAULT_POOL



class HttpListener(Model):
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port of the inference API.")


class MetricsListener(Model):
    port: int = Field(default=9090, ge=1, le=65535, description="Port of /metrics (Prometheus).")


class Listeners(Model):
    http: HttpListener = Field(default_factory=HttpListener)
    metrics: MetricsListener = Field(default_factory=MetricsListener)


class SecretKeyRef(Model):
    name: str = Field(pattern=DNS_LABEL, max_length=253, description="Secret in the Gateway's namespace.")
    key: str = Field(default="key", min_length=1, description="Key within the Secret; the value is the API key.")


class ApiKey(Model):
    """One API key, read from a Secret and kept only as a SHA-256 hash once loaded."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Name shown in logs and errors.")
    secret_ref: SecretKeyRef
    pools: list[str] | None = Field(default=None, description="Pools this key may use; empty means any.")
    models: list[str] | None = Field(default=None, description="Models this key may use; empty means any.")


class Auth(Model):
    api_keys: list[ApiKey] = Field(default_factory=list)
    anonymous: bool = Field(
        default=False, description="Serve requests without a key. Off by default."
    )


class Cors(Model):
    allow_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; '*' for any. Empty: CORS off.")
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-Request-ID",
                                 "X-Machine-Profile", "X-Pool", "X-Bundle"]
    )
    max_age_seconds: int = Field(default=600, ge=0, le=86_400)


class Nats(Model):
    url: str = Field(default="nats://nats:4222", min_length=1, description="NATS server the gateway queues work on.")


class Jobs(Model):
    result_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86_400, description="How long results of 202 jobs are kept.")


class GatewaySpec(Model):
    listeners: Listeners = Field(default_factory=Listeners, description="Ports the gateway listens on.")
    auth: Auth = Field(default_factory=Auth, description="API keys; without keys and anonymous off, every request gets 401.")
    default_pool: str = Field(default=DEFAULT_POOL, pattern=DNS_LABEL, description="Pool of requests that name none.")
    max_request_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3,
                                        description="Larger bodies get 413.")
    cors: Cors = Field(default_factory=Cors, description="Browser access.")
    nats: Nats = Field(default_factory=Nats, description="The work queue.")
    jobs: Jobs = Field(default_factory=Jobs, description="Results of requests answered with 202.")
    replicas: int = Field(default=2, ge=0, le=100, description="Gateway pods the operator runs.")
    image: str | None = Field(default=None, description="Gateway image; default the operator's own.")


class GatewayStatus(Status):
    config_epoch: int | None = Field(default=None)
    config_hash: str | None = Field(default=None)


class Gateway(Resource[GatewaySpec, GatewayStatus]):
    KIND: ClassVar[str] = "Gateway"
    PLURAL: ClassVar[str] = "gateways"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sygw",)

    kind: Literal["Gateway"] = "Gateway"
