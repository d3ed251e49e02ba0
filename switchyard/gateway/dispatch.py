"""The gateway's side of NATS: connect, publish work, await results on one inbox.

Every work item is published to JetStream with `Nats-Msg-Id` = request id and the
gateway answers only after the PubAck, so a 200 or 202 always means "stored".
Results come back by core NATS to `_sy.inbox.<gateway>.<seq>`, one wildcard
subscription per gateway, resolved to the waiting request by sequence number; the
PubAcks come to the same subscription, as `_sy.inbox.<gateway>.a<seq>`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.kv import KeyValue

from ..api.table import QueueLimits
from ..errors import ApiError
from ..jetstream import (
    NATS_FAILURES,
    LiveEntry,
    apply_queue_limits,
    ensure_coldstart_bucket,
    ensure_jobs_bucket,
    ensure_results_bucket,
    ensure_work_stream,
    ensure_workers_bucket,
    kv_get,
)
from ..logs import swallowed
from ..messages import JobRecord, Result, WorkItem
from ..runtime import Backoff
from ..subjects import (
    INBOX_PREFIX,
    RESULTS_BUCKET,
    cancel_subject,
    job_cancel_subject,
    queue_subject,
    ring_subject,
    token,
)

log = logging.getLogger("switchyard.gateway.nats")

RETRY_AFTER_S = "2"


def unavailable(why: str) -> ApiError:
    return ApiError("queue_unavailable", f"work queue unavailable: {why}", headers={"Retry-After": RETRY_AFTER_S})


async def read_entry(kv: KeyValue, key: str) -> LiveEntry | None:
    """kv_get on a request's path: NATS away or slow answers 503 queue_unavailable, not a 500."""
    try:
        return await kv_get(kv, key)
    except (TimeoutError, nats.errors.Error) as exc:
        raise unavailable(str(exc) or type(exc).__name__) from None


DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload
QUEUE_FULL_RETRY_AFTER_S = "5"
# JetStream error codes (nats-server errors.json) that mean "the stream is at a limit":
STORE_FAILED = 10077  # JSStreamStoreFailedF: "maximum messages|bytes|messages per subject exceeded"
INSUFFICIENT_RESOURCES = 10023  # the server's JetStream storage is full
MESSAGE_TOO_LARGE = 10054  # JSStreamMessageExceedsMaximumErr: over the stream's max_msg_size
_LIMIT_HINTS = {
    "maximum messages per subject exceeded": "this lane holds spec.queue.maxMessagesPerLane items of this "
                                             "tenant and priority class",
    "maximum bytes exceeded": "the work stream holds spec.queue.maxBytes bytes",
}


def _headers_size(headers: dict[str, str]) -> int:
    # NATS counts headers in max_payload: "NATS/1.0\r\n", "key: value\r\n" each, "\r\n".
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError("payload_too_large",
                    f"the work item is {size} bytes once packed for the queue; a NATS message holds at most "
                    f"{limit} bytes (the smaller of the server's max_payload and spec.nats.maxPayloadBytes)")


def _refused(exc: nats.js.errors.APIError, size: int) -> ApiError:
    """What a JetStream refusal means to the client: full (retry later), too large, or unavailable."""
    description = exc.description or ""
    if exc.err_code == INSUFFICIENT_RESOURCES or (exc.err_code == STORE_FAILED and "maximum" in description):
        why = _LIMIT_HINTS.get(description, description)
        return ApiError("queue_full", f"the work queue is full ({why}); nothing was queued, and nothing "
                                      "accepted is dropped for it. Retry later",
                        headers={"Retry-After": QUEUE_FULL_RETRY_AFTER_S})
    if exc.err_code == MESSAGE_TOO_LARGE:
        return ApiError("payload_too_large", f"the work item is {size} bytes once packed: {description}")
    return unavailable(f"JetStream refused the item: {description}")


def _no_ack(fut: asyncio.Future[Msg]) -> None:
    if not fut.done():
        fut.set_exception(nats.errors.TimeoutError())


def _pub_ack(msg: Msg) -> PubAck:
    if not msg.data and msg.headers and msg.headers.get("Status") == "503":
        raise nats.js.errors.NoStreamResponseError  # no stream listens on the subject
    resp = orjson.loads(msg.data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])
    return PubAck(stream=resp["stream"], seq=resp["seq"], domain=resp.get("domain"), duplicate=resp.get("duplicate"))


