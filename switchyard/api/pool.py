"""Pool: workers reserved for one tenant, held by a Lease with a TTL."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .meta import DNS_LABEL, Label, Model, Resource, Status

DEFAULT_POOL = "default"
# Set by a gateway on POST /v1/pools/{name}/renew; the operator moves the pool's Lease renewTime to it.
RENEWED_AT_ANNOTATION = "switchyard.dev/renewed-at"
# A model id like "BAAI/bge-m3" (Upstream spec.model): no whitespace and no ':' (that separates a profile).
MODEL_ID = r"^[A-Za-z0-9][A-Za-z0-9._/@+-]*$"


class PoolSpec(Model):
    gpus: dict[Label, Annotated[int, Field(ge=0, le=10_000)]] = Field(
        default_factory=dict,
        description="Workers reserved per machine profile, e.g. {l4: 2}: for each of `models` that offers the "
                    "profile, the operator keeps that many dedicated workers running while the Lease is live. "
                    "Without `models`, you run the pool's workers yourself (`switchyard worker --pool <name>`) "
                    "and GET /v1/pools/{name} reports them against these counts.")
    models: list[Annotated[str, Field(pattern=MODEL_ID, max_length=200)]] = Field(
        default_factory=list, max_length=64,
        description="Model ids (Upstreams' spec.model) the pool's dedicated workers serve, rendered from each "
                    "Upstream's workers.template. Empty: the operator runs no workers for the pool.")
    tenant: str | None = Field(
        default=None, pattern=DNS_LABEL, max_length=63,
        description="Only keys of this tenant, and admin keys, may send work to the pool or read, renew and "
                    "delete it. Empty: the keys' own `pools` lists decide. Pools made by POST /v1/pools carry "
                    "the creating key's tenant.")
    ttl_seconds: int = Field(
        default=3600, ge=0, le=30 * 86_400, description="Lease duration; 0 never expires."
    )
    gateway_ref: str | None = Field(default=None, description="Gateway the pool belongs to; empty means every Gateway.")


class PoolWorkers(Model):
    reserved: int = Field(ge=0, description="Workers the operator keeps running for the pool on this profile.")
    ready: int = Field(ge=0, description="Of those, the ready ones (the pool fleets' readyReplicas).")


class PoolStatus(Status):
    expires_at: str | None = Field(default=None)
    phase: str | None = None
    workers: dict[str, PoolWorkers] | None = Field(
        default=None, description="Per machine profile, the dedicated workers of `models`: reserved vs ready. "
                                  "Absent while the pool has no models, or once it expired.")


class Pool(Resource[PoolSpec, PoolStatus]):
    KIND: ClassVar[str] = "Pool"
    PLURAL: ClassVar[str] = "pools"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sypool",)

    kind: Literal["Pool"] = "Pool"
