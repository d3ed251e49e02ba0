"""Dead letters for admin keys: GET /v1/deadletters, GET /v1/deadletters/{seq}, POST /v1/deadletters/requeue.

A dead letter is an item that failed after its last attempt, kept by its worker in the
SWITCHYARD_DEAD stream (switchyard/deadletters.py); its id is its sequence there. Re-queueing
one publishes the item again on its lane under the same job id, as a job (its result is kept in
the jobs bucket, whether the first request waited for it or not): the job record goes back to
`queued`, with the failed outcome appended to its `history`, and the letter leaves the stream.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import nats.errors
import nats.js.errors
from aiohttp import web

from ..api.table import KeyRoute
from ..deadletters import DeadLetter
from ..errors import ApiError
from ..messages import JobRecord
from ..subjects import DEAD_PREFIX, DEAD_STREAM, token
from .auth import authenticate_request
from .dispatch import unavailable
from .http import json_response, read_json
from .state import GatewayState, state_of

log = logging.getLogger("switchyard.gateway.deadletters")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_REQUEUE = 100  # letters in one POST /v1/deadletters/requeue


def _admin(st: GatewayState, request: web.Request) -> KeyRoute | None:
    table = st.table()
    key = authenticate_request(request, table)
    # Anonymous callers act as admins only where no key exists: a gateway with keys and
    # anonymous access on must not show keyed tenants' items to whoever sends no key.
    if (key is None and table.keys) or (key is not None and not key.admin):
        raise ApiError("forbidden", "dead letters hold every tenant's items: admin keys only")
    return key


async def list_dead_letters(request: web.Request) -> web.Response:
    st = state_of(request)
    _admin(st, request)
    q = request.query
    unknown = set(q) - {"model", "after", "limit"}
    if unknown:
        raise ApiError("bad_request", f"unknown query parameter(s): {', '.join(sorted(unknown))} "
                                      "(known: model, after, limit)")
    limit = _int(q.get("limit"), "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    after = _int(q.get("after"), "after", 0, 2**63 - 1, 0)
    subject = f"{DEAD_PREFIX}.*.*.*.{token(q['model'])}" if q.get("model") else f"{DEAD_PREFIX}.>"
    letters: list[dict[str, Any]] = []
    seq = after + 1
    while len(letters) < limit:
        letter = await _read(st, seq, subject)
        if letter is None:
            break
        letters.append(_view(letter, with_items=False))
        seq = letter.seq + 1
    more = len(letters) == limit and await _read(st, seq, subject) is not None
    return json_response({"dead_letters": letters, "next_after": letters[-1]["id"] if more else None})


async def get_dead_letter(request: web.Request) -> web.Response:
    st = state_of(request)
    _admin(st, request)
    seq = _int(request.match_info["seq"], "id", 1, 2**63 - 1, 0)
    letter = await _read(st, seq, None)
    if letter is None:
        raise ApiError("not_found", f"no dead letter {seq} (re-queued, or older than the stream keeps)")
    return json_response(_view(letter, with_items=True))


async def requeue_dead_letters(request: web.Request) -> web.Response:
    st = state_of(request)
    table = st.table()
    _admin(st, request)
    body = await read_json(request, table.max_request_body_bytes)
    ids = body.get("ids") if isinstance(body, dict) else None
    if (not isinstance(body, dict) or set(body) != {"ids"} or not isinstance(ids, list) or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)):
        raise ApiError("bad_request", 'body must be {"ids": [<dead letter id>, ...]} (positive integers)')
    if len(ids) > MAX_REQUEUE:
        raise ApiError("bad_request", f'"ids" holds {len(ids)} entries; the limit is {MAX_REQUEUE}')
    results = [await _requeue_one(st, seq, table.result_ttl_seconds) for seq in dict.fromkeys(ids)]
    return json_response({"requeued": results})


async def _requeue_one(st: GatewayState, seq: int, ttl_s: int) -> dict[str, Any]:
    letter = await _read(st, seq, None)
    if letter is None:
        return {"id": seq, "requeued": False, "message": "no such dead letter (already re-queued?)"}
    item = letter.item
    now = time.time()
    item.keep_result, item.reply, item.stream, item.trace_context = True, None, False, None
    item.attempt, item.enqueued_at, item.deadline = 1, now, now + ttl_s
    earlier = {"state": "failed", "error": letter.error, "attempt": letter.attempt, "worker": letter.worker,
               "at": letter.failed_at}
    found = await st.dispatcher.job_entry(item.key)
    if found is not None and not found[0].final:
        return {"id": seq, "requeued": False, "job_id": item.id,
                "message": f"job {item.id!r} is {found[0].state} already"}
    record = JobRecord(id=item.id, state="queued", model=item.model, pool=item.pool,
                       machine_profile=item.machine_profile, bundle=item.bundle, tenant=item.tenant,
                       deadline=item.deadline, created_at=now, op=item.op, history=[earlier])
    if found is None:
        _, revision = await st.dispatcher.create_job(item.key, record)
        made = revision is not None
    else:
        old, revision = found
        record.created_at = old.created_at or now
        record.history = [*(old.history or []), earlier]
        made = await st.dispatcher.update_job(item.key, record, revision)
    if not made:
        return {"id": seq, "requeued": False, "job_id": item.id, "message": "the job changed meanwhile; try again"}
    data, headers = st.dispatcher.pack(item)
    headers["Nats-Msg-Id"] = f"{item.key}@requeue.{seq}"  # the same letter twice is stored once
    await st.dispatcher.publish(item, letter.lane, (data, headers))
    try:
        await st.dispatcher.js.delete_msg(DEAD_STREAM, seq)  # type: ignore[union-attr]
    except (nats.errors.Error, TimeoutError) as exc:  # left behind: re-queued at most once more (dedup window)
        log.warning("a re-queued dead letter was not deleted",
                    extra={"seq": seq, "error": str(exc) or type(exc).__name__})
    return {"id": seq, "requeued": True, "job_id": item.id, "tenant": item.tenant}


async def _read(st: GatewayState, seq: int, subject: str | None) -> DeadLetter | None:
    """The letter at `seq` (subject None), else the first at or after it on `subject`."""
    js = st.dispatcher.js
    if js is None or not st.dispatcher.connected:
        raise unavailable("not connected to NATS")
    try:
        if subject is None:
            msg = await js.get_msg(DEAD_STREAM, seq=seq)
        else:
            msg = await js.get_msg(DEAD_STREAM, seq=seq, subject=subject, next=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.Error, TimeoutError) as exc:
        raise unavailable(str(exc) or type(exc).__name__) from None
    try:
        return DeadLetter.decode(msg.data or b"", int(msg.seq or seq))
    except (ValueError, TypeError):
        return None


def _view(letter: DeadLetter, *, with_items: bool) -> dict[str, Any]:
    item = letter.item
    view: dict[str, Any] = {
        "id": letter.seq, "job_id": item.id, "tenant": item.tenant, "model": item.model, "op": item.op,
        "pool": item.pool, "machine_profile": item.machine_profile, "bundle": item.bundle,
        "error": letter.error, "attempts": letter.attempt, "max_attempts": item.max_attempts,
        "worker": letter.worker, "failed_at": letter.failed_at, "enqueued_at": item.enqueued_at,
    }
    if with_items:
        view.update(items=item.items, params=item.params)
    return view


def _int(raw: str | None, name: str, lo: int, hi: int, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ApiError("bad_request", f'"{name}" must be an integer from {lo} to {hi}, got {raw[:32]!r}')
    return int(raw)
