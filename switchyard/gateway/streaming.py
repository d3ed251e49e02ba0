"""Streamed results through the queue: a worker's chunks, in order, to any front end.

For front ends (native SSE, OpenAI `"stream": true`, gRPC InferStream, WebSocket), the entry
point is `submit.submit_stream(st, table, sub, hooks)`, the streaming twin of `submit()`: the
same resolution, limits, pools, holds and jobs. It returns

- `Accepted` when no worker is live and no hold (`Prefer: wait`) saw the stream begin: the item
  is a queued job, runs when a worker starts, and its record gets the joined result (the list
  of every chunk's payload), readable at /v1/jobs/{id};
- a `ChunkStream` otherwise: an async iterator of `StreamChunk(payload, seq, final, error, usage)`.

Everything refused raises `ApiError` before anything streams, as submit() does. With a resolved
WorkItem already in hand, `open_stream(st, item, res)` queues it and returns the ChunkStream.

Iterating a ChunkStream:

    stream = await submit_stream(st, table, sub)          # or open_stream(st, item, res)
    try:
        async for chunk in stream:
            if chunk.error is not None: ...               # final; an ApiError (code, message)
            elif chunk.final: ...                         # the end; chunk.usage when reported
            else: send(chunk.payload)                     # seq 0, 1, 2, ... with no gaps
    finally:
        await stream.aclose()                             # cancels the item if it has not ended

A front end that can tell its client is gone without writing (HTTP: the transport closed) sets
`stream.client_gone` to a callable: while waiting for a chunk it is polled every GONE_POLL_S, and
the stream cancels and stops when it says so, rather than when the next chunk fails to write.

The last chunk always has `final` set (with `error` when the stream failed): a consumer never has
to guess whether a stream ended. Closing the stream before its final chunk (the client went away,
the task was cancelled) publishes a cancel on `_sy.cancel.<gateway>.<seq>` (subjects.cancel_subject);
the worker then closes the handler's generator (its `finally` runs) and sends nothing more.

What the stream guarantees (docs/api.md, "Streaming"):
- order by sequence number: chunks arriving out of order are held back and released in order,
  duplicates are dropped; a sequence number that never comes is a `stream_gap` error, never a
  stream with a hole in it;
- a worker lost before anything was yielded is invisible: the redelivered item streams from
  seq 0 and the consumer sees one clean stream; once something was yielded, a lost worker
  ends the stream with a `worker_lost` error (the consumer cannot take chunks back);
- the route's timeout covers the whole stream (`deadline_exceeded`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError, ErrorCode
from ..messages import Chunk, Result, WorkItem, decode_reply
from .resolve import Resolution
from .state import GatewayState

log = logging.getLogger("switchyard.gateway.streaming")

GAP_GRACE_S = 0.5  # a missing chunk may still come this long after a later one did: then it is a gap
MAX_HELD_BACK = 1024  # chunks held back waiting for an earlier one: past this it is a gap
# Received and not yet taken by a slow consumer (its client reads slowly): past either, the stream
# ends with stream_gap rather than hold an unbounded backlog in the gateway's memory.
MAX_BUFFERED = 65_536  # chunks
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
LIVENESS_TICK_S = 1.0  # while waiting, how often to check that the streaming worker still beats
GONE_POLL_S = 0.25  # while waiting, how often to ask `client_gone`


class _ClientGone(Exception):
    pass


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One step of a stream as a front end renders it."""

    payload: Any  # what the handler yielded (None on the final chunk)
    seq: int  # 0, 1, 2, ... on data chunks; the count of data chunks on the final one
    final: bool = False
    error: ApiError | None = None  # only on the final chunk: the stream failed
    usage: dict[str, int] | None = None  # the handler's ctx.usage, on the final chunk
    # On the final chunk: the worker's queue_ms and compute_ms, and first_ms (handler start to its first chunk)
    timing: dict[str, float] | None = None


