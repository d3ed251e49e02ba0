"""API key check, the same for every protocol: HTTP (authenticate_request), gRPC (authenticate_grpc)
and the WebSocket (credentials once at the upgrade, verify() on every message).

Keys exist only as SHA-256 hashes, compared in constant time against every key. In order:
a key in the URL (400), the headers (Authorization: Bearer, X-API-Key), the client IP's failure
limit (429, before any hashing), the hash (401, counted as a failure), the key's window and
rotation sunset (401), its allowedCidrs (403). docs/security.md describes each.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

from aiohttp import web

from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from ..subjects import ANONYMOUS_TENANT
from ..tasks import cancel_all
from .authfailures import PENDING, settle, too_many
from .clientip import Address, bucket, client_ip, grpc_peer, parse_address, within
from .state import STATE, GatewayState, state_of

CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Query parameters that look like a key: refused outright, so a key never lands in a URL, a proxy's
# log or a browser's history (the gateway logs the path only).
KEY_IN_URL = frozenset({"key", "api_key", "apikey", "api-key", "x-api-key", "token", "access_token",
                        "auth", "authorization", "bearer"})
ROTATING = web.RequestKey("switchyard_rotating_key", dict)  # the Deprecation/Sunset headers to send
# The client IP the key was checked with: what spec.policy's `per: ip` limits count by.
CLIENT_IP = web.RequestKey("switchyard_client_ip", str)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a caller presented: the key (never logged) and the address it came from."""

    key: str | None
    client_ip: Address | None


def refuse_key_in_url(params: Iterable[str]) -> None:
    found = sorted({p for p in params if p.lower() in KEY_IN_URL})
    if found:  # name the parameter, never echo its value
        raise ApiError("api_key_in_url", f"never put an API key in the URL (query parameter {found[0]!r}): send "
                                         "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")


def credentials(authorization: str | None, x_api_key: str | None, ip: Address | None) -> Credentials:
    bearer = None
    if authorization is not None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError("unauthorized", "Authorization header must be 'Bearer <key>'", headers=CHALLENGE)
        bearer = presented.strip()
    header_key = x_api_key.strip() if x_api_key is not None else None
    if x_api_key is not None and not header_key:
        raise ApiError("unauthorized", "X-API-Key header is empty", headers=CHALLENGE)
    if bearer is not None and header_key is not None and not hmac.compare_digest(bearer, header_key):
        raise ApiError("bad_request", "Authorization and X-API-Key carry different keys: send one key, in one of them")
    return Credentials(bearer or header_key, ip)


