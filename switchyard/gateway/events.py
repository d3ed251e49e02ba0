"""Live events: GET /v1/events (Server-Sent Events), backed by the SWITCHYARD_EVENTS stream.

Two stored kinds, each a message on `sy.events.<kind>...`, and one live kind:

- `job.status` (`sy.events.job.<tenant token>`): every change of every job record, bridged from
  the jobs bucket's KV updates (`bridge_forever`), so no code that writes a record needs to know
  about events. Gateway replicas share one durable consumer of the bucket's stream, and publish
  with `Nats-Msg-Id` = `<job key>@<KV revision>`: an update is one event however many replicas
  (or redeliveries) saw it.
- `capacity.update` (`sy.events.capacity`): the fleets' capacity (capacity.py) with the ETA of each
  fleet scaling up from zero, whenever it changes (`capacity_forever`); one event per change per
  CAPACITY_EVERY_S slot across replicas (the slot is the Nats-Msg-Id).

- `job.progress` (core NATS `_sy.progress.<tenant token>`, never stored): a queued job's queue position
  and ETA while it waits, from one replica's pass over the lanes (progress.py). Merged into each
  feed as it comes; it has no `id`, so it never moves a client's Last-Event-ID.

An event's SSE `id` is its stream sequence. A reconnect with `Last-Event-ID` resumes right after
it, without gaps, for as long as the stream keeps events (EVENTS_MAX_AGE_S, EVENTS_MAX_BYTES);
past that, the first event is `event: gap` naming the first sequence still kept. A key reads its
own tenant's job events; capacity events show the fleets it may use, holders only to admin keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from aiohttp import web
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ..api.table import DEFAULT_COLD_START_S, KeyRoute
from ..errors import ApiError
from ..jetstream import EVENTS_MAX_AGE_S, NATS_FAILURES, ensure_events_stream
from ..logs import swallowed
from ..messages import JobRecord
from ..subjects import EVENTS_PREFIX, EVENTS_STREAM, JOBS_BUCKET, Lane, token
from ..tasks import cancel_all, forever
from .auth import (
    CHALLENGE,
    Credentials,
    authenticate_request,
    check_key,
    find_key,
    request_credentials,
    tenant_of,
    valid_until,
)
from .capacity import capacity_view
from .progress import Progress, progress_subject
from .state import GatewayState, state_of
from .usage_anomaly import USAGE_EVENTS
from .usage_api import reads_usage

log = logging.getLogger("switchyard.gateway.events")

JOB_EVENTS = f"{EVENTS_PREFIX}.job"  # + .<tenant token>
CAPACITY_EVENTS = f"{EVENTS_PREFIX}.capacity"
BRIDGE_CONSUMER = "sy_events_bridge"  # durable, on KV_sy_jobs, shared by every gateway replica
CAPACITY_EVERY_S = 2.0
KEEPALIVE_S = 10.0  # an SSE comment after this long without events: proxies keep the stream open
POLL_S = 1.0  # a client that left (or a gateway that stops) is noticed within this
MAX_STREAMS_PER_TENANT = 16  # open /v1/events per tenant per gateway process: each holds a consumer
MAX_MOVED_ON = 4096  # per feed: jobs remembered as running or ended, whose late progress is dropped
_ADMIN_VIEW = KeyRoute(name="", sha256="", pools=None, models=None, admin=True)  # the full capacity view


def job_subject(tenant: str) -> str:
    return f"{JOB_EVENTS}.{token(tenant)}"


def job_event(record: JobRecord) -> dict[str, Any]:
    """What a job.status event says: the state, not the result (GET /v1/jobs/{id} has it)."""
    event: dict[str, Any] = {"id": record.id, "kind": record.kind, "state": record.state, "model": record.model,
                             "op": record.op, "updated_at": record.updated_at}
    error = (record.result or {}).get("error") if record.state != "succeeded" else None
    if error:
        event["error"] = {"code": error.get("code"), "message": error.get("message")}
    return event


# -- the bridges: KV updates and capacity into the events stream ------------------------------

async def _connected(st: GatewayState) -> None:
    while not st.dispatcher.connected or st.dispatcher.js is None:
        await asyncio.sleep(0.2)


async def bridge_forever(st: GatewayState) -> None:
    """Every job record change becomes a job.status event (see the module docstring)."""
    await forever(lambda: _bridge(st), pause_s=1.0, what="events bridge", logger=log)


async def _bridge(st: GatewayState) -> None:
    await _connected(st)
    js = st.dispatcher.js
    assert js is not None
    await ensure_events_stream(js, st.holder.table.queue.replicas if st.holder.table else 1)
    stream = f"KV_{JOBS_BUCKET}"
    # Made once, by the first gateway: from each record's current state, so nothing written before it is lost.
    config = ConsumerConfig(durable_name=BRIDGE_CONSUMER, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                            ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=4096,
                            filter_subject=f"$KV.{JOBS_BUCKET}.>")
    with suppress(nats.js.errors.BadRequestError):  # exists: every replica binds the same one
        await js.add_consumer(stream, config=config)
    sub = await js.pull_subscribe_bind(durable=BRIDGE_CONSUMER, stream=stream)
    prefix = len(f"$KV.{JOBS_BUCKET}.")
    try:
        while True:
            try:
                msgs = await sub.fetch(batch=256, timeout=5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                if msg.data:  # a delete or purge has no record: DELETE /v1/jobs/{id} removed it
                    key = msg.subject[prefix:]
                    try:
                        record = JobRecord.decode(msg.data)
                    except (ValueError, TypeError):
                        await msg.ack()
                        continue
                    tenant = record.tenant or key.partition(".")[0]
                    event = job_event(record)
                    if record.state == "queued" and record.model:
                        event["estimated_wait_s"] = await _job_eta(st, record)
                    await js.publish(job_subject(tenant), orjson.dumps(event),
                                     headers={"Nats-Msg-Id": f"{key}@{msg.metadata.sequence.stream}"})
                await msg.ack()
    finally:
        # nats-py's fetch() never marks what it took as done, so a drain at close would wait its whole
        # timeout (30 s) for this subscription: leave it first (the durable consumer stays).
        with swallowed(log, "unsubscribe the events bridge", NATS_FAILURES):
            await sub.unsubscribe()


async def _job_eta(st: GatewayState, record: JobRecord) -> float:
    """A queued job's ETA, as GET /v1/jobs/{id} reports it (1 when a worker is live on its lane)."""
    table = st.holder.table
    route = table.models.get(record.model) if table else None
    lane = Lane(record.model, record.bundle, record.machine_profile, record.pool)
    try:
        return await st.eta.for_job(lane, route.cold_start_s if route else DEFAULT_COLD_START_S, record.updated_at)
    except ValueError:  # a record without a lane (empty parts)
        return DEFAULT_COLD_START_S


