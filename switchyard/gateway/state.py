"""What one running gateway process holds; handlers reach it through the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..api.table import RoutingTable
from ..errors import ApiError
from .authfailures import FailureLimiter
from .breaker import Breakers
from .config import TableHolder
from .configsource import ConfigSource
from .demand import Demand
from .dispatch import Dispatcher
from .eta import ColdStarts
from .hold import Holds
from .metrics import Metrics
from .policy import PolicyEngine
from .poolstore import PoolStore
from .registry import Registry


@dataclass
class GatewayState:
    instance: str
    holder: TableHolder
    dispatcher: Dispatcher
    registry: Registry
    demand: Demand
    metrics: Metrics
    # Where the table comes from, which heartbeats count, when a pool's lease lapsed, where /v1/pools
    # keeps pools: a directory (standalone), a catalog, or Kubernetes (cluster mode). configsource.py
    source: ConfigSource
    holds: Holds = field(default_factory=Holds)  # Prefer: wait, per lane
    auth_failures: FailureLimiter = field(default_factory=FailureLimiter)  # unknown keys per client IP
    eta: ColdStarts = field(init=False)  # learned cold-start ETA of 202s
    policy: PolicyEngine = field(init=False)  # spec.policy: the chain and its limits' counters
    breakers: Breakers = field(init=False)  # spec.circuitBreaker, per lane, in this process
    plan_runs: Any = None  # planrun.PlanRuns, set by plans.setup(): the Planner runs this gateway drives

    def __post_init__(self) -> None:
        self.eta = ColdStarts(lambda: self.dispatcher.coldstart if self.dispatcher.connected else None,
                              self.registry.serving, metrics=self.metrics)
        self.policy = PolicyEngine(self.dispatcher, self.metrics.registry, self.instance,
                                   lambda: self.holder.table)
        self.breakers = Breakers(metrics=self.metrics)

    @property
    def pool_store(self) -> PoolStore | None:
        """/v1/pools: Pool resources (cluster mode) or the sy_pools bucket (standalone); None: not offered."""
        return self.source.pool_store

    def check_pool(self, pool: str) -> None:
        expired = self.source.pool_expired(pool) if pool else None
        if expired:
            raise ApiError("pool_expired", f"pool {pool!r} expired at {expired}: its lease was not renewed")

    def table(self) -> RoutingTable:
        table = self.holder.table
        if table is None:
            raise ApiError("not_ready", "no routing table loaded yet", headers={"Retry-After": "1"})
        return table


STATE = web.AppKey("switchyard_state", GatewayState)


def state_of(request: web.Request) -> GatewayState:
    return request.app[STATE]
