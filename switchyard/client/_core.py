"""Transport-free pieces of the client: request building, item normalisation,
Retry-After parsing and the retry/poll schedules. No I/O here."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from .. import __version__

USER_AGENT = f"switchyard-client/{__version__}"

# 503 codes that mean "this gateway cannot take it right now" and are safe to
# resend with the same request id (the work stream de-duplicates on it).
# Not no_capacity: a pinned pool without workers will not fix itself in seconds.
# pools_unavailable: the pool store (Kubernetes API) was unreachable; pool calls are safe to resend.
RETRYABLE_CODES: frozenset[str] = frozenset({"queue_unavailable", "not_ready", "pools_unavailable"})


def new_request_id() -> str:
    return uuid.uuid4().hex


def normalize_items(items: Any) -> list[Any]:
    """One item or a list of them -> a list of item objects; a str is {"text": str}."""
    if isinstance(items, (str, dict)):
        items = [items]
    elif not isinstance(items, (list, tuple)):
        raise TypeError(f"items must be a str, a dict, or a list of them, not {type(items).__name__}")
    out: list[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append({"text": item})
        elif isinstance(item, dict):
            out.append(item)
        else:
            raise TypeError(f"items[{i}] must be a str or a dict, not {type(item).__name__}")
    return out


def infer_path(op: str, model: str) -> str:
    if not op or "/" in op:
        raise ValueError(f"invalid operation {op!r}")
    model = model.strip("/")
    if not model:
        raise ValueError("model must not be empty")
    # Model ids keep their '/' (org/name) and ':' (profile) as the gateway routes on them.
    return f"/v1/{quote(op, safe='')}/{quote(model, safe='/:@')}"


def job_path(job_id: str) -> str:
    if not job_id:
        raise ValueError("job_id must not be empty")
    return f"/v1/jobs/{quote(job_id, safe='')}"


def pool_path(name: str, action: str = "") -> str:
    if not name or "/" in name:
        raise ValueError(f"invalid pool name {name!r}")
    return f"/v1/pools/{quote(name, safe='')}{'/' + action if action else ''}"


def renew_interval(ttl_s: float) -> float:
    """Renew a lease three times per TTL: two renewals may fail before it lapses."""
    return max(ttl_s / 3.0, 0.2)


def lane_headers(gpu: str | None, pool: str | None, bundle: str | None) -> dict[str, str]:
    # gpu may be "pool/profile"; the gateway splits it (and rejects a contradicting X-Pool),
    # so it is sent unchanged rather than re-implementing that rule here.
    headers: dict[str, str] = {}
    if gpu:
        headers["X-Machine-Profile"] = gpu
    if pool:
        headers["X-Pool"] = pool
    if bundle:
        headers["X-Bundle"] = bundle
    return headers


# Seconds kept free between the gateway's hold and this client's own HTTP timeout.
HOLD_MARGIN_S = 5.0


def prefer_wait(capacity_timeout: float, http_timeout: float) -> dict[str, str]:
    """`Prefer: wait=N` for a cold lane: held by the gateway for up to N s (it caps N by the
    model's timeout), and answered before this client's HTTP timeout would fire."""
    wait = int(min(capacity_timeout, http_timeout - HOLD_MARGIN_S))
    return {"Prefer": f"wait={wait}"} if wait >= 1 else {}


def base_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions tolerated) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries for transient failures.

    max_retries: resends after the first attempt (0 disables retrying).
    backoff: first pause when the gateway gave no Retry-After; doubles each time.
    max_delay: cap on any pause, including one the gateway asked for, so a
      misconfigured Retry-After cannot stall a caller for minutes.
    """

    max_retries: int = 3
    backoff: float = 0.25
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Pause before resend number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base = self.backoff * (2 ** (attempt - 1))
        return min(base * random.uniform(0.8, 1.2), self.max_delay)  # jitter de-synchronises clients


def poll_delays(first: float | None, cap: float, floor: float = 0.25) -> Iterator[float]:
    """Pauses between job polls: start at the Retry-After hint (capped), then back off x1.5 up to `cap`.

    A Retry-After during scale-up is an estimate of minutes; polling every `cap`
    seconds notices a worker that came up early without hammering the gateway.
    """
    cap = max(cap, 0.0)
    delay = min(first if first is not None else floor, cap)
    delay = max(delay, min(floor, cap))
    while True:
        yield delay
        delay = min(max(delay, floor) * 1.5, cap)