async def capacity_forever(st: GatewayState) -> None:
    """A capacity.update event whenever this replica's view of the fleets changes."""
    last = b""
    while True:
        await asyncio.sleep(CAPACITY_EVERY_S)
        if not st.dispatcher.connected or st.dispatcher.js is None or st.holder.table is None:
            continue
        try:
            fleets = capacity_view(st, _ADMIN_VIEW)
            for row in fleets:
                if row["scaling"] == "scaling_up":
                    row["estimated_wait_s"] = await _fleet_eta(st, row)
            data = orjson.dumps({"fleets": fleets}, option=orjson.OPT_SORT_KEYS)
            if data == last:
                continue
            slot = int(time.time() // CAPACITY_EVERY_S)
            digest = hashlib.sha256(data).hexdigest()[:16]
            # A duplicate is this same view, published by another replica in this slot.
            await st.dispatcher.js.publish(CAPACITY_EVENTS, data, headers={"Nats-Msg-Id": f"capacity.{slot}.{digest}"})
            last = data
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - next round
            log.debug("capacity event not published", extra={"error": str(exc) or type(exc).__name__})


async def _fleet_eta(st: GatewayState, row: dict[str, Any]) -> float:
    """The learned cold-start ETA of a fleet scaling up from zero (its first queued lane's)."""
    table = st.holder.table
    for lane, n in st.demand.by_lane.items():
        if n > 0 and (lane.pool, lane.machine_profile, lane.bundle) == (row["pool"], row["machine_profile"],
                                                                          row["bundle"]):
            route = table.models.get(lane.model) if table else None
            return await st.eta.for_job(lane, route.cold_start_s if route else DEFAULT_COLD_START_S, time.time())
    return DEFAULT_COLD_START_S


def visible_capacity(data: dict[str, Any], key: KeyRoute | None) -> dict[str, Any] | None:
    """A capacity event as `key` may see it (capacity.py's rules): the pools and models it may use,
    holders for admin keys only; None when nothing is left."""
    if key is None or key.admin:
        return data
    fleets = []
    for row in data.get("fleets", []):
        models = [m for m in row.get("models", []) if key.allows_model(m)]
        if not key.allows_pool(row["pool"]) or not models:
            continue
        fleets.append({**{k: v for k, v in row.items() if k != "holders"}, "models": models})
    return {"fleets": fleets} if fleets else None


# -- GET /v1/events (and the WebSocket's `events` topic) ------------------------------------

_open: dict[tuple[str, str], int] = {}  # (gateway instance, tenant) -> event feeds open


def last_event_id(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or not value.isdigit() or len(value) > 19:
        raise ApiError("bad_request", "Last-Event-ID must be the id of an event this endpoint sent (digits)")
    return int(value)


class Feed:
    """One reader of the events stream (its tenant's job subject and the capacity subject, in order),
    merged with its tenant's live job.progress events (core NATS, progress.py; no sequence)."""

    def __init__(self, sub: Any, key: KeyRoute | None, gap: dict[str, Any] | None, live: Any = None) -> None:
        self.sub, self.key, self.gap, self.live = sub, key, gap, live
        # Jobs whose last job.status said they no longer wait: a progress snapshot read just before the
        # job moved on, arriving after its job.status, is dropped (bounded: the most recent MAX_MOVED_ON).
        self._moved_on: OrderedDict[str, None] = OrderedDict()

    async def events(self, gone: Callable[[], bool], stop: asyncio.Event | None = None,
                     ) -> AsyncIterator[tuple[int | None, str, Any]]:
        """(sequence, kind, data) in stream order, job.progress (sequence None) as they come; (None, "", None)
        after KEEPALIVE_S without any. Ends when `gone()`: the client left (noticed within POLL_S) or the
        gateway stops; or at once when `stop` is set."""
        quiet_since = time.monotonic()
        stored: asyncio.Future[Any] | None = None
        live: asyncio.Future[Any] | None = None
        stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            while not gone() and not (stop is not None and stop.is_set()):
                # A pending read is kept across rounds, never cancelled mid-way: a message it took is not lost.
                stored = stored or asyncio.ensure_future(self.sub.next_msg(timeout=POLL_S))
                if self.live is not None:
                    live = live or asyncio.ensure_future(self.live.next_msg(timeout=POLL_S))
                done, _ = await asyncio.wait([f for f in (stored, live, stopped) if f is not None],
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopped is not None and stopped in done:
                    return
                got = False
                if stored in done:
                    msg, stored = _taken(stored), None
                    if msg is not None:
                        got = True
                        for event in self._stored(msg):
                            yield event
                if live is not None and live in done:
                    msg, live = _taken(live), None
                    if msg is not None:
                        got = True
                        data = orjson.loads(msg.data)
                        if data.get("id") not in self._moved_on:
                            yield None, "job.progress", data
                if got:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield None, "", None
        finally:
            for pending in (stored, live, stopped):
                if pending is not None:
                    pending.cancel()

    def _stored(self, msg: Any) -> list[tuple[int | None, str, Any]]:
        seq = msg.metadata.sequence.stream
        data = orjson.loads(msg.data)
        if msg.subject == CAPACITY_EVENTS:
            data = visible_capacity(data, self.key)
            return [] if data is None else [(seq, "capacity.update", data)]
        if msg.subject.startswith(USAGE_EVENTS + "."):  # only in the feeds of keys that read usage
            return [(seq, "usage.anomaly", data)]
        job = data.get("id")
        if data.get("state") == "queued":
            self._moved_on.pop(job, None)  # queued (again: a re-queued dead letter): its progress counts
        else:
            self._moved_on[job] = None
            self._moved_on.move_to_end(job)
            if len(self._moved_on) > MAX_MOVED_ON:
                self._moved_on.popitem(last=False)
        return [(seq, "job.status", data)]


def _taken(read: asyncio.Future[Any]) -> Any:
    """The message a finished next_msg() read, or None when it timed out."""
    try:
        return read.result()
    except nats.errors.TimeoutError:
        return None


@asynccontextmanager
async def open_feed(st: GatewayState, key: KeyRoute | None, after: int | None) -> AsyncIterator[Feed]:
    """A consumer of the events stream for `key`'s tenant, from right after `after` (else from now);
    at most MAX_STREAMS_PER_TENANT open per tenant on this gateway. Deleted on exit."""
    tenant = tenant_of(key)
    js, nc = st.dispatcher.js, st.dispatcher.nc
    if not st.dispatcher.connected or js is None or nc is None:
        raise ApiError("queue_unavailable", "events unavailable: not connected to NATS", headers={"Retry-After": "2"})
    slot = (st.instance, tenant)
    if _open.get(slot, 0) >= MAX_STREAMS_PER_TENANT:
        raise ApiError("too_many_event_streams", f"this tenant has {MAX_STREAMS_PER_TENANT} event streams open "
                                                 "on this gateway; close one first")
    _open[slot] = _open.get(slot, 0) + 1
    sub = live = None
    try:
        await ensure_events_stream(js, st.holder.table.queue.replicas if st.holder.table else 1)
        gap = None
        subjects = [job_subject(tenant), CAPACITY_EVENTS]
        if reads_usage(st.holder.table, key):  # usage.anomaly events name every tenant's keys
            subjects.append(f"{USAGE_EVENTS}.>")
        config = ConsumerConfig(filter_subjects=subjects, inactive_threshold=60.0)
        if after is None:
            config.deliver_policy = DeliverPolicy.NEW
        else:
            first = (await js.stream_info(EVENTS_STREAM)).state.first_seq
            if after + 1 < first:
                gap = {"after": after, "first_kept": first,
                       "message": f"events older than {EVENTS_MAX_AGE_S:g} s (or past the stream's size) are no "
                                  "longer kept; some may be missing"}
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(after + 1, first, 1)
        # An ordered push consumer: nats-py checks each delivery's sequence and re-creates the consumer
        # from the last one seen on a gap, so no event is skipped and none comes out of order.
        sub = await js.subscribe(job_subject(tenant), stream=EVENTS_STREAM, ordered_consumer=True, config=config)
        # The tenant's job.progress (core NATS: live snapshots, not kept); a slow reader loses old ones only.
        live = await nc.subscribe(progress_subject(tenant), pending_msgs_limit=1024)
        yield Feed(sub, key, gap, live)
    finally:
        if live is not None:
            with swallowed(log, "unsubscribe an events feed's progress", NATS_FAILURES, tenant=tenant):
                await live.unsubscribe()
        _open[slot] -= 1
        if not _open[slot]:
            del _open[slot]
        if sub is not None:
            with swallowed(log, "unsubscribe an events feed", NATS_FAILURES, tenant=tenant):
                await sub.unsubscribe()  # the ephemeral consumer goes with its interest


CLOSING = web.AppKey("switchyard_events_closing", asyncio.Event)  # set on shutdown: open streams end


class KeyWatch:
    """Ends a stream when its key stops being valid: a timer at its notAfter or rotation sunset (no
    polling), and a check of the key against each new routing table (a reload that removed it or
    changed its window or allowedCidrs, its tenant or its readUsage right), noticed within POLL_S. `ended`
    says why; `stop` is set then. A key narrowed otherwise (models, pools) keeps its stream, and `feed`'s
    capacity events follow the new lists."""

    def __init__(self, st: GatewayState, creds: Credentials, key: KeyRoute | None) -> None:
        self.st, self.creds = st, creds
        self.stop = asyncio.Event()
        self.ended: ApiError | None = None
        self.feed: Feed | None = None
        self._table = st.holder.table
        # What the feed's subjects were chosen by (open_feed): a change needs a new feed, i.e. a reconnect.
        self._subjects = (tenant_of(key), reads_usage(self._table, key))
        self._timer: asyncio.TimerHandle | None = None
        self._arm(key)

    def _arm(self, key: KeyRoute | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        until = valid_until(key) if key is not None else None
        self._timer = None if until is None else asyncio.get_running_loop().call_later(
            max(0.0, until - time.time()), self.check)

    def changed(self) -> bool:
        """Cheap unless the table changed: then the key is checked again. True once the stream must end."""
        if self.st.holder.table is not self._table and self.ended is None:
            self._table = self.st.holder.table
            self.check()
        return self.ended is not None

    def check(self) -> None:
        table = self._table
        if table is None or self.ended is not None:
            return
        try:
            found = find_key(table, self.creds.key) if self.creds.key is not None else None
            if found is None and self.creds.key is not None:
                raise ApiError("unauthorized", "the API key of this stream was removed from the gateway's "
                                               "configuration", headers=CHALLENGE)
            if found is None and not table.anonymous:
                raise ApiError("unauthorized", "this gateway now requires an API key", headers=CHALLENGE)
            if found is not None:
                check_key(found, self.creds, time.time())
            if (tenant_of(found), reads_usage(table, found)) != self._subjects:
                raise ApiError("forbidden", "the key's tenant or its readUsage right changed: reconnect for "
                                            "the events it may read now")
        except ApiError as exc:
            self.ended = exc
            self.stop.set()
            return
        if self.feed is not None:
            self.feed.key = found
        self._arm(found)  # the reload may have moved its notAfter (or a timer fired a moment early)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def get_events(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    after = last_event_id(request.headers.get("Last-Event-ID"))
    watch = KeyWatch(st, request_credentials(request, table), key)
    try:
        return await _stream(request, st, key, after, watch)
    finally:
        watch.close()


async def _stream(request: web.Request, st: GatewayState, key: KeyRoute | None, after: int | None,
                  watch: KeyWatch) -> web.StreamResponse:
    async with open_feed(st, key, after) as feed:
        watch.feed = feed
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        closing = request.app[CLOSING]
        transport = request.transport
        try:
            await resp.prepare(request)
            await resp.write(b"retry: 1000\n\n")
            if feed.gap is not None:
                await resp.write(_sse("gap", feed.gap))
            async for seq, kind, data in feed.events(lambda: closing.is_set() or transport is None
                                                     or transport.is_closing() or watch.changed(), watch.stop):
                await resp.write(_sse(kind, data, seq))
            if watch.ended is not None:  # the last event says why the stream ends (no id: nothing to resume)
                await resp.write(_sse("error", watch.ended.body()))
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        return resp


def _sse(kind: str, data: Any, seq: int | None = None) -> bytes:
    if not kind:
        return b": keepalive\n\n"
    head = (f"id: {seq}\n" if seq is not None else "") + f"event: {kind}\n"
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


PROGRESS = web.AppKey("switchyard_progress", Progress)  # the job.progress pass (runs while it holds the lease)


def setup(app: web.Application, st: GatewayState) -> None:
    app[CLOSING] = asyncio.Event()
    app[PROGRESS] = Progress(st)

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(closing)
    app.router.add_get("/v1/events", get_events)

    async def bridges(_: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(bridge_forever(st)), asyncio.create_task(capacity_forever(st)),
                 asyncio.create_task(app[PROGRESS].run_forever())]
        yield
        await cancel_all(tasks)  # fetch() can swallow one cancel on 3.11 (see switchyard/tasks.py)

    app.cleanup_ctx.append(bridges)