class ChunkStream:
    """The chunks of one streamed item, as they arrive on the gateway's inbox (see the module doc)."""

    def __init__(self, st: GatewayState, item: WorkItem, res: Resolution) -> None:
        self._st = st
        self.item = item
        self.resolution = res
        self._token, self._arrived = st.dispatcher.expect_stream(item, self._deliver)  # sets reply, stream
        self._inbox: deque[tuple[Result | Chunk, int]] = deque()  # (message, its size on the wire)
        self._buffered_bytes = 0
        self._overflow = False
        self._attempt: int | None = None  # the delivery whose chunks we follow
        self._worker = ""
        self._next = 0
        self._held: dict[int, Chunk] = {}
        self._final_seq: int | None = None
        self._gap_since: float | None = None
        self.yielded = 0  # data chunks handed to the consumer
        self.first_ms: float | None = None  # the worker's own time from handler start to its first chunk
        self._started = time.perf_counter()
        self._ended = False  # the final chunk was handed out, or the stream was closed
        self._closed = False
        self.client_gone: Callable[[], bool] | None = None
        # Called once as the stream ends, with the final chunk's usage (None: it ended otherwise): the
        # policy chain settles a token reservation and frees a concurrency slot with it.
        self.on_end: Callable[[dict[str, int] | None], None] | None = None
        self._usage: dict[str, int] | None = None

    # -- inbox side -----------------------------------------------------------------------

    def _deliver(self, raw: bytes) -> None:
        try:
            msg = decode_reply(raw)
        except (ValueError, TypeError) as exc:
            log.warning("bad stream message", extra={"request_id": self.item.id, "error": str(exc)})
            return
        if len(self._inbox) >= MAX_BUFFERED or self._buffered_bytes + len(raw) > MAX_BUFFERED_BYTES:
            self._overflow = True
            return
        self._inbox.append((msg, len(raw)))
        self._buffered_bytes += len(raw)
        self._arrived.set()

    # -- consumer side --------------------------------------------------------------------

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._ended:
            raise StopAsyncIteration
        try:
            chunk = await self._next_chunk()
        except ApiError as err:
            chunk = StreamChunk(None, self._next, final=True, error=err)
        except _ClientGone:
            await self.aclose()
            raise StopAsyncIteration from None
        if chunk.final:
            self._ended = True
            self._usage = chunk.usage
            res = self.resolution  # a stream that ran to its end, or failed: the lane's circuit breaker counts it
            self._st.breakers.record_error(res.lane, res.route, self.item.tenant, chunk.error)
            await self._finish(cancel=chunk.error is not None)
        elif self.yielded == 0:
            self._st.metrics.time_to_first_token.labels(
                self.item.machine_profile, self.item.model).observe(time.perf_counter() - self._started)
        if not chunk.final:
            self.yielded += 1
        return chunk

    async def first(self, timeout_s: float) -> bool:
        """Wait until the stream begins (its first message), up to `timeout_s`: for holds."""
        deadline = time.monotonic() + timeout_s
        while not self._inbox and not self._held and not self._overflow:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return False
        return True

    async def aclose(self) -> None:
        """Stop listening; if the stream has not ended, cancel the item on its worker."""
        await self._finish(cancel=not self._ended)

    async def detach(self) -> None:
        """Stop listening and leave the item running (a hold that ran out: it is a job now)."""
        await self._finish(cancel=False)

    async def _finish(self, cancel: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self._st.dispatcher.end_stream(self._token)
        if self.on_end is not None:
            self.on_end(self._usage)
        if cancel:
            await self._st.dispatcher.cancel(self.item)

    # -- ordering -------------------------------------------------------------------------

    async def _next_chunk(self) -> StreamChunk:
        while True:
            ready = self._take()
            if ready is not None:
                return ready
            if self._overflow:
                raise ApiError("stream_gap", "the stream overflowed the gateway's buffer (the client reads "
                                             "too slowly); it ended rather than skip chunks")
            await self._wait()

    def _take(self) -> StreamChunk | None:
        """Process what arrived; the next chunk in order when there is one."""
        # Only as far as the next chunk: what waits behind it stays counted against the buffer bounds.
        while self._inbox and self._next not in self._held:
            msg, size = self._inbox.popleft()
            self._buffered_bytes -= size
            if isinstance(msg, Result):
                self._on_result(msg)
            else:
                self._on_chunk(msg)
        chunk = self._held.pop(self._next, None)
        if chunk is None:
            if self._final_seq is not None or self._held:
                self._gap_since = self._gap_since or time.monotonic()
                if len(self._held) > MAX_HELD_BACK or time.monotonic() - self._gap_since > GAP_GRACE_S:
                    raise ApiError("stream_gap", f"chunk {self._next} of the stream never arrived; the stream "
                                                 f"ended there rather than skip it")
            return None
        self._gap_since = None
        if self._next == 0 and "first_ms" in chunk.timing:
            self.first_ms = chunk.timing["first_ms"]
        if chunk.final:
            if chunk.error:
                raise _chunk_error(chunk)
            timing = {**chunk.timing, **({"first_ms": self.first_ms} if self.first_ms is not None else {})}
            return StreamChunk(None, chunk.seq, final=True, usage=chunk.usage, timing=timing)
        self._next += 1
        return StreamChunk(chunk.payload, chunk.seq)

    def _on_chunk(self, c: Chunk) -> None:
        if self._attempt is None or (c.attempt > self._attempt and self.yielded == 0):
            # The first attempt we hear of, or a redelivery before anything was yielded: follow it.
            self._attempt, self._worker = c.attempt, c.worker
            self._next, self._held, self._final_seq, self._gap_since = 0, {}, None, None
        elif c.attempt > self._attempt:
            raise _lost(self.yielded)
        elif c.attempt < self._attempt:
            return  # an earlier attempt's late chunk
        if c.seq < self._next or c.seq in self._held or c.seq < 0:
            return  # a duplicate
        if self._final_seq is not None and c.seq > self._final_seq:
            return  # past the end: cannot be ours
        self._held[c.seq] = c
        if c.final:
            self._final_seq = c.seq

    def _on_result(self, r: Result) -> None:
        """A whole Result: a handler that does not stream, or an item that ended before it ran."""
        if self.yielded:
            if r.attempt > (self._attempt or 0):
                raise _lost(self.yielded)
            return
        self._attempt, self._worker = r.attempt, r.worker
        if r.ok:
            items = r.items or []
            self._held = {i: Chunk(r.id, i, payload=p, attempt=r.attempt) for i, p in enumerate(items)}
            self._held[len(items)] = Chunk(r.id, len(items), final=True, attempt=r.attempt, usage=r.usage)
        else:
            self._held = {0: Chunk(r.id, 0, final=True, error=_result_error(r), attempt=r.attempt)}
        self._next, self._final_seq = 0, max(self._held)

    async def _wait(self) -> None:
        """Until something arrives, the gap grace runs out, the deadline passes, or the worker is gone."""
        now = time.time()
        if self.item.deadline and now >= self.item.deadline:
            raise ApiError("deadline_exceeded", "the stream did not end before the route's timeout")
        wait = LIVENESS_TICK_S if self.client_gone is None else GONE_POLL_S
        if self._gap_since is not None:
            wait = min(wait, max(0.01, GAP_GRACE_S - (time.monotonic() - self._gap_since)))
        if self.item.deadline:
            wait = min(wait, self.item.deadline - now)
        self._arrived.clear()
        if self._inbox:
            return
        try:
            await asyncio.wait_for(self._arrived.wait(), max(0.001, wait))
        except TimeoutError:
            if self.client_gone is not None and self.client_gone():
                raise _ClientGone from None
            # Only a worker that already streamed something matters: before that, its death means
            # a redelivery (after the lane's ack wait) that streams from the start.
            # A pending gap is reported by _take() on the next turn, whatever became of the worker.
            if (self.yielded and self._worker and self._gap_since is None
                    and not self._st.registry.alive(self._worker)):
                raise _lost(self.yielded) from None


def _lost(sent: int) -> ApiError:
    return ApiError("worker_lost", f"the worker streaming this result stopped after {sent} chunk(s) were "
                                   "sent; they cannot be taken back, so the stream ends here. Retry the request")


# A worker's error codes a stream passes on as they are; any other is a worker_error.
_CHUNK_CODES: dict[str, ErrorCode] = {"invalid_input": "invalid_input", "deadline_exceeded": "deadline_exceeded"}


def _chunk_error(c: Chunk) -> ApiError:
    err = c.error or {}
    code = _CHUNK_CODES.get(err.get("code") or "", "worker_error")
    return ApiError(code, err.get("message") or "the worker failed mid-stream", error_id=err.get("error_id"))


def _result_error(r: Result) -> dict[str, str]:
    from .submit import result_error  # submit imports this module

    err = result_error(r)
    out = {"code": err.code, "message": err.message}
    if err.error_id:
        out["error_id"] = err.error_id
    return out


async def open_stream(st: GatewayState, item: WorkItem, res: Resolution) -> ChunkStream:
    """Queue a resolved item (a live worker serves its lane) and return its stream.

    The stream listens before the publish, so no chunk is missed; the route's timeout covers
    the whole stream. 409 `duplicate_request` when the request id was already queued.
    """
    item.deadline = time.time() + res.route.timeout_s
    stream = ChunkStream(st, item, res)
    try:
        ack = await st.dispatcher.publish(item, res.lane.subject)
    except BaseException:
        await stream.detach()
        raise
    if ack.duplicate:
        await stream.detach()
        raise ApiError("duplicate_request",
                       f"request id {item.id!r} was already accepted; its result went to the first caller. "
                       "Send a new X-Request-ID for new work")
    return stream
