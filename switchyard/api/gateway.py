"""Gateway: listeners, auth, limits and CORS of one gateway deployment."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .meta import DNS_LABEL, Model, Resource, Status
from .pool import DEFAULT_POOL



class HttpListener(Model):
    port: int = Field(default=8080, ge=1, le=65535)


class MetricsListener(Model):
    port: int = Field(default=9090, ge=1, le=65535)


class Listeners(Model):
    http: HttpListener = Field(default_factory=HttpListener)
    metrics: MetricsListener = Field(default_factory=MetricsListener)


class SecretKeyRef(Model):
    name: str = Field(pattern=DNS_LABEL, max_length=253)
    key: str = Field(default="key", min_length=1)


class ApiKey(Model):
    """One API key, read from a Secret and kept only as a SHA-256 hash once loaded."""

    name: str = Field(pattern=DNS_LABEL, max_length=63)
    secret_ref: SecretKeyRef
    pools: list[str] | None = Field(default=None, description="Pools this key may use; empty means any.")
    models: list[str] | None = Field(default=None, description="Models this key may use; empty means any.")


class Auth(Model):
    api_keys: list[ApiKey] = Field(default_factory=list)
    anonymous: bool = Field(
        default=False, description="Serve requests without a key. Off by default."
    )


class Cors(Model):
    allow_origins: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-Request-ID",
                                 "X-Machine-Profile", "X-Pool", "X-Bundle"]
    )
    max_age_seconds: int = Field(default=600, ge=0, le=86_400)


class Nats(Model):
    url: str = Field(default="nats://nats:4222", min_length=1)


class Jobs(Model):
    result_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86_400)


class GatewaySpec(Model):
    listeners: Listeners = Field(default_factory=Listeners)
    auth: Auth = Field(default_factory=Auth)
    default_pool: str = Field(default=DEFAULT_POOL, pattern=DNS_LABEL)
    max_request_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    cors: Cors = Field(default_factory=Cors)
    nats: Nats = Field(default_factory=Nats)
    jobs: Jobs = Field(default_factory=Jobs)
    replicas: int = Field(default=2, ge=0, le=100)
    image: str | None = None


class GatewayStatus(Status):
    config_epoch: int | None = Field(default=None)
    config_hash: str | None = Field(default=None)


class Gateway(Resource[GatewaySpec, GatewayStatus]):
    KIND: ClassVar[str] = "Gateway"
    PLURAL: ClassVar[str] = "gateways"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sygw",)

    kind: Literal["Gateway"] = "Gateway"
