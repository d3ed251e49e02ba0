"""GET /v1/jobs: the key's own jobs, newest first, filtered by state, model and time, paginated.

The tenant's records are read from the jobs bucket by key prefix (`<tenant>.>`, a KV watch
of the last value per key), so a key never sees another tenant's jobs and no index is kept
beside the bucket. Pages are cut by an opaque cursor (the last job's creation time and id),
so a job recorded while paging neither repeats nor shifts a page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import get_args

import orjson
from aiohttp import web

from ..errors import ApiError
from ..messages import JobRecord, JobState
from .auth import authenticate, tenant_of
from .http import REQUEST_ID, json_response
from .jobs import record_view
from .state import state_of

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_SCAN = 50_000  # records read per request at most: the bucket's TTL bounds a tenant's jobs
STATES = frozenset(get_args(JobState))
PARAMS = frozenset({"state", "model", "kind", "since", "until", "limit", "cursor", "tenant"})


async def list_jobs(request: web.Request) -> web.Response:
    st = state_of(request)
    key = authenticate(st.table(), request.headers.get("Authorization"))
    q = request.query
    unknown = set(q) - PARAMS
    if unknown:
        raise ApiError("bad_request", f"unknown query parameter(s): {', '.join(sorted(unknown))} "
                                      f"(known: {', '.join(sorted(PARAMS))})")
    tenant = tenant_of(key)
    if "tenant" in q:
        if key is None or not key.admin:
            raise ApiError("forbidden", "only an admin key lists another tenant's jobs")
        tenant = q["tenant"]
        if not REQUEST_ID.match(tenant) or "." in tenant:
            raise ApiError("bad_request", f"invalid tenant {tenant!r}")
    states = _states(q.get("state"))
    kind = q.get("kind")
    if kind is not None and kind not in ("item", "plan"):
        raise ApiError("bad_request", '"kind" must be item or plan')
    since, until = _time(q, "since"), _time(q, "until")
    limit = _limit(q.get("limit"))
    after = _cursor(q["cursor"]) if "cursor" in q else None

    records = await st.dispatcher.tenant_jobs(tenant, MAX_SCAN)
    views = []
    for rec in records:
        view = record_view(rec)
        when = _created(rec)
        if ((states and view["state"] not in states) or ("model" in q and rec.model != q["model"])
                or (kind and rec.kind != kind) or (since is not None and when < since)
                or (until is not None and when >= until)):
            continue
        if after is not None and (when, rec.id) >= after:
            continue
        views.append(((when, rec.id), view))
    views.sort(key=lambda kv: kv[0], reverse=True)
    page = views[:limit]
    more = len(views) > limit
    return json_response({"jobs": [v for _, v in page],
                          "next_cursor": _encode_cursor(page[-1][0]) if more and page else None})


def _created(rec: JobRecord) -> float:
    return rec.created_at or rec.updated_at  # records from before created_at existed


def _states(raw: str | None) -> frozenset[str]:
    if raw is None:
        return frozenset()
    asked = frozenset(s.strip() for s in raw.split(",") if s.strip())
    bad = asked - STATES
    if bad or not asked:
        raise ApiError("bad_request", f'"state" takes {", ".join(sorted(STATES))} (comma-separated); '
                                      f"got {raw!r}")
    return asked


def _time(q: Mapping[str, str], name: str) -> float | None:
    raw = q.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e11:  # unix seconds; NaN fails this too
        raise ApiError("bad_request", f'"{name}" must be unix seconds, got {raw!r}')
    return value


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError("bad_request", f'"limit" must be an integer from 1 to {MAX_LIMIT}, got {raw!r}')
    return int(raw)


def _encode_cursor(pos: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(pos))).decode().rstrip("=")


def _cursor(raw: str) -> tuple[float, str]:
    try:
        when, job_id = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(when, (int, float)) and isinstance(job_id, str) and len(raw) <= 512:
            return float(when), job_id
    except (binascii.Error, ValueError, TypeError):
        pass
    raise ApiError("bad_request", '"cursor" is not one this endpoint handed out (use "next_cursor")')
