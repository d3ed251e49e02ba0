"""What a handler gets besides its items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Context:
    op: str  # "encode", "generate", ...
    model: str
    bundle: str
    machine_profile: str
    pool: str
    request_id: str
    profile: str | None = None  # the model profile the gateway resolved, if any
    params: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0  # unix seconds; 0 = none
    attempt: int = 1  # 1-based delivery count
    max_attempts: int = 3
    worker_id: str = ""

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts
