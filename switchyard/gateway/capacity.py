"""GET /v1/capacity: slots per pool, machine profile and bundle, from heartbeats and the work stream.

capacity = the live workers' concurrency summed, used = their items in flight, available =
the difference, queued = items stored on the group's lanes (the pending demand the scaler
reads) less those in flight (a work-queue stream keeps an item until its worker acks it), and a
scaling state derived from those. Nothing new is stored: heartbeats (sy_workers)
and the stream's per-subject counts are what every gateway replica already holds.

Holders (which tenants' items are in flight) are shown to admin keys only. Other keys see the
pools they may use, and the models they may use.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aiohttp import web

from ..api.table import KeyRoute
from ..messages import Heartbeat
from ..subjects import Lane
from .auth import authenticate_request
from .http import json_response
from .state import GatewayState, state_of

GroupKey = tuple[str, str, str]  # pool, machine profile, bundle


@dataclass(slots=True)
class Group:
    workers: int = 0
    capacity: int = 0
    used: int = 0
    queued: int = 0
    models: set[str] = field(default_factory=set)
    holders: Counter[str] = field(default_factory=Counter)

    def state(self) -> str:
        if self.workers == 0:
            return "scaling_up" if self.queued else "scaled_to_zero"
        if self.queued and self.used >= self.capacity:
            return "saturated"  # every slot busy and items waiting: the scaler adds workers
        return "serving" if self.used else "idle"


async def get_capacity(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate_request(request, st.table())
    return json_response({"fleets": capacity_view(st, key)})


def capacity_view(st: GatewayState, key: KeyRoute | None) -> list[dict[str, object]]:
    groups = gather(st.registry.live(), st.demand.by_lane)
    # Without a key, holders (other tenants' names) show only where no key exists at all.
    admin = key.admin if key is not None else not st.table().keys
    out = []
    for (pool, mp, bundle), g in sorted(groups.items()):
        if key is not None and not key.admin and \
                (not key.allows_pool(pool) or not any(key.allows_model(m) for m in g.models)):
            continue
        row: dict[str, object] = {
            "pool": pool, "machine_profile": mp, "bundle": bundle,
            "models": sorted(g.models if admin or key is None else {m for m in g.models if key.allows_model(m)}),
            "workers": g.workers, "capacity": g.capacity, "used": g.used,
            "available": max(0, g.capacity - g.used), "queued": g.queued,
            "scaling": g.state(),
        }
        if admin and key is not None:
            row["holders"] = dict(g.holders)
        out.append(row)
    return out


def gather(beats: list[Heartbeat], by_lane: dict[Lane, int]) -> dict[GroupKey, Group]:
    groups: dict[GroupKey, Group] = defaultdict(Group)
    for b in beats:
        g = groups[(b.pool, b.machine_profile, b.bundle)]
        g.models.update(b.models)
        if b.draining:  # finishing what it holds, taking nothing new: no slots to offer
            continue
        g.workers += 1
        g.capacity += b.concurrency or 1  # a worker older than the field runs at least one
        g.used += b.in_flight
        g.holders.update(b.holders or {})
    for lane, n in by_lane.items():
        if n <= 0:
            continue
        g = groups[(lane.pool, lane.machine_profile, lane.bundle)]
        g.models.add(lane.model)
        g.queued += n
    for g in groups.values():
        g.queued = max(0, g.queued - g.used)  # stored items include the unacked ones in flight
    return groups
