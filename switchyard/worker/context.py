"""What a handler gets besides its items."""

from __future__ import annotations

import asyncio
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
    # Token counts the handler may report ({"input_tokens": n, "output_tokens": n}): with tracing
    # on they become gen_ai.usage.* on the handler's span (worker/tracing.py).
    usage: dict[str, int] = field(default_factory=dict)
    # Set when the job is cancelled (POST /v1/jobs/{id}/cancel) while it runs. An async handler is
    # cancelled where it awaits; a sync one runs in a thread nothing can interrupt, so a long one
    # should check `ctx.cancelled` between steps and return early.
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts
