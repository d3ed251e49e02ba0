"""The built-in stages: `limits` (requests, items, tokens, concurrency and quotas) and `defaults` (params).

limits: every limit that applies to the request (its tiers match the key's) is taken in order from
the ledger (ledger.py); the first that is used up refuses the request with 429 and gives back what
the earlier ones took. What counts:

- requests: 1 per request; items: the request's items;
- tokens (generate and chat only): reserved up front as the declared maximum output
  (`max_tokens`, else `max_completion_tokens`, else DEFAULT_MAX_TOKENS) per item, plus the request's
  items as UTF-8 JSON bytes as a bound on their input tokens; settled to the worker's reported
  `input_tokens + output_tokens` when the request ends (streams at their final chunk). A request
  answered with a 202 job keeps its reservation: the gateway does not see the job's result;
- concurrent: a slot held from admission until the answer (a stream's end, or the 202).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client import Counter

from ...api.table import LimitRoute
from ...errors import ApiError
from ...subjects import token
from .chain import REFUSED, PolicyRequest, Usage
from .headers import Standing, publish, render
from .ledger import Lease, Ledger
from .windows import window_end, window_length, window_of

DEFAULT_MAX_TOKENS = 1024  # the output a generate/chat request may produce when it declares no maximum
TOKEN_OPS = frozenset({"generate", "chat"})
CONCURRENT_RETRY_AFTER_S = 1


def token_reservation(items: list[Any], params: Mapping[str, Any]) -> int:
    """Tokens a generate/chat request may use at most: declared output per item, plus its input's bytes."""
    declared = params.get("max_tokens")
    if declared is None:
        declared = params.get("max_completion_tokens")
    if declared is None:
        declared = DEFAULT_MAX_TOKENS
    try:
        if isinstance(declared, bool) or float(declared) != int(declared):
            raise ValueError(declared)
        out = int(declared)
    except (TypeError, ValueError, OverflowError):
        raise ApiError("bad_request", f"max_tokens must be a whole number, got {str(declared)[:32]!r}") from None
    if out < 1:
        raise ApiError("bad_request", f"max_tokens must be at least 1, got {out}")
    # A byte-level tokenizer makes at most one token per input byte: the JSON bytes bound the prompt.
    return out * len(items) + len(orjson.dumps(items))


def reported_tokens(usage: Usage) -> int | None:
    if not usage:
        return None
    return int(usage.get("input_tokens", 0) or 0) + int(usage.get("output_tokens", 0) or 0)


def subject_of(limit: LimitRoute, request: PolicyRequest) -> str:
    """Whom the limit counts for this request."""
    if limit.per == "key":
        return "k:" + (request.key.name if request.key is not None else request.tenant)
    if limit.per == "tenant":
        return "t:" + request.tenant
    if limit.per == "ip":
        return "i:" + (request.client_ip or "unknown")
    return "*"


class LimitsStage:
    def __init__(self, limits: tuple[LimitRoute, ...], ledger: Ledger, decisions: Counter) -> None:
        self.limits = limits
        self.ledger = ledger
        self.decisions = decisions
        self._children: dict[tuple[str, str, str], Any] = {}  # labels() costs more than inc(): keep them

    def applies(self, limit: LimitRoute, request: PolicyRequest) -> bool:
        if limit.tiers is not None and (request.key is None or request.key.tier not in limit.tiers):
            return False
        return limit.kind != "tokens" or request.op in TOKEN_OPS

    async def __call__(self, request: PolicyRequest) -> None:
        now = time.time()
        standings: list[Standing] = []
        for limit in self.limits:
            if not self.applies(limit, request):
                continue
            key = f"{limit.kind[0]}.{token(limit.name)}.{token(subject_of(limit, request))}"
            if limit.kind == "concurrent":
                standing = await self._concurrent(limit, key, request, now)
            else:
                standing = await self._windowed(limit, key, request, now)
            standings.append(standing)
            if standing.remaining < 0:  # refused: what earlier limits took goes back (Chain.run ends them)
                self._count(limit, request, "limited")
                raise self._refusal(limit, standings, now)
            self._count(limit, request, "admitted")
        if standings:
            headers = render(standings)
            request.headers.update(headers)
            publish(request.request_id, headers)

    async def _windowed(self, limit: LimitRoute, key: str, request: PolicyRequest, now: float) -> Standing:
        if limit.kind == "requests":
            units = 1
        elif limit.kind == "items":
            units = len(request.items)
        else:
            units = token_reservation(request.items, request.params)
        if units > limit.limit:
            what = "tokens (the declared max_tokens per item plus the input's bytes)" if limit.kind == "tokens" \
                else limit.kind
            raise ApiError("bad_request", f"this request needs {units} {what}, more than limit {limit.name!r} "
                                          f"allows in a whole window ({limit.limit}); it can never be admitted")
        window = window_of(limit, now)
        ends = window_end(limit, window)
        lease = self.ledger.take_local(key, window, units, now) or await self.ledger.take(
            key, window, ends, units, limit.limit, now)
        reset = max(1, math.ceil(ends - now))
        if lease is None:
            return Standing(limit.name, limit.limit, window_length(limit), -1, reset)
        request.on_end(lambda usage: self._settle(limit, key, window, ends, units, usage))
        return Standing(limit.name, limit.limit, window_length(limit), _remaining(limit, lease), reset)

    def _settle(self, limit: LimitRoute, key: str, window: int, ends: float, reserved: int, usage: Usage) -> None:
        """A refused request gives its units back; a token reservation settles to the usage."""
        if usage is REFUSED:
            self.ledger.give_back_local(key, window, ends, reserved, time.time())
            return
        if limit.kind != "tokens":
            return
        actual = reported_tokens(usage)
        if actual is None:
            return  # no usage reported (or a 202 job): the reservation stands
        if actual < reserved:
            self.ledger.give_back_local(key, window, ends, reserved - actual, time.time())
        elif actual > reserved:
            self.ledger.spawn(self.ledger.charge(key, window, actual - reserved))

    async def _concurrent(self, limit: LimitRoute, key: str, request: PolicyRequest, now: float) -> Standing:
        slots = self.ledger.acquire_local(key) or await self.ledger.acquire(key, limit.limit, now)
        if slots is None:
            return Standing(limit.name, limit.limit, None, -1, None)
        request.on_end(lambda usage: self.ledger.release(key, time.time()))
        return Standing(limit.name, limit.limit, None, limit.limit - slots.seen_others - slots.in_use, None)

    def _refusal(self, limit: LimitRoute, standings: list[Standing], now: float) -> ApiError:
        shown = [s if s.remaining >= 0 else Standing(s.name, s.quota, s.window_s, 0, s.reset_s) for s in standings]
        headers = render(shown)
        last = standings[-1]
        if limit.kind == "concurrent":
            headers["Retry-After"] = str(CONCURRENT_RETRY_AFTER_S)
            return ApiError("concurrency_limited", f"limit {limit.name!r}: {limit.limit} concurrent request(s) "
                                                   f"per {limit.per} are in flight across the gateway replicas; "
                                                   "nothing was queued", headers=headers)
        headers["Retry-After"] = str(last.reset_s)
        if limit.period is not None:
            return ApiError("quota_exceeded", f"limit {limit.name!r}: the {limit.period}ly quota of {limit.limit} "
                                              f"{limit.kind} per {limit.per} is used up; it renews in "
                                              f"{last.reset_s}s (UTC {limit.period}); nothing was queued",
                            headers=headers)
        return ApiError("rate_limited", f"limit {limit.name!r}: {limit.limit} {limit.kind} per {limit.per} "
                                        f"per {limit.window_s}s are used up; the window ends in {last.reset_s}s; "
                                        "nothing was queued", headers=headers)

    def _count(self, limit: LimitRoute, request: PolicyRequest, outcome: str) -> None:
        labels = (limit.name, request.tenant, outcome)
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.decisions.labels(*labels)
        child.inc()


def _remaining(limit: LimitRoute, lease: Lease) -> int:
    """What is left of the window as this replica last saw the counter (others may have spent since)."""
    return max(0, limit.limit - lease.seen_used + lease.left)


class DefaultsStage:
    """Params every request gets unless it sends them (e.g. a max_tokens for requests that declare none)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    async def __call__(self, request: PolicyRequest) -> None:
        for name, value in self.params.items():
            request.params.setdefault(name, value)

