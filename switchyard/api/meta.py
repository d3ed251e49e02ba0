"""Kubernetes object plumbing shared by every Switchyard resource."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Re-exported: the resources' apiVersion.
from ..contracts import API_VERSION as API_VERSION
from ..contracts import GROUP as GROUP
from ..contracts import VERSION as VERSION
from ..contracts import ObjectKey

# DNS-1123 label: what Kubernetes accepts for most object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Label = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]  # names of profiles, pools, steps...


class Model(BaseModel):
    """Base for spec models: snake_case in Python, camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, frozen=True, alias_generator=to_camel
    )


class ObjectMeta(BaseModel):
    """The subset of metav1.ObjectMeta Switchyard reads; the rest passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None
    resourceVersion: str | None = None


class Condition(BaseModel):
    """metav1.Condition."""

    model_config = ConfigDict(extra="allow")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", pattern=r"^([A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?)?$")
    message: str = ""
    lastTransitionTime: str | None = None
    observedGeneration: int | None = None


class Status(BaseModel):
    """Common status fields; kinds add their own."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=Status)


class Resource(BaseModel, Generic[SpecT, StatusT]):
    """A namespaced custom resource: apiVersion, kind, metadata, spec, status."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()

    apiVersion: Literal["switchyard.dev/v1alpha1"] = "switchyard.dev/v1alpha1"  # API_VERSION, as a type
    kind: str
    metadata: ObjectMeta
    spec: SpecT
    status: StatusT | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.KIND, self.name, self.metadata.namespace or "")

    @property
    def ref(self) -> str:
        """How errors name this object: Kind/namespace/name."""
        return str(self.key)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Resource[SpecT, StatusT]:
        return cls.model_validate(obj)
