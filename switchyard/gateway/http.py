"""HTTP plumbing shared by all handlers: JSON in and out, errors, request ids, CORS, gzip, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ..api.table import RoutingTable
from ..errors import ApiError, ErrorCode
from ..jsondepth import MAX_JSON_DEPTH, too_deep
from .listener import BodyTimeout

log = logging.getLogger("switchyard.gateway.http")

REQUEST_ID = re.compile(r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$")  # also a valid NATS KV key
MAX_REQUEST_ID = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RID = web.RequestKey("switchyard_request_id", str)
MACHINE_PROFILE = web.RequestKey("switchyard_machine_profile", str)  # for the metrics label


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        # Bodies deeper than MAX_JSON_DEPTH are refused at input, so only a worker's result gets here.
        raise ApiError("worker_error", f"the worker's result nests deeper than JSON answers allow "
                                       f"(inputs are limited to {MAX_JSON_DEPTH} levels)") from None
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


class ClientDisconnected(Exception):
    """The client closed its connection before its answer: logged as one line, counted, never an error."""


def error_response(exc: ApiError) -> web.Response:
    return json_response(exc.body(), status=exc.status, headers=exc.headers or None)


_HTTP_CODES: dict[int, ErrorCode] = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    code = _HTTP_CODES.get(exc.status, "bad_request" if exc.status < 500 else "internal")
    message = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(exc.status, exc.reason)
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return ApiError(code, message, status=exc.status, headers=headers)


def request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-ID")
    if rid is None:
        return os.urandom(16).hex()  # 32 random hex digits like uuid4().hex, without a UUID object (hot path)
    return check_request_id(rid)


def check_request_id(rid: str, what: str = "X-Request-ID") -> str:
    """`rid` if it is a valid request id (also a NATS KV key), else 400 invalid_request_id naming `what`."""
    if len(rid) > MAX_REQUEST_ID or not REQUEST_ID.match(rid):
        raise ApiError("invalid_request_id",
                       f"{what} must be 1-{MAX_REQUEST_ID} characters of A-Z a-z 0-9 _ = - "
                       "and inner dots")
    return rid


ErrorRenderer = Callable[[ApiError], web.Response]


def make_middleware(current_table: Callable[[], RoutingTable | None], metrics: Any,
                    access_log: bool = True, error_shapes: Mapping[str, ErrorRenderer] | None = None,
                    ) -> Callable[..., Awaitable[web.StreamResponse]]:
    """`error_shapes`: routes whose errors take another shape (path or route template -> renderer), e.g. OpenAI's."""
    # labels() costs more than the update itself: keep each label set's children (few: endpoint x status x profile).
    children: dict[tuple[str, int, str], tuple[Any, Any]] = {}
    shapes = dict(error_shapes or {})

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        table = current_table()
        render: ErrorRenderer = error_response
        if shapes:  # by the route's template ("/v1/models/{id}"), else the path (405: no route matched)
            matched = request.match_info.route.resource
            render = shapes.get(matched.canonical if matched is not None else request.path, error_response)
        code = ""  # the error code answered, counted by code: a 503 alone does not say queue_full
        try:
            rid = request_id(request)
        except ApiError as exc:
            rid = uuid.uuid4().hex  # echo something the client can quote
            resp: web.StreamResponse = render(exc)
            code = exc.code
        else:
            request[RID] = rid
            try:
                if request.method == "OPTIONS":
                    resp = _preflight(request, table)
                else:
                    resp = await handler(request)
            except ApiError as exc:
                resp = render(exc)
                code = exc.code
            except web.HTTPException as exc:
                err = _from_http_exception(exc)
                resp, code = render(err), err.code
            except ClientDisconnected:
                resp = _gone(request, rid, metrics, "while sending the body")
            except Exception:  # every failure still answers in our format
                log.exception("unhandled error", extra={"request_id": rid})
                resp, code = render(ApiError("internal", "internal error; quote the request id")), "internal"
            # A prepared stream (a WebSocket, SSE) has answered already: its end is not a disconnect.
            if resp.status != 499 and not resp.prepared and (
                    request.transport is None or request.transport.is_closing()):
                resp = _gone(request, rid, metrics, "while waiting for the answer")
        resp.headers["X-Request-ID"] = rid
        if table is not None and table.cors.allow_origins:
            _cors(request, resp, table)
        if isinstance(resp, web.Response) and not resp.prepared and resp.status != 499:
            await _maybe_gzip(request, resp)
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unmatched"
        elapsed = time.perf_counter() - start
        mp = request.get(MACHINE_PROFILE, "")
        labelled = children.get((endpoint, resp.status, mp))
        if labelled is None:
            labelled = children[(endpoint, resp.status, mp)] = (
                metrics.requests.labels(endpoint, str(resp.status), mp), metrics.latency.labels(endpoint, mp))
        labelled[0].inc()
        labelled[1].observe(elapsed)
        if code:
            metrics.errors.labels(endpoint, code).inc()
        if access_log:
            log.info("request", extra={"request_id": rid, "method": request.method, "path": request.path,
                                       "status": resp.status, "ms": round(elapsed * 1000, 3),
                                       "machine_profile": mp})
        return resp

    return middleware


