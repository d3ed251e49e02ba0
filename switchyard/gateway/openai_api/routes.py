"""POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/images/generations, /v1/audio/speech.

Each is an OpenAI front end of the inference core (submit.py): parse the body (bodies.py),
submit it to the model's `chat`, `generate`, `encode`, `image` or `speech` operation with the
native headers (X-Machine-Profile, X-Pool, X-Bundle, X-Request-ID, Prefer), and render the
outcome in OpenAI's shape (results.py). OpenAI clients cannot follow a 202, so when no worker
is live the answer is the result after a hold (`Prefer: wait=N`), else a 503 with Retry-After;
the item stays queued as a job either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
from aiohttp import web
from pydantic import BaseModel

from ...api.table import RoutingTable
from ...errors import ApiError
from ...messages import Result
from ...subjects import job_key
from ..auth import authenticate_request, request_client_ip, tenant_of
from ..eta import retry_after
from ..hold import wait_preference
from ..http import MACHINE_PROFILE, RID, json_response, read_json
from ..resolve import SERVED_BY, Resolution
from ..state import GatewayState, state_of
from ..streaming import ChunkStream, StreamChunk
from ..submit import Accepted, Hooks, Submission, result_error, submit, submit_stream
from ..tracing import Trace, traced
from . import results, sse
from .bodies import ChatBody, CompletionBody, EmbeddingBody, ImageBody, SpeechBody, parse
from .discovery import METADATA_PATH, MODEL_PATH, OPENAI_ENDPOINTS
from .errors import OpenAiError
from .sse import OpenAiStream


async def _call(request: web.Request, op: str, body_cls: type[BaseModel],
                respond: Callable[[Any, Result, str, int], web.StreamResponse]) -> web.StreamResponse:
    st = state_of(request)
    table = st.table()  # this request keeps this table, whatever reloads meanwhile
    if table.tracing is None:
        return await _handle(request, st, table, op, body_cls, respond, None)
    return await traced(table.tracing, request,
                        lambda rt: _handle(request, st, table, op, body_cls, respond, rt))


async def _handle(request: web.Request, st: GatewayState, table: RoutingTable, op: str,
                  body_cls: type[BaseModel], respond: Callable[[Any, Result, str, int], web.StreamResponse],
                  rt: Trace | None) -> web.StreamResponse:
    key = authenticate_request(request, table)
    body: Any = parse(body_cls, await read_json(request, table.max_request_body_bytes))
    items = body.items()
    _fits(st, items)
    h = request.headers
    prefer = h.getall("Prefer", ())
    if table.openai_wait_s and wait_preference(prefer) is None:
        # OpenAI clients cannot follow a 202: the Gateway's default hold stands in for Prefer: wait.
        prefer = (*prefer, f"wait={table.openai_wait_s}")
    sub = Submission(op=op, model_ref=body.model, items=items, params=body.params(), request_id=request[RID],
                     key=key, machine_profile=h.get("X-Machine-Profile"), pool=h.get("X-Pool"),
                     bundle=h.get("X-Bundle"), prefer=prefer, priority=h.get("X-Priority"),
                     client_ip=request_client_ip(request))

    def on_resolved(res: Resolution) -> None:
        request[MACHINE_PROFILE] = res.lane.machine_profile

    hooks = Hooks(on_resolved, rt)
    if getattr(body, "stream", False):
        return await _stream(request, st, table, sub, hooks, body)
    outcome = await submit(st, table, sub, hooks)
    served = outcome.resolution.served_model  # the body's `model` names it, as OpenAI names a dated snapshot
    body = body.model_copy(update={"model": served})
    applied = {SERVED_BY: served,
               **({"Preference-Applied": outcome.preference_applied} if outcome.preference_applied else {})}
    if isinstance(outcome, Accepted):
        result = await _finished(st, sub, outcome)
        if result is None:
            raise _starting(outcome, sub.model_ref, own_id="X-Request-ID" in h, headers=applied)
    else:
        result = outcome.result
    if not result.ok:
        err = result_error(result)
        err.headers.update(applied)
        raise err
    resp = respond(body, result, request[RID], len(sub.items))
    resp.headers.update(applied)
    return resp


async def _stream(request: web.Request, st: GatewayState, table: RoutingTable, sub: Submission, hooks: Hooks,
                  body: Any) -> web.StreamResponse:
    """`"stream": true`: the worker's chunks as Server-Sent Events (sse.py), through the same queue."""
    outcome = await submit_stream(st, table, sub, hooks)
    stream: ChunkStream | None = None
    if isinstance(outcome, Accepted):
        result = await _finished(st, sub, outcome)  # a resend of a finished job's request id
        if result is None:
            raise _starting(outcome, sub.model_ref, own_id="X-Request-ID" in request.headers,
                            headers={"Preference-Applied": outcome.preference_applied}
                            if outcome.preference_applied else {})
        if not result.ok:
            raise result_error(result)
        chunks: AsyncIterator[StreamChunk] = _replay(result)
    else:
        stream = chunks = outcome
    options = body.stream_options
    served = outcome.resolution.served_model
    render = OpenAiStream(chat=sub.op == "chat", model=served, request_id=request[RID],
                          items=len(sub.items), include_usage=bool(options and options.include_usage))
    try:
        return await sse.respond(request, chunks, render, {SERVED_BY: served})
    finally:
        if stream is not None:
            await stream.aclose()  # before the final chunk (the client left): cancels the item on its worker


