"""What one running gateway process holds; handlers reach it through the app."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..api.table import RoutingTable
from ..errors import ApiError
from .config import TableHolder
from .demand import Demand
from .dispatch import Dispatcher
from .metrics import Metrics
from .registry import Registry

STATE = web.AppKey("switchyard_state", object)


@dataclass
class GatewayState:
    instance: str
    holder: TableHolder
    dispatcher: Dispatcher
    registry: Registry
    demand: Demand
    metrics: Metrics

    def table(self) -> RoutingTable:
        table = self.holder.table
        if table is None:
            raise ApiError("not_ready", "no routing table loaded yet", headers={"Retry-After": "1"})
        return table


def state_of(request: web.Request) -> GatewayState:
    return request.app[STATE]  # type: ignore[return-value]
