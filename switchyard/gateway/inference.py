"""POST /v1/{op}/{model}: the native HTTP front end of the inference core (submit.py).

With `Accept: text/event-stream` the result streams as Server-Sent Events (submit_stream):
`event: chunk` per chunk, then `event: done`, or `event: error` (docs/api.md, "Streaming").
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..api.table import RoutingTable
from ..errors import ApiError
from ..messages import Result
from .auth import authenticate_request, request_client_ip
from .eta import retry_after
from .http import MACHINE_PROFILE, RID, json_response, read_json
from .resolve import SERVED_BY, Resolution
from .state import GatewayState, state_of
from .streaming import ChunkStream
from .submit import (
    Accepted,
    Hooks,
    Outcome,
    Submission,
    check_items,
    check_operation,
    job_deadline,
    respond_async,
    result_error,
    submit,
    submit_stream,
)
from .tracing import Trace, traced


async def infer(request: web.Request) -> web.StreamResponse:
    st = state_of(request)
    table = st.table()  # this request keeps this table, whatever reloads meanwhile
    if table.tracing is None:  # all that tracing costs while it is off
        return await _infer(request, st, table, None)
    return await traced(table.tracing, request, lambda rt: _infer(request, st, table, rt))


async def _infer(request: web.Request, st: GatewayState, table: RoutingTable,
                 rt: Trace | None) -> web.Response:
    op, model_ref = request.match_info["op"], request.match_info["model"]
    if op == "configs":
        raise ApiError("method_not_allowed", "config endpoints are read-only on the gateway")
    check_operation(op)
    key = authenticate_request(request, table)
    items, params = parse_body(await read_json(request, table.max_request_body_bytes))
    h = request.headers
    prefer = h.getall("Prefer", ())
    sub = Submission(op=op, model_ref=model_ref, items=items, params=params, request_id=request[RID], key=key,
                     machine_profile=h.get("X-Machine-Profile"), pool=h.get("X-Pool"), bundle=h.get("X-Bundle"),
                     prefer=prefer, respond_async=bool(prefer) and respond_async(prefer),
                     deadline_s=job_deadline(h.get("X-Job-Deadline")), priority=h.get("X-Priority"),
                     client_ip=request_client_ip(request))

    def on_resolved(res: Resolution) -> None:
        request[MACHINE_PROFILE] = res.lane.machine_profile

    if "text/event-stream" in h.get("Accept", "") and not sub.respond_async:
        streamed = await submit_stream(st, table, sub, Hooks(on_resolved, rt))
        if isinstance(streamed, Accepted):
            return _accepted(streamed, {SERVED_BY: streamed.resolution.served_model,
                                        **({"Preference-Applied": streamed.preference_applied}
                                           if streamed.preference_applied else {})})
        return await _sse(request, streamed)  # type: ignore[return-value]
    return respond(await submit(st, table, sub, Hooks(on_resolved, rt)), model_ref)


async def _sse(request: web.Request, stream: ChunkStream) -> web.StreamResponse:
    """The stream as Server-Sent Events; a client that goes away cancels the item on its worker."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no", "X-Request-ID": request[RID],
                                       SERVED_BY: stream.resolution.served_model})
    transport = request.transport
    stream.client_gone = lambda: transport is None or transport.is_closing()
    ended = False
    try:
        await resp.prepare(request)
        async for chunk in stream:
            if chunk.error is not None:
                event = _event("error", {**chunk.error.body(), "chunks": chunk.seq})
            elif chunk.final:
                event = _event("done", {"id": stream.item.id, "chunks": chunk.seq, "usage": chunk.usage,
                                        "timing": chunk.timing})
            else:
                event = _event("chunk", {"seq": chunk.seq, "payload": chunk.payload}, chunk.seq)
            await resp.write(event)
            ended = chunk.final
    except ConnectionError:
        pass  # the client went away mid-stream: the finally cancels the item
    finally:
        await stream.aclose()
        if not ended:
            state_of(request).metrics.client_disconnects.inc()
    return resp


def _event(name: str, data: Any, seq: int | None = None) -> bytes:
    head = f"event: {name}\n" + (f"id: {seq}\n" if seq is not None else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def respond(outcome: Outcome, model_ref: str) -> web.Response:
    """The native HTTP answer: 200 with the result, 202 with the job, or the worker's error.

    The body's `model` and X-Switchyard-Model name the model that served it: an alias's model, or
    the fallback's (`model_ref` is what the caller named)."""
    served = outcome.resolution.served_model
    applied = {SERVED_BY: served, **({"Preference-Applied": outcome.preference_applied}
                                     if outcome.preference_applied else {})}
    if isinstance(outcome, Accepted):
        return _accepted(outcome, applied)
    if not outcome.result.ok:
        err = result_error(outcome.result)
        err.headers.update(applied)
        raise err
    return json_response(result_body(outcome.result, served), headers=applied)


def parse_body(body: Any) -> tuple[list[Any], dict[str, Any]]:
    if not isinstance(body, dict):
        raise ApiError("bad_request", 'body must be a JSON object like {"items": [...], "params": {...}}')
    unknown = set(body) - {"items", "params"}
    if unknown:
        raise ApiError("bad_request", f"unknown body field(s): {', '.join(sorted(unknown))}")
    items, params = body.get("items"), body.get("params", {})
    items = check_items(items)
    if not isinstance(params, dict):
        raise ApiError("bad_request", '"params" must be an object')
    return items, params


def _accepted(acc: Accepted, headers: dict[str, str] | None = None) -> web.Response:
    # Retry-After is the ETA rounded up: the earliest time a worker is expected, learned per lane (eta.py).
    lane = acc.resolution.lane
    asked = acc.asked  # a job because the caller asked (Prefer: respond-async), maybe on a live lane
    return json_response(
        {"status": "queued" if asked else "provisioning", "job_id": acc.job_id,
         "machine_profile": lane.machine_profile, "bundle": lane.bundle, "pool": lane.pool,
         "estimated_wait_s": acc.eta_s,
         **({"queue_position": acc.queue_position} if acc.queue_position is not None else {}),
         "events": "/v1/events",  # job.progress (position, ETA) and job.status of this job, live
         "message": "the item is queued as a job (Prefer: respond-async); follow Location for its result"
                    if asked else f"no live worker for {lane.machine_profile}/{lane.bundle} in pool "
                                  f"{lane.pool!r}; the item is queued and runs when one starts"},
        status=202,
        headers={"Retry-After": str(retry_after(acc.eta_s)), "Location": f"/v1/jobs/{acc.job_id}",
                 **(headers or {})},
    )


def result_body(result: Result, model: str) -> dict[str, Any]:
    if result.ok:
        return {"id": result.id, "model": model, "items": result.items, "worker": result.worker,
                "timing": {**result.timing, "attempt": result.attempt}}
    return {"error": result.error or {"code": "worker_error", "message": "worker failed"}}
