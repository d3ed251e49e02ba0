"""GET /v1/ws: many inference requests and their results over one WebSocket, plus subscriptions.

The connection is authenticated once, by the `Authorization: Bearer` header of the upgrade
(a key in the URL is refused: URLs end up in logs). Every message is a JSON object in a text
frame with a `type` and the client's `id`, which the answers to it carry:

- `infer`: op, model, items, params (and machine_profile, pool, bundle, request_id, wait, async) go
  through the same core as POST /v1/{op}/{model} (submit.py); the answer is `result`,
  `accepted` (a queued job: no live worker, or `"async": true`, which is Prefer: respond-async)
  or `error`. Results come back as they finish, in any order. At most MAX_IN_FLIGHT per
  connection (job calls included); past it an `error` `too_many_in_flight`.
  With `"stream": true` the result streams (submit_stream, the same rules as SSE): `chunk`
  messages (id, seq, payload) in order, then one `done` (chunks, usage, timing) or `error`;
  `accepted` when no worker is live and no `wait` hold saw the stream begin. A stream counts
  against MAX_IN_FLIGHT until its last message.
- `cancel` names a stream in flight on this connection: its ChunkStream closes (the worker's
  generator stops) and the answer is `cancelled`; no message for that id follows it. Closing
  the socket cancels every stream in flight on it.
- `subscribe` with topic `jobs`: a `job` message each time one of the key's tenant's jobs
  changes state (an admin may name another `tenant`); topic `status` (admin keys only): a
  `status` message with live workers, lanes and their pending items every `interval_s`.
  Topic `events`: the events of GET /v1/events (events.py), each an `event` message with its
  `event_id`, `event` (job.status, capacity.update, gap) and `data`; `last_event_id` resumes
  after that event, as Last-Event-ID does.
- `unsubscribe` stops one.
- `job.get`, `jobs.list`, `job.cancel`, `job.delete`: GET /v1/jobs/{id}, GET /v1/jobs, POST
  /v1/jobs/{id}/cancel and DELETE /v1/jobs/{id}, by the same functions (jobs.py, joblist.py);
  the answer is `job`, `jobs`, `job` (with `cancelled`, `message`), `deleted`, or `error`. Each
  counts against MAX_IN_FLIGHT until answered (a listing reads the tenant's records).

Frames larger than the Gateway's maxRequestBodyBytes close the connection (1009), so does a key
removed by a config reload (1008). The server pings every PING_S and drops a peer that does not
answer; client pings are answered. Work accepted before a client goes away still runs (a plain
request's job; a stream is cancelled, as over SSE).

A slow reader cannot make the gateway buffer without bound: each stream's backlog is bounded by
streaming.py (past it the stream ends with `stream_gap`), and sends are serialized and wait for
the socket to drain past SEND_BUFFER_BYTES, so the socket's own buffer stays about that size.
A client that takes no frame for SEND_STALL_S is dropped (its streams are cancelled) rather than
left holding workers that generate into a full buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack, suppress
from typing import Annotated, Any, Literal

import orjson
from aiohttp import WSMsgType, web
from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..api.table import KeyRoute, RoutingTable
from ..errors import ApiError
from ..jetstream import NATS_FAILURES
from ..jsondepth import MAX_JSON_DEPTH, too_deep
from ..logs import swallowed
from ..messages import JobRecord
from ..subjects import JOBS_BUCKET
from .auth import Credentials, authenticate_request, request_credentials, tenant_of, verify
from .events import Feed, open_feed
from .health import fleet
from .http import MAX_REQUEST_ID, REQUEST_ID
from .inference import result_body
from .joblist import DEFAULT_LIMIT, JobQuery, find_jobs
from .jobs import cancel, delete, describe_job, record_view  # record_view: GET /v1/jobs/{id}'s view of a record
from .state import STATE, GatewayState
from .streaming import ChunkStream
from .submit import MAX_ITEMS, Accepted, Submission, check_operation, close_orphan, result_error, submit, submit_stream

log = logging.getLogger("switchyard.gateway.websocket")

MAX_IN_FLIGHT = 32  # infer messages awaiting their answer, per connection
MAX_SUBSCRIPTIONS = 4  # per connection
PING_S = 20.0  # server pings; no pong within half of it closes the connection
SEND_BUFFER_BYTES = 64 * 1024  # written past this, a send waits for the socket to drain
SEND_STALL_S = 30.0  # a send that cannot finish in this long: the client stopped reading
WEBSOCKETS = web.AppKey("switchyard_websockets", set[web.WebSocketResponse])

Id = Annotated[str, Field(min_length=1, max_length=MAX_REQUEST_ID, pattern=REQUEST_ID.pattern)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Id


class Infer(_Message):
    type: Literal["infer"]
    op: str = Field(max_length=32)
    model: str = Field(min_length=1, max_length=253)
    items: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)
    params: dict[str, Any] = Field(default_factory=dict)
    machine_profile: str | None = Field(default=None, max_length=253)
    pool: str | None = Field(default=None, max_length=253)
    bundle: str | None = Field(default=None, max_length=253)
    request_id: Id | None = None  # dedup key, as X-Request-ID; default: a fresh one per message
    wait: int | None = Field(default=None, ge=0, le=3600)  # as Prefer: wait=N
    stream: bool = Field(default=False, strict=True)  # chunks as the worker yields them, as Accept: text/event-stream
    respond_async: bool = Field(default=False, strict=True, alias="async")  # as Prefer: respond-async


class Cancel(_Message):
    type: Literal["cancel"]  # id: the stream's


class Subscribe(_Message):
    type: Literal["subscribe"]
    topic: Literal["jobs", "status", "events"]
    tenant: str | None = Field(default=None, max_length=63)  # jobs of another tenant: admin keys only
    interval_s: float = Field(default=2.0, ge=0.5, le=60)  # status only
    last_event_id: int | None = Field(default=None, ge=0)  # events only: resume right after this event


class Unsubscribe(_Message):
    type: Literal["unsubscribe"]


class JobCall(_Message):
    """job.get, job.cancel, job.delete: one job of the key's tenant (an admin names another's with `tenant`)."""

    type: Literal["job.get", "job.cancel", "job.delete"]
    job_id: str = Field(max_length=1024)  # a malformed id is unknown_job (jobs.py), as over HTTP and gRPC
    tenant: str | None = Field(default=None, max_length=63)  # admin keys only; ignored for others, as ?tenant=


class JobsList(_Message):
    """jobs.list: GET /v1/jobs's parameters as JSON (values checked by joblist.find_jobs)."""

    type: Literal["jobs.list"]
    state: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=16)
    model: str | None = Field(default=None, max_length=253)
    kind: str | None = Field(default=None, max_length=16)
    since: float | None = None
    until: float | None = None
    limit: int = Field(default=DEFAULT_LIMIT, strict=True)
    cursor: str | None = Field(default=None, max_length=512)
    tenant: str | None = Field(default=None, max_length=63)  # admin keys only: forbidden for others


