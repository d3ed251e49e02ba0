"""GET /v1/jobs: the key's own jobs, newest first, filtered by state, model and time, paginated.

The tenant's records are read from the jobs bucket by key prefix (`<tenant>.>`, a KV watch
of the last value per key), so a key never sees another tenant's jobs and no index is kept
beside the bucket. Pages are cut by an opaque cursor (the last job's creation time and id),
so a job recorded while paging neither repeats nor shifts a page.

find_jobs() is the rule for every protocol (HTTP here, gRPC's ListJobs, WebSocket's jobs.list),
each of which fills a JobQuery from its own request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_args

import orjson
from aiohttp import web

from ..api.table import KeyRoute
from ..contracts import JobState
from ..errors import ApiError
from ..messages import JobRecord
from .auth import authenticate_request, tenant_of
from .http import REQUEST_ID, json_response
from .jobs import record_view
from .state import GatewayState, state_of

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SCAN = 50_000  # records read per request at most: the bucket's TTL bounds a tenant's jobs
STATES = frozenset(get_args(JobState))
PARAMS = frozenset({"state", "model", "kind", "since", "until", "limit", "cursor", "tenant"})


@dataclass(frozen=True, slots=True)
class JobQuery:
    """GET /v1/jobs's parameters, typed; gRPC's ListJobs and WebSocket's jobs.list fill the same one."""

    states: frozenset[str] = frozenset()
    model: str | None = None
    kind: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None  # a next_cursor handed out before
    tenant: str | None = None  # admin keys only: that tenant's jobs


async def list_jobs(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate_request(request, st.table())
    return json_response(await find_jobs(st, key, query_of(request.query)))


def query_of(q: Mapping[str, str]) -> JobQuery:
    """The query string as a JobQuery: text parsed here, values checked by find_jobs()."""
    unknown = set(q) - PARAMS
    if unknown:
        raise ApiError("bad_request", f"unknown query parameter(s): {', '.join(sorted(unknown))} "
                                      f"(known: {', '.join(sorted(PARAMS))})")
    return JobQuery(states=_states(q.get("state")), model=q.get("model"), kind=q.get("kind"),
                    since=_time(q, "since"), until=_time(q, "until"), limit=_limit(q.get("limit")),
                    cursor=q.get("cursor"), tenant=q.get("tenant"))


async def find_jobs(st: GatewayState, key: KeyRoute | None, query: JobQuery) -> dict[str, Any]:
    """One page of the key's tenant's jobs (another tenant's for an admin naming it), newest first.

    Every protocol's listing: {"jobs": [record_view, ...], "next_cursor": str | None}; bad values
    are bad_request, a non-admin naming a tenant is forbidden.
    """
    tenant = tenant_of(key)
    if query.tenant is not None:
        if key is None or not key.can("readAllJobs"):
            raise ApiError("forbidden", "only a key with the readAllJobs scope (or admin) lists another tenant's jobs")
        tenant = query.tenant
        if not REQUEST_ID.match(tenant) or "." in tenant:
            raise ApiError("bad_request", f"invalid tenant {tenant[:64]!r}")
    bad = query.states - STATES
    if bad:
        raise ApiError("bad_request", f'"state" takes {", ".join(sorted(STATES))}; '
                                      f'got {", ".join(sorted(bad))[:200]!r}')
    kind = query.kind
    if kind is not None and kind not in ("item", "plan"):
        raise ApiError("bad_request", '"kind" must be item or plan')
    for name, value in (("since", query.since), ("until", query.until)):
        if value is not None and not 0 <= value < 1e11:  # unix seconds; NaN fails this too
            raise ApiError("bad_request", f'"{name}" must be unix seconds, got {value!r}')
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ApiError("bad_request", f'"limit" must be an integer from 1 to {MAX_LIMIT}, got {query.limit}')
    after = _cursor(query.cursor) if query.cursor is not None else None
    since, until, states = query.since, query.until, query.states

    records = await st.dispatcher.tenant_jobs(tenant, MAX_SCAN)
    views = []
    for rec in records:
        view = record_view(rec)
        when = _created(rec)
        if ((states and view["state"] not in states) or (query.model is not None and rec.model != query.model)
                or (kind and rec.kind != kind) or (since is not None and when < since)
                or (until is not None and when >= until)):
            continue
        if after is not None and (when, rec.id) >= after:
            continue
        views.append(((when, rec.id), view))
    views.sort(key=lambda kv: kv[0], reverse=True)
    page = views[:query.limit]
    more = len(views) > query.limit
    return {"jobs": [v for _, v in page], "next_cursor": _encode_cursor(page[-1][0]) if more and page else None}


def _created(rec: JobRecord) -> float:
    return rec.created_at or rec.updated_at  # records from before created_at existed


def _states(raw: str | None) -> frozenset[str]:
    if raw is None:
        return frozenset()
    asked = frozenset(s.strip() for s in raw.split(",") if s.strip())
    if not asked:  # which states it names is find_jobs()'s to check
        raise ApiError("bad_request", f'"state" takes {", ".join(sorted(STATES))} (comma-separated); '
                                      f"got {raw[:64]!r}")
    return asked


def _time(q: Mapping[str, str], name: str) -> float | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        return float(raw)  # its range is find_jobs()'s to check
    except ValueError:
        raise ApiError("bad_request", f'"{name}" must be unix seconds, got {raw[:64]!r}') from None


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:  # "²".isdigit(), yet int() refuses it
        raise ApiError("bad_request", f'"limit" must be an integer from 1 to {MAX_LIMIT}, got {raw[:64]!r}')
    return int(raw)


def _encode_cursor(pos: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(pos))).decode().rstrip("=")


def _cursor(raw: str) -> tuple[float, str]:
    try:
        if len(raw) > 512:
            raise ValueError("too long")
        when, job_id = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(when, (int, float)) and isinstance(job_id, str):
            return float(when), job_id
    except (binascii.Error, ValueError, TypeError):
        pass
    raise ApiError("bad_request", '"cursor" is not one this endpoint handed out (use "next_cursor")')
