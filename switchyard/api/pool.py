"""Pool: workers reserved for one tenant, held by a Lease with a TTL."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from .meta import Label, Model, Resource, Status

DEFAULT_POOL = "default"


class PoolSpec(Model):
    gpus: dict[Label, Annotated[int, Field(ge=0, le=10_000)]] = Field(
        default_factory=dict, description="Workers reserved per machine profile, e.g. {l4: 2}."
    )
    ttl_seconds: int = Field(
        default=3600, ge=0, le=30 * 86_400, description="Lease duration; 0 never expires."
    )
    gateway_ref: str | None = Field(default=None, description="Gateway the pool belongs to; empty means every Gateway.")


class PoolStatus(Status):
    expires_at: str | None = Field(default=None)
    phase: str | None = None


class Pool(Resource[PoolSpec, PoolStatus]):
    KIND: ClassVar[str] = "Pool"
    PLURAL: ClassVar[str] = "pools"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sypool",)

    kind: Literal["Pool"] = "Pool"