async def _replay(result: Result) -> AsyncIterator[StreamChunk]:
    """A finished job's stored result as a stream: its items, then the end."""
    items = result.items or []
    for seq, payload in enumerate(items):
        yield StreamChunk(payload, seq)
    yield StreamChunk(None, len(items), final=True, usage=result.usage)


def _fits(st: GatewayState, items: list[Any]) -> None:
    """Refuse `n` copies that cannot fit in one NATS message before packing them all.

    The body is capped, but n copies of it are not: 128 copies of an 8 MiB conversation would
    be packed (1 GiB in memory) before dispatch.pack() could refuse them. Each distinct item
    is sized once; a request without copies skips this (pack() checks it).
    """
    if len({id(it) for it in items}) == len(items):
        return
    limit = st.dispatcher.max_payload()
    sizes: dict[int, int] = {}
    total = 0
    for it in items:
        size = sizes.get(id(it))
        if size is None:
            size = sizes[id(it)] = len(msgpack.packb(it, use_bin_type=True))
        total += size
        if total > limit:
            raise OpenAiError("payload_too_large", f"{len(items)} copies of the input (one per choice or image, "
                                                   f"n) pack to more than one NATS message holds ({limit} "
                                                   "bytes); ask for fewer", param="n")


async def _finished(st: GatewayState, sub: Submission, acc: Accepted) -> Result | None:
    """The job's result when it has one already: a resend of a request id whose job ended."""
    record = await st.dispatcher.job(job_key(tenant_of(sub.key), acc.job_id))
    if record is None or not record.final or record.result is None:
        return None
    return Result(**{k: v for k, v in record.result.items() if k != "v"})


def _starting(acc: Accepted, model: str, *, own_id: bool, headers: dict[str, str]) -> ApiError:
    lane = acc.resolution.lane
    message = (f"no worker is live for {model!r} ({lane.machine_profile}/{lane.bundle} in pool {lane.pool!r}) "
               f"yet; one is starting, expected in about {acc.eta_s:g}s. The request is queued as job "
               f"{acc.job_id!r} and runs then: read it at /v1/jobs/{acc.job_id}, or send it again with "
               f"X-Request-ID: {acc.job_id} to get its result. Prefer: wait=N holds a request through a "
               "cold start instead")
    # The OpenAI SDKs retry a 503 after Retry-After. Without the client's own request id a retry is new
    # work (a second job): tell them not to; with it, a retry finds this job and, once done, its result.
    return ApiError("worker_starting", message, status=503, headers={
        "Retry-After": str(retry_after(acc.eta_s)), "Location": f"/v1/jobs/{acc.job_id}",
        "X-Should-Retry": "true" if own_id else "false", **headers})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _call(request, "chat", ChatBody, lambda body, result, rid, n: json_response(
        results.chat_completion(sse.joined(result, n, chat=True), n, body.model, rid)))


async def completions(request: web.Request) -> web.StreamResponse:
    return await _call(request, "generate", CompletionBody, lambda body, result, rid, n: json_response(
        results.completion(sse.joined(result, n, chat=False), n, body.model, rid)))


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await _call(request, "encode", EmbeddingBody, lambda body, result, rid, n: json_response(
        results.embeddings(result, n, body.model, body.encoding_format)))


async def image_generations(request: web.Request) -> web.StreamResponse:
    return await _call(request, "image", ImageBody, lambda body, result, rid, n: json_response(
        results.images(result, n)))


def _speech(body: Any, result: Result, rid: str, n: int) -> web.StreamResponse:
    audio, content_type = results.speech(result, body.response_format)
    return web.Response(body=audio, content_type=content_type)


async def audio_speech(request: web.Request) -> web.StreamResponse:
    return await _call(request, "speech", SpeechBody, _speech)


OPENAI_PATHS = frozenset({METADATA_PATH, MODEL_PATH, *(path for _, path, _ in OPENAI_ENDPOINTS)})
ROUTES = [("/v1/chat/completions", chat_completions), ("/v1/completions", completions),
          ("/v1/embeddings", embeddings), ("/v1/images/generations", image_generations),
          ("/v1/audio/speech", audio_speech)]