class Dispatcher:
    def __init__(self, url: str, instance: str, *, publish_timeout: float = 5.0,
                 jobs_ttl_s: Callable[[], float] = lambda: 3600.0,
                 sync_ttl_s: Callable[[], float] = lambda: 300.0,
                 queue_limits: Callable[[], QueueLimits | None] = lambda: None,
                 on_state: Callable[[bool], None] = lambda up: None,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        self.url = url
        self.instance = token(instance)
        self.inbox = f"{INBOX_PREFIX}.{self.instance}"
        self.publish_timeout = publish_timeout
        self.jobs_ttl_s = jobs_ttl_s
        self.sync_ttl_s = sync_ttl_s  # spec.jobs.syncResultTtlSeconds; 0: synchronous results are not kept
        self.results: KeyValue | None = None  # sy_results, when they are kept
        self.queue_limits = queue_limits
        self._applied: QueueLimits | None = None  # spec.queue as last applied to JetStream
        self._applied_ttls: tuple[float, float] | None = None  # the jobs and sync-result TTLs, likewise
        self._apply_lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self._on_state = on_state
        self._on_reconnect = on_reconnect
        self._seq = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._acks: dict[str, asyncio.Future[Msg]] = {}  # PubAcks come to the same inbox as results
        self._streams: dict[str, Callable[[bytes], None]] = {}  # streamed items: chunks, by inbox token
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.jobs: KeyValue | None = None
        self.workers: KeyValue | None = None
        self.coldstart: KeyValue | None = None  # measured cold starts (gateway/eta.py)
        self.ready = asyncio.Event()
        self._closing = False

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected and self.ready.is_set()

    @property
    def servers(self) -> list[str]:
        """The NATS url may list several servers, comma-separated (a cluster)."""
        return [u.strip() for u in self.url.split(",") if u.strip()]

    async def connect(self) -> None:
        """Connect, retrying until NATS answers; then make stream and buckets what spec.queue says."""
        while True:
            try:
                self.nc = await nats.connect(
                    self.servers, name=f"switchyard-gateway-{self.instance}",
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
                    disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                    error_cb=self._error, allow_reconnect=True,
                )
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                log.warning("NATS not reachable yet", extra={"url": self.url, "error": str(exc)})
                await asyncio.sleep(1.0)
        self.js = self.nc.jetstream(timeout=self.publish_timeout)
        await self._prepare_until_applied()  # not ready before: nothing is queued on a stream unlike the spec
        await self.nc.subscribe(f"{self.inbox}.*", cb=self._on_result)
        self.ready.set()
        self._on_state(True)
        log.info("connected to NATS", extra={"url": self.url, "inbox": self.inbox})

    async def _prepare(self) -> None:
        assert self.js is not None
        async with self._apply_lock:
            limits = self.queue_limits()
            ttl = self.jobs_ttl_s()  # the jobs TTL is set when the bucket is made
            if limits is None:
                # No routing table yet (cluster mode reads it concurrently): bind, create only what is
                # missing, change nothing; queue_changed() applies spec.queue when the table arrives.
                await ensure_work_stream(self.js)
                self.workers, self.jobs = await ensure_workers_bucket(self.js), await ensure_jobs_bucket(self.js, ttl)
            else:
                self.workers, self.jobs = await apply_queue_limits(self.js, limits, ttl)
            self.coldstart = await ensure_coldstart_bucket(self.js)  # binds the one apply_queue_limits made
            sync_ttl = self.sync_ttl_s()
            self.results = (await ensure_results_bucket(self.js, sync_ttl, limits.replicas if limits else 1)
                            if sync_ttl > 0 else None)
            self._applied, self._applied_ttls = limits, (ttl, sync_ttl)

    async def _prepare_until_applied(self) -> None:
        """Apply spec.queue until JetStream takes it (a cluster short of peers, a single server
        asked for replicas, a leader election), and again if the table changed meanwhile."""
        backoff = Backoff(0.5, 5.0)
        while not self._closing:
            try:
                await self._prepare()
                if self._applied == self.queue_limits() and self._applied_ttls == self._ttls():
                    return
                continue
            except Exception as exc:  # noqa: BLE001 - logged and retried; the cause is in the message
                limits = self.queue_limits()
                log.error("cannot apply the Gateway's spec.queue to JetStream; retrying",
                          extra={"replicas": limits.replicas if limits else None,
                                 "error": str(exc) or type(exc).__name__})
            await backoff.sleep()

    def queue_changed(self) -> None:
        """A new table: apply its spec.queue (replicas, limits) unless it is what JetStream has."""
        if self.js is None or not self.ready.is_set() or (self.queue_limits() == self._applied
                                                          and self._ttls() == self._applied_ttls):
            return  # not connected yet: connect() applies the table it finds
        self._retry_prepare()

    def _ttls(self) -> tuple[float, float]:
        return self.jobs_ttl_s(), self.sync_ttl_s()

    def _retry_prepare(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._prepare_until_applied())

    async def close(self) -> None:
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        for fut in self._waiters.values():
            fut.cancel()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()

    # -- work ----------------------------------------------------------------

    def max_payload(self) -> int:
        """Bytes one NATS message may hold: the server's max_payload (from its INFO) or spec.nats's, the smaller."""
        server = self.nc.max_payload if self.nc is not None else DEFAULT_MAX_PAYLOAD
        limits = self.queue_limits()
        return min(server, limits.max_payload_bytes) if limits is not None else server

    def pack(self, item: WorkItem) -> tuple[bytes, dict[str, str]]:
        """The item as it goes on the queue; 413 when it cannot fit in one NATS message."""
        data, headers = item.encode(), {"Nats-Msg-Id": item.key}
        limit = self.max_payload()
        size = len(data) + _headers_size(headers)
        if size > limit:
            raise _too_large(size, limit)
        return data, headers

    async def publish(self, item: WorkItem, subject: str,
                      packed: tuple[bytes, dict[str, str]] | None = None) -> PubAck:
        if not self.connected:
            raise unavailable("not connected to NATS")
        assert self.js is not None
        data, headers = packed or self.pack(item)
        size = len(data) + _headers_size(headers)
        subject = queue_subject(subject, item.priority, item.tenant)  # the item's class and tenant on its lane
        try:
            ack = await self._js_publish(subject, data, headers)
            if self.nc is not None:  # wakes the lane's idle workers (worker/fairness.py)
                await self.nc.publish(ring_subject(subject), b"")
            return ack
        except (TimeoutError, nats.errors.TimeoutError):
            raise unavailable("no acknowledgement from JetStream in time") from None
        except nats.js.errors.NoStreamResponseError:
            raise unavailable("the work stream does not answer") from None
        except nats.errors.MaxPayloadError:  # the server's limit shrank since we read it
            raise _too_large(size, self.max_payload()) from None
        except nats.js.errors.APIError as exc:
            raise _refused(exc, size) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError):
            raise unavailable("connection to NATS lost") from None

    async def _js_publish(self, subject: str, data: bytes, headers: dict[str, str]) -> PubAck:
        """What js.publish does, with the PubAck sent to our own inbox subscription: no per-call
        inbox token, wait_for or JSON-to-dataclass walk (hot path). Raises what js.publish
        raises, so publish() maps the errors the same way."""
        assert self.nc is not None
        token = f"a{next(self._seq)}"
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Msg] = loop.create_future()
        self._acks[token] = fut
        timer = loop.call_later(self.publish_timeout, _no_ack, fut)
        try:
            await self.nc.publish(subject, data, reply=f"{self.inbox}.{token}", headers=headers)
            return _pub_ack(await fut)
        finally:
            timer.cancel()
            del self._acks[token]

    def expect_result(self, item: WorkItem) -> asyncio.Future[Result]:
        """Register a waiter before publishing, so an early result is never missed."""
        seq = str(next(self._seq))
        item.reply = f"{self.inbox}.{seq}"
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters[seq] = fut
        fut.add_done_callback(lambda _: self._waiters.pop(seq, None))
        return fut

    def expect_stream(self, item: WorkItem, deliver: Callable[[bytes], None]) -> tuple[str, asyncio.Event]:
        """Register a streamed item before publishing: every message to its inbox goes to `deliver`
        (chunks, or a Result), in arrival order; the event is for the consumer to clear and await."""
        seq = str(next(self._seq))
        item.reply, item.stream = f"{self.inbox}.{seq}", True
        self._streams[seq] = deliver
        return seq, asyncio.Event()

    def end_stream(self, token: str) -> None:
        self._streams.pop(token, None)

    async def cancel(self, item: WorkItem) -> None:
        """Tell the worker running a streamed item to stop (core NATS: a worker that is gone needs no telling)."""
        if item.reply is None or self.nc is None or not self.nc.is_connected:
            return
        try:
            await self.nc.publish(cancel_subject(item.reply), b"")
        except Exception as exc:  # noqa: BLE001 - the item still ends at its deadline
            log.warning("could not cancel a stream", extra={"request_id": item.id, "error": str(exc)})

    async def _on_result(self, msg: Msg) -> None:
        token = msg.subject.rpartition(".")[2]
        if token[:1] == "a":
            ack = self._acks.get(token)
            if ack is not None and not ack.done():
                ack.set_result(msg)
            return
        fut = self._waiters.get(token)
        if fut is None:
            deliver = self._streams.get(token)
            if deliver is not None:
                deliver(msg.data)
            return
        if fut.done():
            return  # a redelivered item answered twice, or nobody waits any more
        try:
            fut.set_result(Result.decode(msg.data))
        except (ValueError, TypeError) as exc:
            log.warning("bad result message", extra={"subject": msg.subject, "error": str(exc)})

    # -- jobs ----------------------------------------------------------------

    async def create_job(self, key: str, record: JobRecord) -> tuple[JobRecord, int | None]:
        """Create-only: (record, revision) when made; (the existing record, None) when the key is taken."""
        jobs = self._jobs_bucket()
        try:
            return record, await jobs.create(key, record.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.job(key)
            if existing is None:  # deleted in between: a lost race, try once more
                return record, await jobs.create(key, record.encode())
            return existing, None
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(f"cannot record the job: {exc or type(exc).__name__}") from None

    async def delete_job(self, key: str, revision: int) -> None:
        """Undo our own create (the item could not be queued); a record someone moved on stays."""
        try:
            await self._jobs_bucket().delete(key, last=revision)
        except Exception as exc:  # noqa: BLE001 - its deadline reports it expired in the end
            log.warning("could not remove unqueued job record", extra={"job": key, "error": str(exc)})

    async def job(self, key: str) -> JobRecord | None:
        entry = await read_entry(self._jobs_bucket(), key)
        return JobRecord.decode(entry.value) if entry is not None else None

    async def job_entry(self, key: str) -> tuple[JobRecord, int] | None:
        """The record and its revision (for a compare-and-set), or None."""
        entry = await read_entry(self._jobs_bucket(), key)
        return (JobRecord.decode(entry.value), entry.revision or 0) if entry is not None else None

    async def update_job(self, key: str, record: JobRecord, revision: int) -> bool:
        """Compare-and-set: False when someone moved the record on since `revision`."""
        try:
            await self._jobs_bucket().update(key, record.encode(), last=revision)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None

    async def purge_job(self, key: str, revision: int) -> bool:
        """Remove a record and its result for good (DELETE /v1/jobs/{id}); False when it moved on meanwhile."""
        jobs = self._jobs_bucket()
        try:
            await jobs.delete(key, last=revision)  # the compare-and-set: nothing changed since it was read
            await jobs.purge(key)  # the delete marker goes too: the key is as if it never existed
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None

    async def tenant_jobs(self, tenant: str, limit: int) -> list[JobRecord]:
        """Every live record of one tenant (keys `<tenant>.>`), read from the bucket at most `limit` of them."""
        jobs = self._jobs_bucket()
        out: list[JobRecord] = []
        try:
            watcher = await jobs.watch(f"{tenant}.>", ignore_deletes=True, meta_only=False)
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None
        try:
            while len(out) < limit:
                entry = await watcher.updates(timeout=self.publish_timeout)
                if entry is None:  # the initial values are all in
                    break
                if entry.value and entry.operation is None:
                    out.append(JobRecord.decode(entry.value))
        except (TimeoutError, nats.errors.Error) as exc:
            raise unavailable(str(exc) or type(exc).__name__) from None
        finally:
            with swallowed(log, "stop a job listing's watcher", NATS_FAILURES):
                await watcher.stop()
        return out

    async def cancel_job_signal(self, key: str) -> None:
        """Tell whoever runs the job (its worker, a Planner run) to stop: core NATS, like stream cancels."""
        if self.nc is None or not self.nc.is_connected:
            raise unavailable("not connected to NATS")
        await self.nc.publish(job_cancel_subject(key), b"")

    async def keep_sync_result(self, key: str, record: JobRecord) -> None:
        """Keep a synchronous answer for re-fetch: best effort, never waited for.

        A plain publish to the bucket's subject without a reply: JetStream stores it and sends no
        PubAck, so this costs one buffered write on the connection (a kv.put, with its PubAck
        future, cost the gateway a third more CPU per request, bench/syncresults.py).
        """
        if self.results is None or self.nc is None or not self.nc.is_connected:
            return
        try:
            await self.nc.publish(f"$KV.{RESULTS_BUCKET}.{key}", record.encode())
        except Exception as exc:  # noqa: BLE001 - the client has its answer; only the copy is missing
            log.warning("could not keep a synchronous result", extra={"job": key, "error": str(exc)})

    async def sync_result(self, key: str) -> JobRecord | None:
        """A synchronous answer still kept (spec.jobs.syncResultTtlSeconds), or None."""
        if self.results is None or not self.connected:
            return None
        entry = await read_entry(self.results, key)
        return JobRecord.decode(entry.value) if entry is not None else None

    def _jobs_bucket(self) -> KeyValue:
        if not self.connected or self.jobs is None:
            raise unavailable("not connected to NATS")
        return self.jobs

    # -- connection events -----------------------------------------------------

    async def _disconnected(self) -> None:
        self._on_state(False)
        if not self._closing:
            log.warning("disconnected from NATS")

    async def _reconnected(self) -> None:
        log.info("reconnected to NATS")
        try:
            await self._prepare()  # a NATS that lost its store gets stream and buckets back
        except Exception as exc:  # noqa: BLE001
            log.error("could not re-create stream or buckets; retrying", extra={"error": str(exc)})
            self._retry_prepare()
        self._on_state(True)
        if self._on_reconnect is not None:
            await self._on_reconnect()

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS client error", extra={"error": str(exc)})