def _gone(request: web.Request, rid: str, metrics: Any, when: str) -> web.Response:
    """One info line and a count; the work already accepted runs on (its worker still answers)."""
    metrics.client_disconnects.inc()
    log.info("client disconnected", extra={"request_id": rid, "when": when, "path": request.path})
    # Never sent (nobody listens); 499 as nginx logs it, for the request counter and access log.
    return error_response(ApiError("client_closed_request", f"client disconnected {when}", status=499))


def _origin_allowed(origin: str | None, table: RoutingTable) -> bool:
    allowed = table.cors.allow_origins
    return origin is not None and ("*" in allowed or origin in allowed)


# Response headers a browser script may read: ids, waits, limits, a key's rotation, the model that served.
EXPOSED_HEADERS = ("X-Request-ID, Retry-After, Location, Preference-Applied, RateLimit-Policy, RateLimit, "
                   "Deprecation, Sunset, X-Switchyard-Model")


def _cors(request: web.Request, resp: web.StreamResponse, table: RoutingTable) -> None:
    origin = request.headers.get("Origin")
    if _origin_allowed(origin, table):
        resp.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
        _vary(resp, "Origin")
        resp.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


# Response compression: JSON answers of at least GZIP_MIN_BYTES, when the client accepts gzip. Level 1:
# on a 1.3 MB embeddings answer it takes 9 ms for 49 % of the size, where level 6 takes 64 ms for 46 %.
# Streams (SSE, WebSocket) are prepared by their handlers and never pass through here.
GZIP_MIN_BYTES = 1024
GZIP_LEVEL = 1
GZIP_THREAD_BYTES = 256 * 1024  # larger bodies are compressed off the event loop (zlib releases the GIL)
_COMPRESSIBLE = ("application/json", "application/problem+json")


def accepts_gzip(header: str | None) -> bool:
    """Accept-Encoding names gzip (or *) with a q above zero (RFC 9110 12.5.3)."""
    if not header:
        return False
    verdict = None
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding == "*":
            verdict = q > 0 if verdict is None else verdict  # an explicit gzip entry wins over *
        else:
            verdict = q > 0
    return bool(verdict)


def gzip_bytes(body: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    return c.compress(body) + c.flush()


async def _maybe_gzip(request: web.Request, resp: web.Response) -> None:
    body = resp.body
    if not isinstance(body, bytes) or resp.content_type not in _COMPRESSIBLE:
        return
    if len(body) < GZIP_MIN_BYTES or "Content-Encoding" in resp.headers:
        return
    _vary(resp, "Accept-Encoding")  # caches must not hand a gzip answer to a client that did not ask
    if not accepts_gzip(request.headers.get("Accept-Encoding")):
        return
    resp.body = gzip_bytes(body) if len(body) < GZIP_THREAD_BYTES else await asyncio.to_thread(gzip_bytes, body)
    resp.headers["Content-Encoding"] = "gzip"


def _vary(resp: web.StreamResponse, field: str) -> None:
    present = [v.strip() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
    if field.lower() not in (v.lower() for v in present):
        resp.headers["Vary"] = ", ".join([*present, field])


def _preflight(request: web.Request, table: RoutingTable | None) -> web.Response:
    if table is None or not _origin_allowed(request.headers.get("Origin"), table):
        raise ApiError("forbidden", "CORS preflight from an origin this gateway does not allow")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",  # DELETE: /v1/pools/{name}
        "Access-Control-Allow-Headers": ", ".join(table.cors.allow_headers),
        "Access-Control-Max-Age": str(table.cors.max_age_seconds),
    })


async def read_json(request: web.Request, limit: int) -> Any:
    """The JSON body, at most `limit` bytes once decoded (Content-Encoding included), nested at most
    MAX_JSON_DEPTH levels; reading stops as soon as the limit is passed."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)  # the body on the wire alone is past the limit
    raw = await _read_capped(request, limit)
    if not raw:
        raise ApiError("invalid_json", "request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError("invalid_json", f"request body is not valid JSON: {exc}") from None
    if too_deep(raw, body):
        raise ApiError("too_deep", f"request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")
    return body


async def _read_capped(request: web.Request, limit: int) -> bytes:
    # request.content yields decoded bytes (aiohttp inflates gzip/deflate in bounded steps as we read):
    # counting them here is what bounds a compressed body.
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except BodyTimeout as exc:
        raise ApiError("request_timeout", str(exc), headers={"Connection": "close"}) from None
    except RequestPayloadError as exc:  # a broken chunked encoding or compressed stream
        raise ApiError("bad_request", f"request body cannot be read: {exc}") from None
    except ConnectionError:
        raise ClientDisconnected() from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"request body exceeds this gateway's limit of {limit} bytes")
