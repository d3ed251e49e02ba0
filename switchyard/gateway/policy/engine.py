"""One gateway's policy: the chain of the current table, the ledger its limits count in, and the metrics.

`admit()` is what the inference core (submit.py) calls once per request; with no stage configured it
returns at once. The chain is built once per spec.policy (a hot reload builds the new one), and the
ledger's housekeeping (giving back idle blocks and slots, renewing held slots) runs in `tend_forever`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry, Counter

from ...api.table import KeyRoute, PolicyRoute, RoutingTable
from ...errors import ApiError
from ...jetstream import ensure_limits_bucket
from .chain import NO_TICKET, BuiltIn, Chain, PolicyRequest, Ticket, build
from .ledger import Ledger, unavailable
from .stages import DefaultsStage, LimitsStage

log = logging.getLogger("switchyard.gateway.policy")

TEND_EVERY_S = 0.25
GIVE_BACK_AT_STOP_S = 0.4  # within one round of tasks.cancel_all()


class PolicyEngine:
    def __init__(self, dispatcher: Any, registry: CollectorRegistry, instance: str,
                 table: Any = None) -> None:
        self._dispatcher = dispatcher  # gateway.dispatch.Dispatcher: its JetStream context
        self._table = table  # () -> RoutingTable | None: the bucket's replicas
        self._kv: KeyValue | None = None
        self.ledger = Ledger(self._bucket, instance, lost=self._forget_bucket)
        self.decisions = Counter(
            "switchyard_gateway_policy_decisions",
            "Policy limit decisions by limit, tenant and outcome (admitted, limited)",
            ["limit", "tenant", "outcome"], registry=registry)
        self._built: tuple[PolicyRoute, Chain] | None = None
        self.builtins: Mapping[str, BuiltIn] = {
            "limits": lambda spec: LimitsStage(spec.limits, self.ledger, self.decisions),
            "defaults": lambda spec: DefaultsStage(spec.params or {}),
        }

    def chain(self, policy: PolicyRoute) -> Chain:
        built = self._built
        if built is None or (built[0] is not policy and built[0] != policy):
            chain = build(policy, self.builtins)
            self._built = built = (policy, chain)
        return built[1]

    def broken(self, table: RoutingTable) -> str | None:
        """Why the table's chain cannot run (a stage not installed, a config refused); None when it can."""
        return self.chain(table.policy).broken if table.policy.stages else None

    async def admit(self, table: RoutingTable, *, op: str, model: str, items: list[Any], params: dict[str, Any],
                    key: KeyRoute | None, tenant: str, client_ip: str | None, request_id: str) -> Ticket:
        """Run the chain on one request: its Ticket, or the ApiError of the stage that refused it."""
        if not table.policy.stages:
            return NO_TICKET
        chain = self.chain(table.policy)
        if not chain.stages and chain.broken is None:
            return NO_TICKET
        request = PolicyRequest(op, model, items, dict(params), key, tenant, client_ip, request_id)
        return await chain.run(request)

    async def _bucket(self) -> KeyValue:
        d = self._dispatcher
        if not d.connected or d.js is None:
            raise unavailable("not connected to NATS")
        if self._kv is None:
            table = self._table() if self._table is not None else None
            self._kv = await ensure_limits_bucket(d.js, table.queue.replicas if table is not None else 1)
        return self._kv

    def _forget_bucket(self) -> None:
        self._kv = None

    async def tend_forever(self) -> None:
        """Give back idle leases and slots, renew held slots: a few times a second. Stopped (the gateway
        shuts down), it gives back every block and spare slot it holds first, briefly: what a SIGKILL loses."""
        try:
            while True:
                await asyncio.sleep(TEND_EVERY_S)
                if not self.ledger.leases and not self.ledger.slots:
                    continue
                now = time.time()
                try:
                    await self.ledger.return_idle(now)
                    await self.ledger.tend_slots(now)
                except Exception:
                    log.exception("policy ledger housekeeping failed; again next round")
        except asyncio.CancelledError:
            try:
                await asyncio.wait_for(self.ledger.give_back_all(time.time()), GIVE_BACK_AT_STOP_S)
            except (TimeoutError, asyncio.CancelledError, ApiError):
                log.warning("policy blocks not all given back at shutdown; they are lost for their window")
            raise