Message = TypeAdapter(Annotated[Infer | Cancel | Subscribe | Unsubscribe | JobCall | JobsList,
                                Field(discriminator="type")])


def setup(app: web.Application) -> None:
    """Route /v1/ws and close every open socket (1001, going away) when the gateway shuts down."""
    app[WEBSOCKETS] = set()
    app.router.add_get("/v1/ws", handle)

    async def close_all(app: web.Application) -> None:
        sockets = app[WEBSOCKETS]
        for ws in list(sockets):
            await ws.close(code=1001, message=b"gateway shutting down")

    app.on_shutdown.append(close_all)


async def handle(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    table = st.table()
    creds = request_credentials(request, table)  # a key in the URL: 400, before anything
    key = authenticate_request(request, table)  # 401 (and every other key check) before any upgrade
    # No permessage-deflate: frames stay bounded as sent. writer_limit: aiohttp checks for a full socket
    # only every writer_limit bytes written (256 KiB by default).
    ws = web.WebSocketResponse(heartbeat=PING_S, autoping=True, max_msg_size=table.max_request_body_bytes,
                               compress=False, writer_limit=SEND_BUFFER_BYTES)
    if not ws.can_prepare(request).ok:
        raise ApiError("bad_request", "GET /v1/ws takes a WebSocket upgrade (Connection: Upgrade, "
                                      "Upgrade: websocket)")
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    try:
        await Connection(st, ws, creds, key, request.transport).run()
    finally:
        request.app[WEBSOCKETS].discard(ws)
    return ws


class Connection:
    """One client's socket: its key, its requests in flight and its subscriptions."""

    def __init__(self, st: GatewayState, ws: web.WebSocketResponse, creds: Credentials,
                 key: KeyRoute | None, transport: asyncio.Transport | None = None) -> None:
        self.st, self.ws, self.creds, self.key = st, ws, creds, key
        self._transport = transport  # to drop a client that stopped reading (no close frame can reach it)
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.streams: set[str] = set()  # the ids in in_flight that stream
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        # One frame at a time: with concurrent senders aiohttp's drain check lets each write past it.
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._received(msg.data.encode())
                elif msg.type == WSMsgType.BINARY:
                    await self._error(None, ApiError("bad_request", "send JSON objects in text frames"))
                elif msg.type == WSMsgType.ERROR:  # a frame past max_msg_size, a protocol error: aiohttp closed it
                    log.info("websocket closed on error", extra={"error": str(self.ws.exception())})
        finally:
            for task in self.subscriptions.values():
                task.cancel()
            for msg_id in self.streams:  # nobody reads them any more: the workers stop generating
                self.in_flight[msg_id].cancel()
            # Requests already submitted finish (their work is accepted); their answers have nowhere to go.
            await asyncio.gather(*self.in_flight.values(), *self.subscriptions.values(), return_exceptions=True)

    async def _received(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return await self._error(None, ApiError("invalid_json", f"message is not valid JSON: {exc}"))
        if too_deep(raw, data):
            return await self._error(None, ApiError(
                "too_deep", f"message nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"))
        msg_id = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
        try:
            msg = Message.validate_python(data)
        except ValidationError as exc:
            return await self._error(msg_id, ApiError("bad_request", _explain(exc)))
        table = self.st.table()
        try:
            # The key is checked against the current table: a key removed by a reload ends the connection,
            # and one whose models or pools changed is held to the new ones from this message on.
            # So is one past its notAfter or its rotation's sunset.
            self.key = verify(self.st, table, self.creds)
        except ApiError as exc:
            revoked = exc.code == "unauthorized"
            await self._error(msg.id, ApiError(exc.code, f"{exc.message}; the key was revoked" if revoked
                                               else exc.message, status=exc.status))
            await self.ws.close(code=1008, message=b"API key revoked")
            return
        if isinstance(msg, Infer):
            await self._infer(msg, table)
        elif isinstance(msg, Cancel):
            await self._cancel(msg.id)
        elif isinstance(msg, Subscribe):
            await self._subscribe(msg)
        elif isinstance(msg, (JobCall, JobsList)):
            if await self._admit(msg.id):
                self._track(msg.id, asyncio.create_task(self._job_call(msg, self.key)), stream=False)
        else:
            task = self.subscriptions.pop(msg.id, None)
            if task is None:
                return await self._error(msg.id, ApiError("not_found", f"no subscription {msg.id!r}"))
            task.cancel()
            await self._send({"type": "unsubscribed", "id": msg.id})

    # -- infer -----------------------------------------------------------------------------

    def _client_ip(self) -> str | None:
        """The client IP the upgrade was authenticated with: spec.policy's `per: ip` limits count by it."""
        return str(self.creds.client_ip) if self.creds.client_ip is not None else None

    async def _admit(self, msg_id: str) -> bool:
        """Room for one more request in flight (an infer, a stream, a job call) under an id not in use."""
        if msg_id in self.in_flight:
            await self._error(msg_id, ApiError("bad_request", f"id {msg_id!r} is already in flight on "
                                                              "this connection; use a new id"))
            return False
        if len(self.in_flight) >= MAX_IN_FLIGHT:
            await self._error(msg_id, ApiError(
                "too_many_in_flight", f"this connection has {MAX_IN_FLIGHT} requests in flight, its limit; "
                                      "wait for a result before sending more (or open another connection)"))
            return False
        return True

    def _track(self, msg_id: str, task: asyncio.Task[None], stream: bool) -> None:
        self.in_flight[msg_id] = task
        if stream:
            self.streams.add(msg_id)

        def ended(_: asyncio.Task[None]) -> None:
            self.in_flight.pop(msg_id, None)
            self.streams.discard(msg_id)

        task.add_done_callback(ended)

    async def _infer(self, msg: Infer, table: RoutingTable) -> None:
        if not await self._admit(msg.id):
            return
        try:
            check_operation(msg.op)
            if msg.stream and msg.respond_async:
                raise ApiError("bad_request", '"async" asks for a job, which does not stream: send one or the '
                                              "other (a job's result is read with job.get or the jobs topic)")
        except ApiError as exc:
            return await self._error(msg.id, exc)
        sub = Submission(op=msg.op, model_ref=msg.model, items=msg.items, params=msg.params,
                         request_id=msg.request_id or os.urandom(16).hex(), key=self.key,
                         machine_profile=msg.machine_profile, pool=msg.pool, bundle=msg.bundle,
                         prefer=(f"wait={msg.wait}",) if msg.wait is not None else (),
                         respond_async=msg.respond_async, client_ip=self._client_ip())
        task = asyncio.create_task(self._stream(msg.id, sub, table) if msg.stream else self._run(msg.id, sub, table))
        self._track(msg.id, task, msg.stream)

    async def _run(self, msg_id: str, sub: Submission, table: RoutingTable) -> None:
        try:
            outcome = await submit(self.st, table, sub)
        except ApiError as exc:
            return await self._error(msg_id, exc)
        except Exception:  # every failure still answers in our format
            log.exception("websocket request failed", extra={"request_id": sub.request_id})
            return await self._error(msg_id, ApiError("internal", "internal error; quote the request id"),
                                     sub.request_id)
        if isinstance(outcome, Accepted):
            await self._accepted(msg_id, sub, outcome)
        elif not outcome.result.ok:
            await self._error(msg_id, result_error(outcome.result), sub.request_id)
        else:
            await self._send({"type": "result", "id": msg_id, "request_id": sub.request_id,
                              "result": result_body(outcome.result, outcome.resolution.served_model)})

    async def _stream(self, msg_id: str, sub: Submission, table: RoutingTable) -> None:
        opening = asyncio.ensure_future(submit_stream(self.st, table, sub))
        try:
            # Shielded, as gRPC's InferStream: a cancel or a closed socket never stops a record or a
            # publish half way (accepted work is never lost); a stream it opens meanwhile is closed.
            outcome = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(close_orphan)
            raise
        except ApiError as exc:
            return await self._error(msg_id, exc, sub.request_id)
        except Exception:  # every failure still answers in our format
            log.exception("websocket stream failed", extra={"request_id": sub.request_id})
            return await self._error(msg_id, ApiError("internal", "internal error; quote the request id"),
                                     sub.request_id)
        if isinstance(outcome, Accepted):
            return await self._accepted(msg_id, sub, outcome)
        await self._forward(msg_id, sub, outcome)

    async def _forward(self, msg_id: str, sub: Submission, stream: ChunkStream) -> None:
        ended = False
        try:
            async for chunk in stream:
                if chunk.error is not None:
                    await self._error(msg_id, chunk.error, sub.request_id, chunks=chunk.seq)
                elif chunk.final:
                    await self._send({"type": "done", "id": msg_id, "request_id": sub.request_id,
                                      "chunks": chunk.seq, "usage": chunk.usage, "timing": chunk.timing})
                else:
                    await self._send({"type": "chunk", "id": msg_id, "seq": chunk.seq, "payload": chunk.payload})
                ended = chunk.final
        finally:
            await stream.aclose()  # a cancel, a closed socket: the worker stops generating
            if not ended and self.ws.closed:
                self.st.metrics.client_disconnects.inc()

    async def _cancel(self, msg_id: str) -> None:
        """Close a stream of this connection; ids are per connection, so another's is simply unknown."""
        task = self.in_flight.get(msg_id)
        if task is None:
            return await self._error(msg_id, ApiError("not_found", f"no request {msg_id!r} in flight on this "
                                                                   "connection"))
        if msg_id not in self.streams:
            return await self._error(msg_id, ApiError(
                "bad_request", f"request {msg_id!r} does not stream: it runs to its end and its result comes "
                               "(accepted work is never dropped); only streams are cancelled"))
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task  # its stream is closed and it sends nothing more: `cancelled` is the id's last message
        await self._send({"type": "cancelled", "id": msg_id})

    async def _accepted(self, msg_id: str, sub: Submission, outcome: Accepted) -> None:
        lane = outcome.resolution.lane
        await self._send({"type": "accepted", "id": msg_id, "job_id": outcome.job_id,
                          "status": "queued" if outcome.asked else "provisioning",
                          "request_id": sub.request_id, "estimated_wait_s": outcome.eta_s,
                          "machine_profile": lane.machine_profile, "bundle": lane.bundle, "pool": lane.pool})

    # -- jobs ------------------------------------------------------------------------------

    async def _job_call(self, msg: JobCall | JobsList, key: KeyRoute | None) -> None:
        """One job operation, with the key as it was when the message came; it counts as a request in flight."""
        try:
            if isinstance(msg, JobsList):
                query = JobQuery(states=frozenset(msg.state), model=msg.model, kind=msg.kind, since=msg.since,
                                 until=msg.until, limit=msg.limit, cursor=msg.cursor, tenant=msg.tenant)
                answer: dict[str, Any] = {"type": "jobs", **await find_jobs(self.st, key, query)}
            elif msg.type == "job.get":
                answer = {"type": "job", "job": await describe_job(self.st, key, msg.job_id, msg.tenant)}
            elif msg.type == "job.cancel":
                body = await cancel(self.st, key, msg.job_id, msg.tenant)
                cancelled, message = body.pop("cancelled"), body.pop("message")
                answer = {"type": "job", "job": body, "cancelled": cancelled, "message": message}
            else:
                body = await delete(self.st, key, msg.job_id, msg.tenant)
                answer = {"type": "deleted", "job_id": body["id"]}
        except ApiError as exc:
            return await self._error(msg.id, exc)
        except Exception:  # every failure still answers in our format
            log.exception("websocket job call failed", extra={"type": msg.type})
            return await self._error(msg.id, ApiError("internal", "internal error"))
        await self._send({**answer, "id": msg.id})

    # -- subscriptions ---------------------------------------------------------------------

    async def _subscribe(self, msg: Subscribe) -> None:
        if msg.id in self.subscriptions:
            return await self._error(msg.id, ApiError("bad_request", f"subscription {msg.id!r} exists"))
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            return await self._error(msg.id, ApiError(
                "bad_request", f"this connection holds {MAX_SUBSCRIPTIONS} subscriptions, its limit"))
        if msg.topic == "status" and not (self.key is not None and self.key.can("readFleet")):
            return await self._error(msg.id, ApiError("forbidden", "the status topic needs the readFleet scope "
                                                                   "or an admin key (it maps the fleet)"))
        tenant = tenant_of(self.key)
        if msg.tenant is not None and msg.tenant != tenant:
            if not (self.key is not None and self.key.can("readAllJobs")):  # the same answer as a job of another tenant
                return await self._error(msg.id, ApiError("forbidden", "only keys with the readAllJobs scope "
                                                                       "(or admin) watch another tenant's jobs"))
            if not REQUEST_ID.match(msg.tenant) or "." in msg.tenant:
                return await self._error(msg.id, ApiError("bad_request", "tenant must be a tenant name"))
            tenant = msg.tenant
        if msg.topic == "events":
            if tenant != tenant_of(self.key):
                return await self._error(msg.id, ApiError("bad_request", "the events topic has the key's own "
                                                                         "tenant's events only"))
            exits = AsyncExitStack()
            try:
                feed = await exits.enter_async_context(open_feed(self.st, self.key, msg.last_event_id))
            except ApiError as err:
                return await self._error(msg.id, err)
            task = asyncio.create_task(self._events(msg.id, feed, exits))
        elif msg.topic == "jobs":
            nc = self.st.dispatcher.nc
            if nc is None or not self.st.dispatcher.connected:
                return await self._error(msg.id, ApiError("queue_unavailable", "not connected to NATS"))
            # The jobs bucket's own subject: every put of this tenant's records, nothing of another's.
            sub = await nc.subscribe(f"$KV.{JOBS_BUCKET}.{tenant}.>", pending_msgs_limit=1024)
            task = asyncio.create_task(self._jobs(msg.id, sub))
        else:
            task = asyncio.create_task(self._status(msg.id, msg.interval_s))
        self.subscriptions[msg.id] = task
        task.add_done_callback(lambda _: self.subscriptions.pop(msg.id, None))
        await self._send({"type": "subscribed", "id": msg.id, "topic": msg.topic})

    async def _jobs(self, sub_id: str, sub: Any) -> None:
        try:
            async for m in sub.messages:
                record = _record(m)
                if record is not None:
                    await self._send({"type": "job", "id": sub_id, "job": record_view(record)})
        finally:
            with swallowed(log, "unsubscribe a job watch", NATS_FAILURES, subscription=sub_id):
                await sub.unsubscribe()

    async def _events(self, sub_id: str, feed: Feed, exits: AsyncExitStack) -> None:
        async with exits:  # the feed's consumer goes with the subscription
            if feed.gap is not None:
                await self._send({"type": "event", "id": sub_id, "event_id": None, "event": "gap", "data": feed.gap})
            async for seq, kind, data in feed.events(lambda: self.ws.closed):
                if kind:  # keepalives: the socket has its own pings
                    await self._send({"type": "event", "id": sub_id, "event_id": seq, "event": kind, "data": data})

    async def _status(self, sub_id: str, interval_s: float) -> None:
        while True:
            await self._send({"type": "status", "id": sub_id, **fleet(self.st)})
            await asyncio.sleep(interval_s)

    # -- sending ---------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        frame = orjson.dumps(message).decode()
        try:
            async with self._send_lock:
                await asyncio.wait_for(self.ws.send_str(frame), SEND_STALL_S)
        except (ConnectionError, RuntimeError):  # the client went away meanwhile
            pass
        except TimeoutError:
            # It takes nothing: drop it (ending the read loop, which cancels its streams). The frame that
            # timed out was written whole before the wait (uncompressed), so nothing half-sent follows.
            log.info("websocket client stopped reading; connection dropped")
            if self._transport is not None:
                self._transport.abort()

    async def _error(self, msg_id: str | None, err: ApiError, request_id: str | None = None,
                     chunks: int | None = None) -> None:
        out: dict[str, Any] = {"type": "error", "id": msg_id, "status": err.status, **err.body()}
        if request_id is not None:
            out["request_id"] = request_id
        if chunks is not None:  # a stream's end: how many chunks came before it
            out["chunks"] = chunks
        await self._send(out)


def _record(m: Msg) -> JobRecord | None:
    if not m.data or (m.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
        return None
    try:
        return JobRecord.decode(m.data)
    except (ValueError, TypeError) as exc:  # a record this version cannot read is skipped, not fatal
        log.debug("unreadable job record", extra={"subject": m.subject, "error": str(exc)})
        return None


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid message: {where}: {first['msg']}{more}"
