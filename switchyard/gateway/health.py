"""Liveness, readiness and the cluster summary."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ApiError
from .auth import authenticate_request, presents_key
from .http import json_response
from .state import GatewayState, state_of


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    st = state_of(request)
    table, nats_up = st.holder.table, st.dispatcher.connected
    if table is None or not nats_up:
        why = "NATS not connected" if not nats_up else "no routing table loaded"
        raise ApiError("not_ready", why, headers={"Retry-After": "1"})
    return json_response({"status": "ready", "config_epoch": table.epoch})


async def health(request: web.Request) -> web.Response:
    """Status for anyone; workers, pools and backlogs only for an admin key (they map the fleet)."""
    st = state_of(request)
    table = st.holder.table
    # A policy chain that cannot run refuses every inference request (policy_unavailable): not healthy.
    healthy = st.dispatcher.connected and table is not None and st.policy.broken(table) is None
    status = "healthy" if healthy else "degraded"
    key = authenticate_request(request, table) if table is not None and presents_key(request.headers) else None
    if key is None or not key.can("readFleet"):
        return json_response({"status": status})
    return json_response({"status": status, **fleet(st)})


def fleet(st: GatewayState) -> dict[str, Any]:
    """What an admin sees of the fleet: live workers, the lanes' pending items, the config (also /v1/ws status)."""
    table = st.holder.table
    live = st.registry.live()
    configured = table.machine_profiles() if table else []
    return {
        "nats_connected": st.dispatcher.connected,
        "worker_count": len(live),
        "models_loaded": len({m for b in live for m in b.models}),
        "configured_machine_profiles": configured,
        "live_machine_profiles": sorted({b.machine_profile for b in live}),
        "workers": [
            {"id": b.worker_id, "models": b.models, "bundle": b.bundle, "machine_profile": b.machine_profile,
             "pool": b.pool, "in_flight": b.in_flight}
            for b in sorted(live, key=lambda b: b.worker_id)
        ],
        "pending": [
            {"model": lane.model, "bundle": lane.bundle, "machine_profile": lane.machine_profile,
             "pool": lane.pool, "items": n}
            for lane, n in sorted(st.demand.by_lane.items(), key=lambda kv: kv[0].subject)
        ],
        # Lanes with a circuit breaker that has seen a failure, as this process holds them (breaker.py).
        "circuits": st.breakers.snapshot(),
        "config": {"epoch": table.epoch, "hash": table.hash} if table else None,
        # spec.policy's stages, and why they cannot run when a listed one is missing (docs/policy.md).
        "policy": {"stages": [s.name for s in table.policy.stages if s.enabled],
                   "broken": st.policy.broken(table)} if table else None,
        "gateway": st.instance,
    }
