"""A circuit breaker per lane (spec.circuitBreaker), held by one gateway process.

closed: requests pass; `consecutive_failures` worker failures in a row open it.
open: every request for the lane is refused at once with 503 `circuit_open` (Retry-After: the
cool-off left), queued work included: it would only land on the failing workers.
half-open: after the cool-off, `half_open_probes` requests at a time pass; a success closes the
circuit, a failure opens it again for another cool-off.

A tenant cannot shut a lane for the others: a streak of failures that all came from one tenant's
requests (inputs that crash the handler, say) opens a circuit for that tenant alone on the lane;
the lane's own circuit opens only when the streak spans several tenants.

Only outcomes this process waits for count (a synchronous request's result or its timeout, a
hold's result, a stream's end). A probe whose outcome it never sees (it became a 202 job) frees its slot after
the model's timeoutSeconds, so a half-open lane cannot stay shut for want of an answer.
Replicas do not share the state: each opens on the failures it saw itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ..api.table import BreakerRoute, ModelRoute
from ..errors import ApiError
from ..messages import Result
from ..subjects import Lane
from .metrics import Metrics

State = Literal["closed", "open", "half_open"]
STATE_VALUE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}  # switchyard_gateway_circuit_state
LANE_WIDE = ""  # the scope of a lane's own circuit; else a tenant's on that lane


@dataclass
class Circuit:
    failures: int = 0  # consecutive, while closed
    tenants: set[str] = field(default_factory=set)  # whose requests failed in the current streak
    opened_at: float | None = None  # None: closed
    probes: list[float] = field(default_factory=list)  # when each probe in flight was let through
    opened: int = 0  # times it opened (for /health)

    def state(self, cfg: BreakerRoute, now: float) -> State:
        if self.opened_at is None:
            return "closed"
        return "open" if now - self.opened_at < cfg.cool_off_s else "half_open"

    def close(self) -> None:
        self.failures, self.tenants, self.opened_at, self.probes = 0, set(), None, []


NEUTRAL_CODES = frozenset({"invalid_input", "cancelled"})  # the caller's input, the caller's cancel


def failed(result: Result | None) -> bool | None:
    """Does this outcome count against the lane? True: a failure; False: a success; None: neither.

    None (no result in time) is a failure: a worker is live but did not answer. A refused input
    (invalid_input) is the caller's, a cancel or an expiry the queue's: they say nothing either way.
    """
    if result is None:
        return True
    if result.ok:
        return False
    if result.state in ("cancelled", "expired") or (result.error or {}).get("code") in NEUTRAL_CODES:
        return None
    return True


class Breakers:
    def __init__(self, clock: Callable[[], float] = time.monotonic, metrics: Metrics | None = None) -> None:
        self._clock = clock
        self._metrics = metrics
        self._circuits: dict[tuple[Lane, str], Circuit] = {}
        self._config: dict[Lane, BreakerRoute] = {}

    def admit(self, lane: Lane, route: ModelRoute, tenant: str) -> None:
        """Let `tenant`'s request for `lane` through, or raise circuit_open."""
        cfg = route.breaker
        if cfg is None:
            if lane in self._config:  # the breaker was taken off the Upstream
                self._forget(lane)
            return
        self._config[lane] = cfg
        for scope in (LANE_WIDE, tenant):
            circuit = self._circuits.get((lane, scope))
            if circuit is not None and circuit.opened_at is not None:
                self._let_through(lane, scope, circuit, cfg, route.timeout_s)

    def _let_through(self, lane: Lane, scope: str, circuit: Circuit, cfg: BreakerRoute, timeout_s: float) -> None:
        now = self._clock()
        what = (f"lane {lane.machine_profile}/{lane.bundle} of model {lane.model!r} in pool {lane.pool!r}"
                + (" (for this tenant's requests)" if scope else ""))
        if circuit.state(cfg, now) == "open":
            left = max(1, math.ceil(cfg.cool_off_s - (now - (circuit.opened_at or now))))
            raise ApiError("circuit_open",
                           f"{what} failed {cfg.consecutive_failures} times in a row; it refuses work for {left}s "
                           "more, then lets a probe through", headers={"Retry-After": str(left)})
        circuit.probes = [t for t in circuit.probes if now - t < timeout_s]
        if len(circuit.probes) >= cfg.half_open_probes:
            raise ApiError("circuit_open", f"{what} is half-open and its probe is in flight; try again shortly",
                           headers={"Retry-After": "1"})
        circuit.probes.append(now)

    def record(self, lane: Lane, route: ModelRoute, tenant: str, result: Result | None) -> None:
        """The outcome of `tenant`'s request that this process waited for (`None`: no result in time)."""
        self._record(lane, route, tenant, failed(result))

    def record_error(self, lane: Lane, route: ModelRoute, tenant: str, error: ApiError | None) -> None:
        """How a stream ended: None (it finished), or its error (worker_error, worker_lost, stream_gap,
        deadline_exceeded count; invalid_input and cancelled do not)."""
        self._record(lane, route, tenant, None if error is not None and error.code in NEUTRAL_CODES
                     else error is not None)

    def _record(self, lane: Lane, route: ModelRoute, tenant: str, verdict: bool | None) -> None:
        cfg = route.breaker
        if cfg is None or verdict is None:
            return
        now = self._clock()
        if not verdict:
            # A success closes a half-open circuit (its probe) and ends a streak; while a circuit is open it
            # is a request let through before, and changes nothing.
            for scope in (LANE_WIDE, tenant):
                circuit = self._circuits.get((lane, scope))
                if circuit is not None and circuit.state(cfg, now) != "open":
                    circuit.close()
            return
        self._config[lane] = cfg
        own = self._circuits.get((lane, tenant))
        if own is not None and own.opened_at is not None:
            if own.state(cfg, now) == "half_open":  # the tenant's probe failed: another cool-off
                self._open(lane, tenant, own, now)
            return
        circuit = self._circuit(lane, LANE_WIDE)
        if circuit.opened_at is not None:
            if circuit.state(cfg, now) == "half_open":  # a probe failed: another cool-off
                self._open(lane, LANE_WIDE, circuit, now)
            return  # already open: a request let through before it opened
        circuit.failures += 1
        circuit.tenants.add(tenant)
        if circuit.failures < cfg.consecutive_failures:
            return
        if len(circuit.tenants) > 1:
            self._open(lane, LANE_WIDE, circuit, now)
        else:  # one tenant's streak: its own requests only
            circuit.close()
            self._open(lane, tenant, self._circuit(lane, tenant), now)

    def _circuit(self, lane: Lane, scope: str) -> Circuit:
        circuit = self._circuits.get((lane, scope))
        if circuit is None:
            circuit = self._circuits[(lane, scope)] = Circuit()
            if self._metrics is not None and scope == LANE_WIDE:
                # Read when scraped: an open circuit turns half-open by itself. Tenants are not labels.
                self._metrics.circuit_state.labels(*_labels(lane)).set_function(
                    lambda: STATE_VALUE[self.state(lane)])
        return circuit

    def _open(self, lane: Lane, scope: str, circuit: Circuit, now: float) -> None:
        circuit.failures, circuit.tenants, circuit.probes = 0, set(), []
        circuit.opened_at = now
        circuit.opened += 1
        if self._metrics is not None:
            self._metrics.circuit_opened.labels(*_labels(lane), "tenant" if scope else "lane").inc()

    def _forget(self, lane: Lane) -> None:
        for key in [k for k in self._circuits if k[0] == lane]:
            del self._circuits[key]
        self._config.pop(lane, None)
        if self._metrics is not None:
            try:
                self._metrics.circuit_state.remove(*_labels(lane))
            except KeyError:
                pass

    def state(self, lane: Lane, tenant: str = LANE_WIDE) -> State:
        """The lane's own circuit, or `tenant`'s on it."""
        circuit, cfg = self._circuits.get((lane, tenant)), self._config.get(lane)
        return "closed" if circuit is None or cfg is None else circuit.state(cfg, self._clock())

    def snapshot(self) -> list[dict[str, object]]:
        """Every circuit that has seen a failure, lane-wide (tenant null) or a tenant's: what /health shows."""
        now = self._clock()
        out: list[dict[str, object]] = []
        for (lane, scope), circuit in sorted(self._circuits.items(), key=lambda kv: (kv[0][0].subject, kv[0][1])):
            cfg = self._config[lane]
            state = circuit.state(cfg, now)
            left = cfg.cool_off_s - (now - (circuit.opened_at or now)) if state == "open" else 0.0
            out.append({"model": lane.model, "bundle": lane.bundle, "machine_profile": lane.machine_profile,
                        "pool": lane.pool, "tenant": scope or None, "state": state,
                        "consecutive_failures": circuit.failures, "opened": circuit.opened,
                        "retry_after_s": math.ceil(left)})
        return out


def _labels(lane: Lane) -> tuple[str, str, str, str]:
    return lane.pool, lane.machine_profile, lane.bundle, lane.model  # metrics.LANE
