"""switchyard.v1.Inference: the gRPC front end of the inference core (submit.py), as inference.py is HTTP's.

Infer is submit(), InferStream is submit_stream() (streaming.py), GetJob, CancelJob and DeleteJob
are jobs.describe_job(), cancel() and delete(), ListJobs is joblist.find_jobs(): the rules live
there, this module only translates messages and errors (status.py).

Requests arrive as raw bytes and are parsed here, not by grpcio: the size check runs first,
against the current table's limit (a hot reload can lower it), and a message that does
not parse gets INVALID_ARGUMENT with Switchyard's code rather than grpcio's bare INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from ...api.table import KeyRoute, RoutingTable
from ...errors import ApiError
from ...messages import Result
from ..auth import authenticate_grpc, grpc_client_ip
from ..eta import retry_after
from ..http import MAX_REQUEST_ID, REQUEST_ID
from ..inference import result_body
from ..joblist import DEFAULT_LIMIT, JobQuery, find_jobs
from ..jobs import cancel, delete, describe_job
from ..resolve import Resolution
from ..state import GatewayState
from ..submit import (
    Accepted,
    Hooks,
    Outcome,
    Submission,
    check_items,
    check_operation,
    close_orphan,
    result_error,
    submit,
    submit_stream,
)
from . import inference_pb2 as pb
from .status import grpc_code, trailers
from .values import from_python, struct_from_python, struct_to_python, to_python

log = logging.getLogger("switchyard.gateway.grpc")

SERVICE = "switchyard.v1.Inference"
M = TypeVar("M", bound=Message)
# Requests arrive as bytes: the service decodes them itself (to answer a bad one with its own status).
Context: TypeAlias = "grpc.aio.ServicerContext[bytes, Message]"


class InferenceService:
    def __init__(self, st: GatewayState) -> None:
        self.st = st

    def handler(self) -> grpc.GenericRpcHandler:
        # No request_deserializer: the handlers get bytes (see the module docstring).
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Infer": grpc.unary_unary_rpc_method_handler(
                self._guarded("Infer", self.infer), response_serializer=pb.InferResponse.SerializeToString),
            "GetJob": grpc.unary_unary_rpc_method_handler(
                self._guarded("GetJob", self.get_job), response_serializer=pb.Job.SerializeToString),
            "ListJobs": grpc.unary_unary_rpc_method_handler(
                self._guarded("ListJobs", self.list_jobs), response_serializer=pb.ListJobsResponse.SerializeToString),
            "CancelJob": grpc.unary_unary_rpc_method_handler(
                self._guarded("CancelJob", self.cancel_job),
                response_serializer=pb.CancelJobResponse.SerializeToString),
            "DeleteJob": grpc.unary_unary_rpc_method_handler(
                self._guarded("DeleteJob", self.delete_job),
                response_serializer=pb.DeleteJobResponse.SerializeToString),
            "InferStream": grpc.unary_stream_rpc_method_handler(
                self._guarded_stream("InferStream", self.infer_stream),
                response_serializer=pb.InferStreamResponse.SerializeToString),
        })

    def _guarded(self, method: str, fn: Callable[[bytes, Context], Awaitable[M]],
                 ) -> Callable[[bytes, Context], Awaitable[M]]:
        """Every ApiError becomes its status; anything else INTERNAL, logged, never its text. Counted in the metrics."""
        async def call(raw: bytes, context: Context) -> M:
            seen = Observed(f"/{SERVICE}/{method}")
            _OBSERVED.set(seen)
            try:
                reply = await fn(raw, context)
                if isinstance(reply, pb.InferResponse) and reply.WhichOneof("outcome") == "accepted":
                    seen.status = 202
                return reply
            except BaseException as exc:
                await self._fail(context, seen, exc)
                raise  # what _fail does not turn into an abort (a cancelled call)
            finally:
                seen.count(self.st)
        return call

    def _guarded_stream(self, method: str, fn: Callable[[bytes, Context], AsyncIterator[M]],
                        ) -> Callable[[bytes, Context], AsyncIterator[M]]:
        """_guarded() for a server stream: an error before or after messages ends the call with its status."""
        async def call(raw: bytes, context: Context) -> AsyncIterator[M]:
            seen = Observed(f"/{SERVICE}/{method}")
            _OBSERVED.set(seen)
            try:
                async for message in fn(raw, context):
                    if isinstance(message, pb.InferStreamResponse) and message.WhichOneof("event") == "accepted":
                        seen.status = 202
                    yield message
            except BaseException as exc:
                await self._fail(context, seen, exc)
                raise
            finally:
                seen.count(self.st)
        return call

    async def _fail(self, context: Context, seen: Observed, exc: BaseException) -> None:
        """Abort with the status of `exc` (an ApiError's, else INTERNAL); a cancelled call is only counted."""
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            seen.status = 499  # the client went away (or its deadline passed), as HTTP counts it
            return
        if isinstance(exc, grpc.aio.AbortError):
            return
        if isinstance(exc, ApiError):
            err = exc
        else:
            err = ApiError("internal", "internal error; quote the error id", error_id=os.urandom(8).hex())
            log.error("gRPC request failed", exc_info=exc, extra={"error_id": err.error_id})
        seen.status, seen.code = err.status, err.code
        await context.abort(grpc_code(err), err.message, trailing_metadata=trailers(err))

    async def infer(self, raw: bytes, context: Context) -> pb.InferResponse:
        table = self.st.table()  # this request keeps this table, whatever reloads meanwhile
        sub = self._submission(raw, table, context)
        # Shielded: a client that cancels or hits its deadline never stops a record or a publish half way.
        outcome = await asyncio.shield(asyncio.ensure_future(submit(self.st, table, sub, _hooks())))
        return _response(outcome, sub)

    async def infer_stream(self, raw: bytes, context: Context,
                           ) -> AsyncIterator[pb.InferStreamResponse]:
        table = self.st.table()
        sub = self._submission(raw, table, context)
        if sub.respond_async:  # a job's joined result is read with GetJob: nothing to stream
            raise ApiError("bad_request", "respond_async asks for a job, which does not stream: use Infer "
                                          "with respond_async, then GetJob")
        opening = asyncio.ensure_future(submit_stream(self.st, table, sub, _hooks()))
        try:
            opened = await asyncio.shield(opening)  # as in infer(): the record and publish complete
        except asyncio.CancelledError:
            opening.add_done_callback(close_orphan)  # the client left: cancel the item once it is queued
            raise
        if isinstance(opened, Accepted):
            yield pb.InferStreamResponse(request_id=sub.request_id, accepted=_accepted(opened))
            return
        try:
            # A slow reader: each write waits for gRPC's flow control, the stream buffers meanwhile
            # (streaming.MAX_BUFFERED chunks, then it ends with an error), and the route's timeout
            # bounds the whole stream.
            async for chunk in opened:
                if chunk.error is not None:
                    raise chunk.error
                if chunk.final:
                    yield pb.InferStreamResponse(request_id=sub.request_id, end=pb.StreamEnd(
                        chunks=chunk.seq, usage={k: int(v) for k, v in (chunk.usage or {}).items()}))
                    return
                yield pb.InferStreamResponse(request_id=sub.request_id, chunk=pb.StreamChunk(
                    seq=chunk.seq, payload=from_python([chunk.payload])[0]))
        finally:
            await opened.aclose()  # before the end (client gone, error): cancels the item on its worker

    def _submission(self, raw: bytes, table: RoutingTable, context: Context) -> Submission:
        key, req = _read(self.st, raw, pb.InferRequest, table, context)
        check_operation(req.op)
        items = [to_python(v) for v in req.items]
        check_items(items)
        return Submission(op=req.op, model_ref=req.model, items=items, params=struct_to_python(req.params),
                          request_id=_request_id(req.request_id), key=key,
                          machine_profile=req.machine_profile or None, pool=req.pool or None,
                          bundle=req.bundle or None,
                          prefer=(f"wait={req.wait_seconds}",) if req.HasField("wait_seconds") else (),
                          respond_async=req.respond_async, client_ip=grpc_client_ip(context, table))

    async def get_job(self, raw: bytes, context: Context) -> pb.Job:
        key, req = _read(self.st, raw, pb.GetJobRequest, self.st.table(), context)
        return _job(await describe_job(self.st, key, req.job_id, req.tenant or None))

    async def list_jobs(self, raw: bytes, context: Context) -> pb.ListJobsResponse:
        key, req = _read(self.st, raw, pb.ListJobsRequest, self.st.table(), context)
        query = JobQuery(states=frozenset(req.state), model=req.model or None, kind=req.kind or None,
                         since=req.since if req.HasField("since") else None,
                         until=req.until if req.HasField("until") else None,
                         limit=req.limit or DEFAULT_LIMIT, cursor=req.cursor or None, tenant=req.tenant or None)
        page = await find_jobs(self.st, key, query)
        return pb.ListJobsResponse(jobs=[_job(view) for view in page["jobs"]], next_cursor=page["next_cursor"] or "")

    async def cancel_job(self, raw: bytes, context: Context) -> pb.CancelJobResponse:
        key, req = _read(self.st, raw, pb.CancelJobRequest, self.st.table(), context)
        body = await cancel(self.st, key, req.job_id, req.tenant or None)  # shielded inside (jobs.py)
        return pb.CancelJobResponse(job=_job(body), cancelled=bool(body["cancelled"]), message=str(body["message"]))

    async def delete_job(self, raw: bytes, context: Context) -> pb.DeleteJobResponse:
        key, req = _read(self.st, raw, pb.DeleteJobRequest, self.st.table(), context)
        body = await delete(self.st, key, req.job_id, req.tenant or None)
        return pb.DeleteJobResponse(job_id=str(body["id"]), deleted=bool(body["deleted"]))


@dataclass(slots=True)
class Observed:
    """One call as the metrics count it: the HTTP endpoint's labels, with the RPC's path as the endpoint."""

    endpoint: str
    status: int = 200  # the HTTP status the outcome corresponds to (202 for accepted, 499 for a client gone)
    code: str = ""
    machine_profile: str = ""
    started: float = field(default_factory=time.perf_counter)

    def count(self, st: GatewayState) -> None:
        m = st.metrics
        m.requests.labels(self.endpoint, str(self.status), self.machine_profile).inc()
        m.latency.labels(self.endpoint, self.machine_profile).observe(time.perf_counter() - self.started)
        if self.code:
            m.errors.labels(self.endpoint, self.code).inc()


_OBSERVED: ContextVar[Observed] = ContextVar("switchyard_grpc_call")


def _hooks() -> Hooks:
    seen = _OBSERVED.get()

    def on_resolved(res: Resolution) -> None:
        seen.machine_profile = res.lane.machine_profile

    return Hooks(on_resolved)


def _check_size(raw: bytes, table: RoutingTable) -> None:
    limit = table.grpc.max_receive_bytes if table.grpc is not None else table.max_request_body_bytes
    if len(raw) > limit:
        raise ApiError("payload_too_large", f"request message is {len(raw)} bytes; the limit is {limit}")


def _read(st: GatewayState, raw: bytes, cls: type[M], table: RoutingTable, context: Context,
          ) -> tuple[KeyRoute | None, M]:
    """Every RPC's start: the size limit first, then the key (the HTTP API's rules), then the message."""
    _check_size(raw, table)
    key = authenticate_grpc(st, table, context)
    return key, _parse(cls, raw)


def _parse(cls: type[M], raw: bytes) -> M:
    try:
        return cls.FromString(raw)
    except DecodeError:
        raise ApiError("bad_request", f"the message does not parse as {cls.DESCRIPTOR.full_name} "
                                      "(malformed, or nested past protobuf's recursion limit)") from None


def _request_id(rid: str) -> str:
    if not rid:
        return os.urandom(16).hex()
    if len(rid) > MAX_REQUEST_ID or not REQUEST_ID.match(rid):
        raise ApiError("invalid_request_id", f"request_id must be 1-{MAX_REQUEST_ID} characters of "
                                             "A-Z a-z 0-9 _ = - and inner dots")
    return rid


def _accepted(acc: Accepted) -> pb.Accepted:
    lane = acc.resolution.lane
    return pb.Accepted(
        job_id=acc.job_id, status="queued" if acc.asked else "provisioning", machine_profile=lane.machine_profile,
        bundle=lane.bundle, pool=lane.pool, estimated_wait_s=acc.eta_s, retry_after_s=retry_after(acc.eta_s),
        message="the item is queued as a job (respond_async); follow it with GetJob" if acc.asked
        else f"no live worker for {lane.machine_profile}/{lane.bundle} in pool {lane.pool!r}; "
             "the item is queued and runs when one starts")


def _job(body: dict[str, Any]) -> pb.Job:
    """A job as jobs.record_view() (and describe_job()) shows it, as the Job message."""
    job = pb.Job(id=body["id"], state=body["state"], model=body["model"], pool=body["pool"],
                 machine_profile=body["machine_profile"], bundle=body["bundle"], updated_at=body["updated_at"],
                 kind=body["kind"], op=body["op"] or "", attempts=body["attempts"],
                 created_at=body["created_at"] or 0.0, started_at=body["started_at"] or 0.0,
                 deadline=body["deadline"] or 0.0)
    if "estimated_wait_s" in body:
        job.estimated_wait_s = float(body["estimated_wait_s"])
    if body.get("queue_position") is not None:
        job.queue_position = body["queue_position"]
    result: Any = body["result"]
    if result is not None and "error" in result:
        err = result["error"]
        job.error.CopyFrom(pb.Error(code=err.get("code", ""), message=err.get("message", ""),
                                    error_id=err.get("error_id") or ""))
    elif result is not None:
        job.result.CopyFrom(_result(result))
    return job


def _response(outcome: Outcome, sub: Submission) -> pb.InferResponse:
    applied = outcome.preference_applied or ""
    if isinstance(outcome, Accepted):
        return pb.InferResponse(request_id=sub.request_id, preference_applied=applied,
                                accepted=_accepted(outcome))
    result: Result = outcome.result
    if not result.ok:
        raise result_error(result)
    return pb.InferResponse(request_id=sub.request_id, preference_applied=applied,
                            result=_result(result_body(result, outcome.resolution.served_model)))


def _result(body: dict[str, Any]) -> pb.Result:
    return pb.Result(id=body["id"], model=body["model"], items=from_python(body["items"] or []),
                     worker=body.get("worker") or "", timing=struct_from_python(body.get("timing") or {}))
