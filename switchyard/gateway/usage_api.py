"""GET /v1/usage: the usage ledger summed per group over a time range, as JSON or CSV, for billing.

Query: `from` (RFC 3339, required), `to` (RFC 3339, default now; exclusive), `group_by` (a comma-separated
list of usage_totals.GROUPS, default `tenant`), `tenant` (one tenant only) and `format` (`json` or `csv`;
without it, `Accept: text/csv` picks CSV). A range is at most MAX_RANGE_DAYS long and may hold at most
MAX_SCAN records (413 usage_range_too_large past it: ask for a shorter range). Keys with the readUsage
scope (admin keys hold it) only: usage covers every tenant, and each tenant's bill is nobody else's.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

from aiohttp import web

from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from ..subjects import ANONYMOUS_TENANT
from .auth import authenticate_request
from .dispatch import unavailable
from .http import json_response
from .state import state_of
from .usage_ledger import TooManyRecords, scan
from .usage_totals import GROUPS, Aggregate

MAX_RANGE_DAYS = 31  # a billing month
MAX_SCAN = 250_000  # ledger records one request may sum: ~10 s of scanning on 2 busy cores (docs/performance.md)
PARAMS = frozenset({"from", "to", "group_by", "tenant", "format"})
TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a key's tenant is a DNS label
CSV_TYPE = "text/csv"


def reads_usage(table: RoutingTable | None, key: KeyRoute | None) -> bool:
    """May this caller see usage (GET /v1/usage, usage.anomaly events)? The readUsage scope; no key at all
    only where the gateway has no keys (open to everyone)."""
    return key.can("readUsage") if key is not None else table is not None and not table.keys


def _reader(table: RoutingTable, key: KeyRoute | None) -> None:
    if not reads_usage(table, key):
        raise ApiError("forbidden", "usage covers every tenant: keys with the readUsage scope (or admin) only")


def parse_time(raw: str, name: str) -> dt.datetime:
    """RFC 3339 with its offset (`Z` or `+hh:mm`): a bill's range never depends on the gateway's time zone."""
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        when = None
    if when is None or "T" not in raw.upper() or when.tzinfo is None:
        raise ApiError("bad_request", f'"{name}" must be an RFC 3339 time with an offset, e.g. '
                                      f'2026-11-01T00:00:00Z; got {raw[:64]!r}')
    return when.astimezone(dt.UTC)


def time_range(query: Any, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    if "from" not in query:
        raise ApiError("bad_request", '"from" is required (RFC 3339, e.g. 2026-11-01T00:00:00Z)')
    start = parse_time(query["from"], "from")
    end = parse_time(query["to"], "to") if "to" in query else now
    if end <= start:
        raise ApiError("bad_request", f'"to" ({end.isoformat()}) must be after "from" ({start.isoformat()})')
    if end - start > dt.timedelta(days=MAX_RANGE_DAYS):
        raise ApiError("bad_request", f"the range is {(end - start).total_seconds() / 86_400:.2f} days; "
                                      f"at most {MAX_RANGE_DAYS} days at once")
    return start, end


def group_by(raw: str | None) -> list[str]:
    if raw is None:
        return ["tenant"]
    groups = [g.strip() for g in raw.split(",")]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ApiError("bad_request", f'"group_by" takes a comma-separated list of {", ".join(GROUPS)}; '
                                      f"got {raw[:64]!r}")
    return groups


def wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in ("json", "csv"):
            raise ApiError("bad_request", f'"format" is json or csv, got {fmt[:32]!r}')
        return fmt == "csv"
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip().lower() == CSV_TYPE for part in accept.split(","))


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    """RFC 4180: a header row, CRLF line ends, fields quoted where they must be."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns])
    return out.getvalue().encode()


async def get_usage(request: web.Request) -> web.Response:
    st = state_of(request)
    table = st.table()
    _reader(table, authenticate_request(request, table))
    query = request.query
    unknown = set(query) - PARAMS
    if unknown:
        raise ApiError("bad_request", f"unknown query parameter(s): {', '.join(sorted(unknown))} "
                                      f"(known: {', '.join(sorted(PARAMS))})")
    start, end = time_range(query, dt.datetime.now(dt.UTC))
    tenant = query.get("tenant")
    if tenant is not None and tenant != ANONYMOUS_TENANT and not TENANT.match(tenant):
        raise ApiError("bad_request", f'"tenant" must be a tenant name (a DNS label), got {tenant[:64]!r}')
    csv_out = wants_csv(request)
    totals = Aggregate(group_by(query.get("group_by")))
    js = st.dispatcher.js
    if js is None or not st.dispatcher.connected:
        raise unavailable("not connected to NATS")
    try:
        scanned = await scan(js, start, end, tenant, MAX_SCAN, totals.add)
    except TooManyRecords as exc:
        raise ApiError("usage_range_too_large",
                       f"the range holds {exc.count} usage records; one request sums at most {MAX_SCAN}: "
                       "ask for a shorter range") from None
    rows = totals.rows()
    if csv_out:
        return web.Response(body=to_csv(totals.columns(), rows), content_type=CSV_TYPE, charset="utf-8")
    return json_response({"from": _rfc3339(start), "to": _rfc3339(end), "group_by": list(totals.group_by),
                          "tenant": tenant, "records": scanned, "usage": rows})


def _rfc3339(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/usage", get_usage)
