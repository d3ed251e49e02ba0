"""The v1 Secret fields Switchyard reads: where API keys come from."""

from __future__ import annotations

import base64
import binascii
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .meta import ObjectMeta


class Secret(BaseModel):
    model_config = ConfigDict(extra="allow")

    KIND: ClassVar[str] = "Secret"

    apiVersion: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)
    stringData: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"data.{key} is not valid base64") from exc
        return data

    @property
    def ref(self) -> str:
        return f"Secret/{self.metadata.name}"

    def value(self, key: str) -> bytes | None:
        """The decoded value, stringData winning as the API server would merge it."""
        if key in self.stringData:
            return self.stringData[key].encode()
        if key in self.data:
            return base64.b64decode(self.data[key])
        return None
