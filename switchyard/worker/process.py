"""One delivery of one work item, from decode to ack: every accepted item ends in a final state."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import Counter
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ..deadletters import keep_dead_letter, term_dead_letter
from ..jetstream import ensure_jobs_bucket
from ..messages import Chunk, JobRecord, Result, WorkItem, as_dict
from ..runtime import Backoff
from .cancels import Cancels
from .config import WorkerConfig
from .context import Context
from .errors import PermanentError, TransientError
from .loader import Invoker, StreamingInvoker
from .tracing import Delivery, WorkerTracing
from .usage import UsageLedger, usage_record

log = logging.getLogger("switchyard.worker")

HANDLER_FAILED = "the handler failed on this item; the worker's log holds the detail under error_id"
CANCELLED = "the client closed the stream; the worker stopped the handler"
JOB_CANCELLED = "the job was cancelled (POST /v1/jobs/{id}/cancel); the worker stopped the handler"


class JobCancelled(Exception):
    """The job was cancelled through the API while its handler ran."""


class Processor:
    def __init__(self, nc: NATS, js: JetStreamContext, config: WorkerConfig, invoke: Invoker,
                 tracing: WorkerTracing | None = None) -> None:
        self._nc = nc
        self._tracing = tracing
        self._js = js
        self._cfg = config
        self._invoke = invoke
        self._worker_id = config.worker_id
        self._jobs: KeyValue | None = None
        self.cancels = Cancels()  # runtime.py subscribes it to the cancel subjects
        self.record_retry_s = 10.0  # how long to keep retrying a jobs-bucket write (NATS restarts)
        self._holding: Counter[str] = Counter()  # tenant -> items in flight (heartbeat: GET /v1/capacity)
        self.usage = UsageLedger(js)  # one record per finished attempt (worker/usage.py)

    def holders(self) -> dict[str, int]:
        return {tenant: n for tenant, n in self._holding.items() if n > 0}

    async def handle(self, msg: Msg) -> None:
        try:
            item = WorkItem.decode(msg.data)
        except Exception as exc:  # noqa: BLE001 - nobody to answer: drop it for good
            log.error("undecodable work item, terminated", extra={"subject": msg.subject, "error": str(exc)})
            await settle(msg.term)
            return
        self._holding[item.tenant] += 1
        try:
            if self._tracing is None:  # all that tracing costs while it is off
                await self._handle(msg, item, None)
                return
            with self._tracing.delivery(item, msg, self._worker_id) as trace:
                await self._handle(msg, item, trace)
        finally:
            self._holding[item.tenant] -= 1
            if not self._holding[item.tenant]:
                del self._holding[item.tenant]

    async def _handle(self, msg: Msg, item: WorkItem, trace: Delivery | None) -> None:
        attempt = item.attempt = msg.metadata.num_delivered
        if trace is not None:
            trace.attempt(attempt, item.max_attempts)
        if attempt > item.max_attempts:
            # The previous holder died on the last attempt (SIGKILL, OOM): report instead of retrying forever.
            msg_text = f"max attempts exceeded (delivery {attempt}, max_attempts {item.max_attempts})"
            await self._finish(msg, item, _failed(item, self._worker_id, "worker_error", msg_text), trace,
                               term=True, dead_letter=True)
            return
        if item.expired():
            res = Result(id=item.id, ok=False, state="expired", worker=self._worker_id, attempt=attempt,
                         error={"code": "deadline_exceeded", "message": "deadline passed before the item ran"},
                         timing={"queue_ms": _ms(time.time() - item.enqueued_at)})
            await self._finish(msg, item, res, trace)
            return
        if item.keep_result and not await self._put_record(item, "running", required=False):
            log.info("job already ended, not running it again", extra=_fields(item))
            await settle(msg.ack)
            return

        ctx = Context(op=item.op, model=item.model, bundle=item.bundle, machine_profile=item.machine_profile,
                      pool=item.pool, request_id=item.id, profile=item.profile, params=item.params,
                      deadline=item.deadline, attempt=attempt, max_attempts=item.max_attempts,
                      worker_id=self._worker_id)
        started = time.time()
        t0 = time.perf_counter()
        if item.stream and item.reply and isinstance(self._invoke, StreamingInvoker):
            await self._stream(msg, item, ctx, self._invoke, item.reply, started, t0, trace)
            return
        try:
            if not item.keep_result:  # nothing can cancel it by job id: the hot path stays as it was
                out = await self._invoke(item.items, ctx) if trace is None else await trace.handler(
                    self._invoke, item.items, ctx)
            else:
                out = await self._cancellable(item, ctx, trace)
        except JobCancelled:
            log.info("job cancelled while it ran", extra=_fields(item))
            res = Result(id=item.id, ok=False, state="cancelled", worker=self._worker_id, attempt=attempt,
                         error={"code": "cancelled", "message": JOB_CANCELLED}, timing=_timing(item, started, t0))
            await self._finish(msg, item, res, trace, term=True)  # its record already says cancelled
            return
        except PermanentError as exc:
            log.warning("permanent error", extra=_fields(item, code=exc.code, error=exc.message))
            res = _failed(item, self._worker_id, exc.code, exc.message)
            res.timing = _timing(item, started, t0)
            await self._finish(msg, item, res, trace, term=True)
            return
        except Exception as exc:  # noqa: BLE001 - TransientError or a handler bug: both retried
            await self._retry_or_fail(msg, item, exc, started, t0, trace)
            return
        res = Result(id=item.id, ok=True, items=out, worker=self._worker_id, attempt=attempt,
                     state="succeeded", timing=_timing(item, started, t0), usage=ctx.usage or None)
        await self._finish(msg, item, res, trace)

    async def _cancellable(self, item: WorkItem, ctx: Context, trace: Delivery | None) -> Any:
        """Run the handler until it returns or the job is cancelled (job_cancel_subject): then JobCancelled.

        An async handler is cancelled where it awaits. A sync one runs in a thread that nothing can
        interrupt: the item ends `cancelled` at once and the thread finishes on its own (it can see
        `ctx.cancelled` and return early).
        """
        self.cancels.watch_job(item.key, ctx.cancel)
        call = self._invoke(item.items, ctx) if trace is None else trace.handler(self._invoke, item.items, ctx)
        task = asyncio.ensure_future(call)
        stop = asyncio.ensure_future(ctx.cancel.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            if ctx.cancelled:  # even when it finished meanwhile: the record already says cancelled
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise JobCancelled
            return task.result()
        finally:
            stop.cancel()
            self.cancels.unwatch_job(item.key)

    async def _stream(self, msg: Msg, item: WorkItem, ctx: Context, invoker: StreamingInvoker, reply: str,
                      started: float, t0: float, trace: Delivery | None) -> None:
        """Publish each chunk to the gateway's inbox as the handler yields it; ack once it ended.

        A failure before the first chunk is retried like any other (the gateway has shown the
        client nothing, so the redelivery streams from the start); after it, the stream ends with
        an error chunk and the item is not run again (the client cannot take chunks back).
        A cancel from the gateway closes the generator (its finally runs) and ends the item.
        """
        cancelled = self.cancels.watch(reply)
        if item.keep_result:  # a streamed job (a hold that ran out) is cancelled through the jobs API too
            self.cancels.watch_job(item.key, cancelled)
        if cancelled.is_set():  # cancelled while queued (or its stream already ended): never start it
            self.cancels.unwatch(reply)
            self.cancels.unwatch_job(item.key)
            log.info("stream cancelled before it started", extra=_fields(item))
            await self._finish(msg, item, _failed(item, self._worker_id, "cancelled", CANCELLED), trace,
                               term=True, reply=b"")
            return
        chunks = invoker.chunks(item.items, ctx)
        joined: list[Any] = []  # the job record's result: every chunk, as a request that does not stream gets it
        seq = 0
        limit = self._nc.max_payload
        try:
            while True:
                step = asyncio.ensure_future(chunks.__anext__())
                stop = asyncio.ensure_future(cancelled.wait())
                await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not step.done():  # cancelled: stop the handler where it is (an async one), or after its step
                    if invoker.interruptible:
                        step.cancel()
                    await asyncio.gather(step, return_exceptions=True)
                    log.info("stream cancelled by the gateway", extra=_fields(item, chunks=seq))
                    res = _failed(item, self._worker_id, "cancelled", CANCELLED)
                    res.timing = _timing(item, started, t0)
                    await self._finish(msg, item, res, trace, term=True, reply=b"")
                    return
                try:
                    payload = step.result()
                except StopAsyncIteration:
                    break
                chunk = Chunk(id=item.id, seq=seq, payload=payload, attempt=item.attempt, worker=self._worker_id)
                if seq == 0:
                    chunk.timing = {"first_ms": _ms(time.perf_counter() - t0)}
                data = chunk.encode()
                if len(data) > limit:
                    raise PermanentError(f"a chunk of {len(data)} bytes exceeds the NATS max_payload of {limit}",
                                         code="worker_error")
                await self._nc.publish(reply, data)
                if item.keep_result:
                    joined.append(payload)
                seq += 1
                if cancelled.is_set():
                    continue  # the next turn sees it before asking the handler for more
        except PermanentError as exc:
            log.warning("permanent error mid-stream", extra=_fields(item, code=exc.code, error=exc.message))
            res = _failed(item, self._worker_id, exc.code, exc.message)
            res.timing = _timing(item, started, t0)
            await self._finish(msg, item, res, trace, term=True, reply=self._final(item, seq, res))
            return
        except Exception as exc:  # a handler bug or TransientError
            if seq == 0:
                await self._retry_or_fail(msg, item, exc, started, t0, trace)
                return
            error_id = uuid.uuid4().hex
            log.warning("handler failed mid-stream; not retried (chunks were sent)",
                        extra=_fields(item, error=str(exc) or type(exc).__name__, error_id=error_id, chunks=seq),
                        exc_info=not isinstance(exc, TransientError))
            res = _failed(item, self._worker_id, "worker_error", HANDLER_FAILED, error_id=error_id)
            res.timing = _timing(item, started, t0)
            await self._finish(msg, item, res, trace, term=True, reply=self._final(item, seq, res))
            return
        finally:
            self.cancels.unwatch(reply)
            self.cancels.unwatch_job(item.key)
            await chunks.aclose()
        res = Result(id=item.id, ok=True, items=joined, worker=self._worker_id, attempt=item.attempt,
                     state="succeeded", timing=_timing(item, started, t0), usage=ctx.usage or None)
        await self._finish(msg, item, res, trace, reply=self._final(item, seq, res))

    def _final(self, item: WorkItem, seq: int, res: Result) -> bytes:
        return Chunk(id=item.id, seq=seq, final=True, error=res.error, attempt=item.attempt,
                     worker=self._worker_id, usage=res.usage, timing=res.timing).encode()

    async def _retry_or_fail(self, msg: Msg, item: WorkItem, exc: Exception, started: float, t0: float,
                             trace: Delivery | None) -> None:
        text = str(exc) or type(exc).__name__
        if item.attempt >= item.max_attempts:
            # Exception text can hold paths and tokens: it stays in this log, the client gets its id.
            error_id = uuid.uuid4().hex
            log.warning("last attempt failed", extra=_fields(item, error=text, error_id=error_id),
                        exc_info=not isinstance(exc, TransientError))
            res = _failed(item, self._worker_id, "worker_error", HANDLER_FAILED, error_id=error_id)
            res.timing = _timing(item, started, t0)
            await self._finish(msg, item, res, trace, term=True, dead_letter=True)
            return
        retry_after = exc.retry_after if isinstance(exc, TransientError) else None
        delay = retry_after if retry_after is not None else self._cfg.retry_delay(item.attempt)
        log.warning("attempt failed, will retry", extra=_fields(item, error=text, retry_in_s=round(delay, 3)),
                    exc_info=not isinstance(exc, TransientError))
        if trace is not None:
            trace.retry(delay)
        # The attempt held the GPU all the same: it is usage, though not the item's end.
        tried = Result(id=item.id, ok=False, state="failed", attempt=item.attempt, timing=_timing(item, started, t0))
        await self.usage.append(usage_record(item, tried, final=False, gpus=self._cfg.gpus or 0.0,
                                             worker=self._worker_id))
        await settle(msg.nak, delay=delay)

    async def _finish(self, msg: Msg, item: WorkItem, res: Result, trace: Delivery | None = None,
                      term: bool = False,
                      dead_letter: bool = False, reply: bytes | None = None) -> None:
        """Answer, record, then ack: an ack that lands always follows a result that was sent.

        `dead_letter`: its attempts are used up, and the term says so (switchyard.deadletters).
        `reply`: what a stream's inbox gets instead of the Result (its final chunk; b"": nothing).
        """
        data = res.encode()
        if len(data) > self._nc.max_payload:
            # Retrying cannot make it fit: report that instead of failing to send on every attempt.
            log.warning("result too large", extra=_fields(item, size=len(data), max_payload=self._nc.max_payload))
            res = _failed(item, self._worker_id, "worker_error",
                          f"result of {len(data)} bytes exceeds the NATS max_payload of {self._nc.max_payload}")
            data, term = res.encode(), True
        if reply is not None:
            data = reply
        if trace is not None:
            trace.outcome(res)
        try:
            if item.reply and data:
                await self._nc.publish(item.reply, data)
            if item.keep_result:
                await self._put_record(item, res.state, result=as_dict(res), required=True)
        except Exception as exc:  # noqa: BLE001 - leave it unacked: it is redelivered after ack_wait
            log.error("could not deliver result, leaving item unacked", extra=_fields(item, error=str(exc)))
            return
        # Before the ack: once acked, nothing would run this again to count it.
        await self.usage.append(usage_record(item, res, final=True, gpus=self._cfg.gpus or 0.0,
                                             worker=self._worker_id))
        if dead_letter:
            try:
                await keep_dead_letter(self._js, msg.subject, item, res)
            except Exception as exc:  # noqa: BLE001 - its outcome is delivered; only the letter is missing
                log.error("could not keep the dead letter", extra=_fields(item, error=str(exc)))
        if dead_letter:
            await settle(term_dead_letter, msg=msg)
        else:
            await settle(msg.term if term else msg.ack)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("done", extra=_fields(item, state=res.state, **res.timing))

    async def _put_record(self, item: WorkItem, state: str, *, result: dict[str, Any] | None = None,
                          required: bool) -> bool:
        """False when the job already has a final record (which stays as it is)."""
        rec = JobRecord(id=item.id, state=state, model=item.model, pool=item.pool,
                        machine_profile=item.machine_profile, bundle=item.bundle, result=result,
                        tenant=item.tenant, deadline=item.deadline, op=item.op, attempt=item.attempt,
                        created_at=item.enqueued_at, started_at=time.time() if state == "running" else 0.0)
        deadline = time.monotonic() + self.record_retry_s
        backoff = Backoff(0.1, 1.0)
        while True:
            try:
                if self._jobs is None:
                    self._jobs = await ensure_jobs_bucket(self._js)
                return await _advance(self._jobs, item.key, rec)
            except Exception as exc:  # NATS down or JetStream not ready yet
                delay = backoff.next()
                if time.monotonic() + delay > deadline:
                    if required:
                        raise
                    log.warning("could not write job record", extra=_fields(item, state=state, error=str(exc)))
                    return True
                await asyncio.sleep(delay)


async def _advance(jobs: KeyValue, key: str, rec: JobRecord) -> bool:
    """Move a job record on, by compare-and-set: a final record is never overwritten.

    A redelivered item that runs again after its first outcome was recorded leaves
    that outcome in place; so does a request id reused once its job has ended, and a job
    cancelled through the API. What the gateway wrote (kind, op, created_at, history) stays.
    """
    while True:
        try:
            entry = await jobs.get(key)
        except nats.js.errors.KeyNotFoundError:
            try:
                await jobs.create(key, rec.encode())
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # someone created it meanwhile: read it
        new = rec
        if entry.value:
            old = JobRecord.decode(entry.value)
            if old.final:
                return False
            new = dataclasses.replace(old, state=rec.state, result=rec.result, updated_at=rec.updated_at,
                                      attempt=rec.attempt, started_at=rec.started_at or old.started_at)
        try:
            await jobs.update(key, new.encode(), last=entry.revision)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            continue


async def settle(op: Any, **kw: Any) -> None:
    """ack/nak/term: a failure only means the server redelivers later, so log and go on."""
    try:
        await op(**kw)
    except Exception as exc:  # noqa: BLE001
        log.warning("ack failed", extra={"op": getattr(op, "__name__", "?"), "error": str(exc)})


def _failed(item: WorkItem, worker: str, code: str, message: str, error_id: str | None = None) -> Result:
    error = {"code": code, "message": message}
    if error_id:
        error["error_id"] = error_id
    return Result(id=item.id, ok=False, state="failed", worker=worker, attempt=item.attempt, error=error)


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000.0, 3)


def _timing(item: WorkItem, started: float, t0: float) -> dict[str, float]:
    return {"queue_ms": _ms(started - item.enqueued_at), "compute_ms": _ms(time.perf_counter() - t0)}


def _fields(item: WorkItem, **kw: Any) -> dict[str, Any]:
    return {"request_id": item.id, "model": item.model, "attempt": item.attempt, **kw}