def verify(st: GatewayState, table: RoutingTable, creds: Credentials, now: float | None = None,
                 ) -> KeyRoute | None:
    """The key that signed this request; None when it presents none and the gateway is anonymous."""
    if creds.key is None:
        if table.anonymous:
            return None
        raise ApiError("unauthorized", "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                       headers=CHALLENGE)
    ip = bucket(creds.client_ip)
    wait = st.auth_failures.retry_after(ip, table.max_auth_failures)  # in memory: no NATS round trip
    if wait is not None:
        raise too_many(table.max_auth_failures, wait)
    found = find_key(table, creds.key)
    if found is None:
        st.auth_failures.failed(ip, table.max_auth_failures, st.policy.ledger)  # counted across the replicas too
        raise ApiError("unauthorized", "unknown API key", headers=CHALLENGE)
    check_key(found, creds, time.time() if now is None else now)
    if found.successor:
        st.metrics.deprecated_key_requests.labels(found.owner, found.name).inc()
    return found


def check_key(found: KeyRoute, creds: Credentials, now: float) -> None:
    """A known key's window, rotation sunset and allowedCidrs (no failure is counted: it is a real key)."""
    if found.not_before is not None and now < found.not_before:
        raise ApiError("key_not_yet_valid", f"API key {found.name!r} is not valid until {_iso(found.not_before)}",
                       headers=CHALLENGE)
    if found.not_after is not None and now >= found.not_after:
        raise ApiError("key_expired", f"API key {found.name!r} expired at {_iso(found.not_after)}", headers=CHALLENGE)
    if found.sunset_at is not None and now >= found.sunset_at:
        raise ApiError("key_expired", f"API key {found.name!r} was rotated out at {_iso(found.sunset_at)}: "
                                      "use the key that replaced it", headers=CHALLENGE)
    if found.allowed_cidrs is not None and not within(creds.client_ip, found.allowed_cidrs):
        where = str(creds.client_ip) if creds.client_ip is not None else "an unknown address"
        raise ApiError("ip_not_allowed", f"API key {found.name!r} may not be used from {where} (its allowedCidrs)")


def valid_until(key: KeyRoute) -> float | None:
    """When `key` stops being valid (its notAfter or its rotation's sunset); None: never."""
    ends = [t for t in (key.not_after, key.sunset_at) if t is not None]
    return min(ends) if ends else None


def find_key(table: RoutingTable, presented: str) -> KeyRoute | None:
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found = None
    for key in table.keys:  # no early exit: every key costs the same
        if hmac.compare_digest(digest, key.sha256):
            found = key
    return found


def rotation_headers(table: RoutingTable, key: KeyRoute, now: float) -> dict[str, str]:
    """Deprecation (RFC 9745: since when) and Sunset (RFC 8594: until when) for a key being rotated out.
    Deprecated since its successor became valid (its notBefore), else since now."""
    if not key.successor or key.sunset_at is None:
        return {}
    successor = next((k for k in table.keys if k.name == key.successor), None)
    since = successor.not_before if successor is not None and successor.not_before is not None else now
    return {"Deprecation": f"@{int(since)}", "Sunset": formatdate(key.sunset_at, usegmt=True)}


# -- HTTP -----------------------------------------------------------------------------------------


def request_ip(request: web.Request, table: RoutingTable) -> Address | None:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    host = peer[0] if isinstance(peer, tuple) and peer else None
    return client_ip(parse_address(host), request.headers.get("X-Forwarded-For"), table.trusted_proxies)


def presents_key(headers: Mapping[str, str]) -> bool:
    return "Authorization" in headers or "X-API-Key" in headers


def request_credentials(request: web.Request, table: RoutingTable) -> Credentials:
    refuse_key_in_url(request.query)
    h = request.headers
    return credentials(h.get("Authorization"), h.get("X-API-Key"), request_ip(request, table))


def authenticate_request(request: web.Request, table: RoutingTable) -> KeyRoute | None:
    """Every HTTP handler's key check; a rotating key's answer gets Deprecation and Sunset (see setup)."""
    creds = request_credentials(request, table)
    if creds.client_ip is not None:
        request[CLIENT_IP] = str(creds.client_ip)
    key = verify(state_of(request), table, creds)
    if key is not None and key.successor:
        request[ROTATING] = rotation_headers(table, key, time.time())
    return key


def request_client_ip(request: web.Request) -> str | None:
    """The client IP authenticate_request() saw (X-Forwarded-For from a trusted proxy included)."""
    return request.get(CLIENT_IP)


def setup(app: web.Application) -> None:
    """Add a rotating key's headers to every answer, streamed ones (SSE, the WebSocket upgrade) included."""

    async def add_headers(request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers.update(request.get(ROTATING) or {})

    app.on_response_prepare.append(add_headers)

    @web.middleware
    async def count_failures(request: web.Request, handler: Any) -> web.StreamResponse:
        """An unknown key's 401 waits for the count across the replicas: the failure that finds the
        limit reached is answered 429, so the 401s of all replicas together never pass it."""
        pending: list[Any] = []
        reset = PENDING.set(pending)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except ApiError as exc:
            table = state_of(request).holder.table
            if pending and exc.code == "unauthorized" and table is not None:
                refusal = await settle(pending, table.max_auth_failures)
                if refusal is not None:
                    raise refusal from None
            raise
        finally:
            PENDING.reset(reset)

    app.middlewares.append(count_failures)  # inside the error middleware, which renders what this raises

    async def share_blocks(app: web.Application) -> AsyncIterator[None]:
        st = app[STATE]
        d = st.dispatcher

        async def connection() -> Any:
            await d.ready.wait()  # set the moment it connects: subscribed before the first requests, mostly
            return d.nc

        task = asyncio.create_task(st.auth_failures.share_blocks(connection))
        yield
        await cancel_all([task])

    app.cleanup_ctx.append(share_blocks)


# -- gRPC -----------------------------------------------------------------------------------------


def _metadata(context: Any) -> dict[str, str]:
    md: dict[str, str] = {}
    for k, v in context.invocation_metadata() or ():
        if isinstance(v, str):
            md.setdefault(k, v)
    return md


def _grpc_ip(context: Any, md: Mapping[str, str], table: RoutingTable) -> Address | None:
    return client_ip(grpc_peer(context.peer()), md.get("x-forwarded-for"), table.trusted_proxies)


def grpc_client_ip(context: Any, table: RoutingTable) -> str | None:
    """The client IP of a call, as authenticate_grpc() sees it."""
    ip = _grpc_ip(context, _metadata(context), table)
    return str(ip) if ip is not None else None


def authenticate_grpc(st: GatewayState, table: RoutingTable, context: Any) -> KeyRoute | None:
    """metadata `authorization` or `x-api-key`, the client IP from context.peer() (x-forwarded-for from a
    trusted proxy); a rotating key's deprecation and sunset go back as trailing metadata."""
    md = _metadata(context)
    key = verify(st, table, credentials(md.get("authorization"), md.get("x-api-key"), _grpc_ip(context, md, table)))
    if key is not None and key.successor:
        context.set_trailing_metadata(tuple((k.lower(), v) for k, v in
                                            rotation_headers(table, key, time.time()).items()))
    return key


def tenant_of(key: KeyRoute | None) -> str:
    """The tenant a request acts for: its key's, or the anonymous one."""
    return key.owner if key is not None else ANONYMOUS_TENANT


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
