"""The policy chain: the stages spec.policy lists, run in order on every inference request.

Authentication always runs first, in the front end (every protocol authenticates before the core
is called); the chain then runs from the protocol-neutral core (submit.py) once the request is
resolved to a lane, so HTTP, the OpenAI API, gRPC and WebSocket all get the same stages.

A stage is any async callable taking a `PolicyRequest`: it refuses by raising an ApiError, may change
`params` (a transform), may add response headers, and may register `on_end` callbacks that run when
the request is over (with the worker's usage when there is one: settling token reservations,
releasing concurrency slots). Built-ins are `limits` (stages.py) and `defaults`; any other name is an
entry point in the group `switchyard.policy` whose object is a factory `(config) -> stage`
(docs/policy.md, "Custom stages"). A name that is not installed, or whose factory refuses its config,
makes the chain `broken`: every inference request is refused with 503 policy_unavailable naming it,
never run without the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Protocol

from ...api.table import KeyRoute, PolicyRoute, StageRoute
from ...errors import ApiError

log = logging.getLogger("switchyard.gateway.policy")

ENTRY_POINT_GROUP = "switchyard.policy"

Usage = Mapping[str, int] | None
EndCallback = Callable[[Usage], None]
# The usage a refused request's callbacks get: what earlier stages took goes back (compared by identity).
REFUSED: Usage = MappingProxyType({"refused": 1})


@dataclass(slots=True)
class PolicyRequest:
    """What a stage sees of one request: authenticated, resolved, not yet queued."""

    op: str
    model: str
    items: list[Any]
    params: dict[str, Any]  # the request's own params (a copy): a transform stage may change them
    key: KeyRoute | None  # None: anonymous
    tenant: str
    client_ip: str | None
    request_id: str
    headers: dict[str, str] = field(default_factory=dict)  # added to the answer (RateLimit, ...)
    ends: list[EndCallback] = field(default_factory=list)

    def on_end(self, callback: EndCallback) -> None:
        """Run `callback(usage)` once the request is over (answered, failed, or handed off as a job)."""
        self.ends.append(callback)


class Stage(Protocol):
    async def __call__(self, request: PolicyRequest) -> None: ...


StageFactory = Callable[[Mapping[str, Any]], Stage]


class Ticket:
    """An admitted request's hold on the chain: `end(usage)` once it is over, exactly once."""

    __slots__ = ("params", "headers", "_ends")

    def __init__(self, params: dict[str, Any] | None, headers: dict[str, str], ends: list[EndCallback]) -> None:
        self.params = params  # None: unchanged (the request's own)
        self.headers = headers
        self._ends = ends

    def end(self, usage: Usage = None) -> None:
        ends, self._ends = self._ends, []
        for callback in reversed(ends):
            try:
                callback(usage)
            except Exception:
                log.exception("a policy stage's end callback failed")


NO_TICKET = Ticket(None, {}, [])  # no stage: nothing to end, nothing to add


class Chain:
    def __init__(self, stages: tuple[tuple[str, Stage], ...], broken: str | None = None) -> None:
        self.stages = stages
        self.broken = broken  # why the chain cannot run (a stage not installed, a config refused)

    async def run(self, request: PolicyRequest) -> Ticket:
        if self.broken is not None:
            raise ApiError("policy_unavailable", self.broken, headers={"Retry-After": "30"})
        try:
            for _, stage in self.stages:
                await stage(request)
        except BaseException:
            Ticket(None, {}, request.ends).end(REFUSED)  # what earlier stages took goes back
            raise
        return Ticket(request.params, request.headers, request.ends)


BuiltIn = Callable[[StageRoute], Stage]


def build(policy: PolicyRoute, builtins: Mapping[str, BuiltIn],
          find: Callable[[str], StageFactory | None] | None = None) -> Chain:
    """The chain of `policy`'s enabled stages; a stage that cannot be made breaks it (see the module doc)."""
    find = find or installed
    stages: list[tuple[str, Stage]] = []
    for spec in policy.stages:
        if not spec.enabled:
            continue
        maker = builtins.get(spec.name)
        if maker is not None:
            stages.append((spec.name, maker(spec)))
            continue
        try:
            factory = find(spec.name)
        except Exception as exc:  # noqa: BLE001 - an installed plugin that does not import
            log.error("policy stage does not load", extra={"stage": spec.name, "error": str(exc)})
            return Chain((), f"policy stage {spec.name!r} is installed but does not load: {exc}")
        if factory is None:
            why = (f"spec.policy names stage {spec.name!r}, which is not installed on this gateway (no entry point "
                   f"{spec.name!r} in the group {ENTRY_POINT_GROUP!r}); inference is refused rather than run "
                   "without it")
            log.error("policy stage not installed", extra={"stage": spec.name})
            return Chain((), why)
        try:
            stages.append((spec.name, factory(dict(spec.config or {}))))
        except Exception as exc:  # noqa: BLE001 - a plugin's own validation: its message is the point
            why = f"policy stage {spec.name!r} refused its config: {exc}"
            log.error("policy stage refused its config", extra={"stage": spec.name, "error": str(exc)})
            return Chain((), why)
    return Chain(tuple(stages))


def installed(name: str) -> StageFactory | None:
    """The factory of the entry point `name` in the group switchyard.policy, if one is installed."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded: StageFactory = ep.load()
        return loaded
    return None

