"""The asyncio client. All request logic lives here; `Client` drives this same code."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from inspect import isawaitable
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from . import _core
from .errors import (
    CapacityTimeout,
    PoolExpired,
    RequestTimeout,
    SwitchyardError,
    TransportError,
    Unavailable,
    UnknownJob,
    UnknownPool,
    error_from_response,
)
from .models import Accepted, Event, InferenceResult, Job, JobPage, ModelInfo, PoolInfo, UsageRow

__all__ = ["AsyncClient"]

log = logging.getLogger("switchyard.client")

# Connect timeouts are safe to retry: nothing reached the gateway. aiohttp < 3.10 lacks the class.
_CONNECT_TIMEOUT: tuple[type[BaseException], ...] = tuple(
    c for c in (getattr(aiohttp, "ConnectionTimeoutError", None),) if c is not None
)


@dataclass(slots=True)
class _Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    request_id: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            snippet = self.body[:200].decode("utf-8", "replace")
            raise SwitchyardError(self.status, "invalid_response",
                                  f"expected JSON from the gateway, got: {snippet!r}", self.request_id) from None


class AsyncClient:
    """Async client for a Switchyard gateway.

    One aiohttp session (keep-alive connection pool) serves every call; it is made
    on first use so the client can be built outside a running loop. Use it as
    `async with AsyncClient(url, key) as sy:` or call `await close()`.

    timeout: seconds for one HTTP exchange (not for wait_for_capacity polling).
    max_retries / retry_backoff / max_retry_delay: see `RetryPolicy`.
    session: an aiohttp session to borrow instead (it is not closed by `close()`).
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60,
                 session: aiohttp.ClientSession | None = None, max_retries: int = 3,
                 retry_backoff: float = 0.25, max_retry_delay: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"gateway url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")  # a path prefix (behind an ingress) is kept
        self.timeout = timeout
        self.retry = _core.RetryPolicy(max_retries, retry_backoff, max_retry_delay)
        self._headers = _core.base_headers(api_key)
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._renewers: dict[str, asyncio.Task[None]] = {}  # pool -> its lease renewal task
        # A bounded connect timeout makes a dead address fail fast (and retryably)
        # instead of eating the whole request budget.
        self._client_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0))

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        await self._stop_renewing(*self._renewers)  # before the session goes: no renewal half-sent
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    aclose = close

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this Switchyard client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- inference ---------------------------------------------------------------

    async def infer(self, op: str, model: str, items: Any, *, params: Mapping[str, Any] | None = None,
                    gpu: str | None = None, pool: str | None = None, bundle: str | None = None,
                    request_id: str | None = None, wait_for_capacity: bool = False,
                    capacity_timeout: float = 600, poll_interval: float = 2.0, respond_async: bool = False,
                    deadline_s: int | None = None,
                    on_progress: Callable[[Job], Any] | None = None) -> InferenceResult | Accepted:
        """Run `op` on `model` for `items` (one item or a list; a str means {"text": str}).

        gpu: machine profile (e.g. "l4"), or "pool/profile". pool: pins the pool
        (a pinned pool without workers answers 503 no_capacity, never a 202).
        Returns an `InferenceResult`, or an `Accepted` when the gateway queued the
        item while a worker starts (202) and `wait_for_capacity` is false. With
        `wait_for_capacity=True` the job is polled (every <= `poll_interval` s) until
        it finishes or `capacity_timeout` s pass, which raises `CapacityTimeout`. It first
        asks the gateway to hold the request through the cold start (`Prefer: wait=N`, N
        below this client's `timeout`), so a worker that starts meanwhile answers at once.
        respond_async: always a job (`Prefer: respond-async`): an `Accepted` at once, even with a
        live worker (with `wait_for_capacity`, the job is then polled as above, without a hold).
        deadline_s: the item must start within this many seconds (`X-Job-Deadline`); raises
        `DeadlineUnreachable` at once when the lane's learned ETA is already longer.
        on_progress: with `wait_for_capacity`, called with the job (`Job`: state, queue_position,
        estimated_wait_s) after each poll until it is final (see `wait_for_job`).
        """
        started = time.monotonic()
        request_id = request_id or _core.new_request_id()
        body = orjson.dumps({"items": _core.normalize_items(items), "params": dict(params or {})})
        headers = {"Content-Type": "application/json", **_core.lane_headers(gpu, pool, bundle)}
        if respond_async:
            headers["Prefer"] = "respond-async"
        elif wait_for_capacity:
            headers.update(_core.prefer_wait(capacity_timeout, self.timeout))
        if deadline_s is not None:
            headers["X-Job-Deadline"] = str(int(deadline_s))
        # A held request (Prefer: wait) says nothing until it ends: its job is polled meanwhile for on_progress.
        poller = (asyncio.create_task(self._progress_while_held(request_id, poll_interval, on_progress))
                  if on_progress is not None and "Prefer" in headers and not respond_async else None)
        try:
            reply = await self._send("POST", _core.infer_path(op, model), body=body, headers=headers,
                                     request_id=request_id)
        finally:
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
        if poller is not None and not poller.cancelled() and poller.exception() is not None:
            raise poller.exception()  # type: ignore[misc]  # the callback's own error
        data = reply.json()
        if reply.status == 202:
            accepted = Accepted.from_json(
                data if isinstance(data, dict) else {},
                retry_after=_core.parse_retry_after(reply.headers.get("Retry-After")),
                location=reply.headers.get("Location"), request_id=reply.request_id)
            if not wait_for_capacity:
                return accepted
            left = capacity_timeout - (time.monotonic() - started)  # the hold counts against the timeout
            return await self.wait_for_job(accepted, left, poll_interval=poll_interval, on_progress=on_progress)
        if not isinstance(data, dict):
            raise SwitchyardError(reply.status, "invalid_response", "expected a JSON object", reply.request_id)
        return InferenceResult.from_json(data, request_id=reply.request_id)

    async def encode(self, model: str, items: Any, **kw: Any) -> InferenceResult | Accepted:
        return await self.infer("encode", model, items, **kw)

    async def score(self, model: str, items: Any, **kw: Any) -> InferenceResult | Accepted:
        return await self.infer("score", model, items, **kw)

    async def generate(self, model: str, items: Any, **kw: Any) -> InferenceResult | Accepted:
        return await self.infer("generate", model, items, **kw)

    # -- jobs ----------------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        """The job's current state (and result or typed error once final)."""
        reply = await self._send("GET", _core.job_path(job_id))
        data = reply.json()
        return Job.from_json(data if isinstance(data, dict) else {})

    async def wait_for_job(self, job: str | Accepted, timeout: float = 600, *, poll_interval: float = 2.0,
                           on_progress: Callable[[Job], Any] | None = None) -> InferenceResult:
        """Poll a job until it is final: its result, its typed error, or `CapacityTimeout`.

        Given the `Accepted` of a 202, the first poll honours its Retry-After, and a
        404 counts as "not recorded yet" (the item is known to be queued).
        on_progress: called with the `Job` after each poll that finds it not final yet (its
        `state`, and while queued its `queue_position` and `estimated_wait_s`); a coroutine
        function is awaited. With `Client` it runs on the client's background thread.
        """
        accepted = job if isinstance(job, Accepted) else None
        job_id = accepted.job_id if accepted else str(job)
        started = time.monotonic()
        deadline = started + timeout
        delays = iter(_core.poll_delays(accepted.retry_after if accepted else None, poll_interval))
        state: str | None = None
        last_error: SwitchyardError | None = None
        sleep_first = accepted is not None  # a 202 just said "not yet"
        while True:
            if sleep_first:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CapacityTimeout(job_id, time.monotonic() - started, state, job_id) from last_error
                await asyncio.sleep(min(next(delays), remaining))
            sleep_first = True
            try:
                # No inner retries: this loop already polls again, and stacking the
                # two would overshoot the caller's timeout.
                reply = await self._send("GET", _core.job_path(job_id), retry=False)
            except UnknownJob:
                if accepted is None:
                    raise
                state, last_error = "queued", None  # the record is written after the 202, or by the worker
                continue
            except (TransportError, Unavailable) as exc:
                last_error = exc  # the job survives a gateway restart; keep polling until the deadline
                continue
            data = reply.json()
            current = Job.from_json(data if isinstance(data, dict) else {})
            if current.done:
                return current.unwrap()
            state, last_error = current.state, None
            if on_progress is not None:
                called = on_progress(current)
                if isawaitable(called):
                    await called

    async def _progress_while_held(self, job_id: str, poll_interval: float,
                                   on_progress: Callable[[Job], Any]) -> None:
        """on_progress with the job every `poll_interval` s while the gateway holds its request."""
        while True:
            await asyncio.sleep(poll_interval)
            try:
                reply = await self._send("GET", _core.job_path(job_id), retry=False)
            except (UnknownJob, TransportError, Unavailable):
                continue  # not recorded yet (a live lane's request is no job), or the gateway is away
            data = reply.json()
            current = Job.from_json(data if isinstance(data, dict) else {})
            if not current.done:
                called = on_progress(current)
                if isawaitable(called):
                    await called

    async def list_jobs(self, *, state: str | list[str] | None = None, model: str | None = None,
                        kind: str | None = None, since: float | None = None, until: float | None = None,
                        limit: int | None = None, cursor: str | None = None) -> JobPage:
        """This key's jobs, newest first, one page (`JobPage.next_cursor` asks for the next)."""
        states = ",".join(state) if isinstance(state, list) else state
        query = _core.drop_none({"state": states, "model": model, "kind": kind, "since": since, "until": until,
                                 "limit": limit, "cursor": cursor})
        path = "/v1/jobs" + ("?" + urlencode({k: str(v) for k, v in query.items()}) if query else "")
        data = (await self._send("GET", path)).json()
        return JobPage.from_json(data if isinstance(data, dict) else {})

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: a queued one never runs, a running one's worker stops it. The job as it is
        now; `job.raw["cancelled"]` is False when it had already ended (it stays as it was)."""
        data = (await self._send("POST", _core.job_path(job_id) + "/cancel")).json()
        return Job.from_json(data if isinstance(data, dict) else {})

    async def delete_job(self, job_id: str) -> None:
        """Remove a finished job's record and result; `JobNotFinished` while it is queued or running."""
        await self._send("DELETE", _core.job_path(job_id))

    async def capacity(self) -> list[dict[str, Any]]:
        """Slots per pool, machine profile and bundle (`GET /v1/capacity`), as the gateway answers them."""
        data = (await self._send("GET", "/v1/capacity")).json()
        fleets = data.get("fleets") if isinstance(data, dict) else None
        return [f for f in fleets or [] if isinstance(f, dict)]

    async def dead_letters(self, *, model: str | None = None, after: int | None = None,
                           limit: int | None = None) -> dict[str, Any]:
        """Admin keys: items failed after their last attempt, oldest first (`next_after` pages on)."""
        query = _core.drop_none({"model": model, "after": after, "limit": limit})
        path = "/v1/deadletters" + ("?" + urlencode({k: str(v) for k, v in query.items()}) if query else "")
        data = (await self._send("GET", path)).json()
        return data if isinstance(data, dict) else {}

    async def dead_letter(self, letter_id: int) -> dict[str, Any]:
        """Admin keys: one dead letter, with its items and params."""
        data = (await self._send("GET", f"/v1/deadletters/{int(letter_id)}")).json()
        return data if isinstance(data, dict) else {}

    async def requeue_dead_letters(self, ids: list[int]) -> list[dict[str, Any]]:
        """Admin keys: queue dead letters again as jobs under their job ids; one outcome per id."""
        body = orjson.dumps({"ids": [int(i) for i in ids]})
        data = (await self._send("POST", "/v1/deadletters/requeue", body=body,
                                 headers={"Content-Type": "application/json"})).json()
        return list(data.get("requeued") or []) if isinstance(data, dict) else []

    # -- planners and events ------------------------------------------------------------

    async def usage(self, start: datetime | str, end: datetime | str | None = None, *,
                    group_by: str | list[str] = "tenant", tenant: str | None = None) -> list[UsageRow]:
        """Keys with the readUsage scope (admin keys): the usage ledger summed per group over [start, end)
        (end: now), at most 31 days (`GET /v1/usage`, docs/usage.md). A datetime without a time zone is
        refused rather than guessed."""
        groups = ",".join(group_by) if isinstance(group_by, list) else group_by
        query = _core.drop_none({"from": _rfc3339(start), "to": _rfc3339(end) if end is not None else None,
                                 "group_by": groups, "tenant": tenant})
        data = (await self._send("GET", "/v1/usage?" + urlencode(query))).json()
        rows = data.get("usage") if isinstance(data, dict) else None
        return [UsageRow.from_json(r) for r in rows or [] if isinstance(r, dict)]

    async def plans(self) -> list[dict[str, Any]]:
        """The Planners this key may run, with their steps and run counts (`GET /v1/plans`)."""
        data = (await self._send("GET", "/v1/plans")).json()
        return [p for p in (data.get("planners") or []) if isinstance(p, dict)] if isinstance(data, dict) else []

    async def run_plan(self, planner: str, items: Any, *, params: Mapping[str, Any] | None = None,
                       gpu: str | None = None, pool: str | None = None, request_id: str | None = None,
                       wait_for_result: bool = False, timeout: float = 600,
                       poll_interval: float = 2.0) -> InferenceResult | Accepted:
        """Run a Planner's DAG on `items`: an `Accepted` for the run (a job) at once, or with
        `wait_for_result=True` the output step's `InferenceResult` (held with `Prefer: wait`, then
        polled until `timeout`; a failed step raises its typed error, the step named in the message).
        The same `request_id` again is the same run."""
        request_id = request_id or _core.new_request_id()
        body = orjson.dumps({"items": _core.normalize_items(items), "params": dict(params or {})})
        headers = {"Content-Type": "application/json", **_core.lane_headers(gpu, pool, None)}
        if wait_for_result:
            headers.update(_core.prefer_wait(timeout, self.timeout))
        started = time.monotonic()
        reply = await self._send("POST", f"/v1/plans/{quote(planner, safe='')}", body=body, headers=headers,
                                 request_id=request_id)
        data = reply.json()
        if not isinstance(data, dict):
            raise SwitchyardError(reply.status, "invalid_response", "expected a JSON object", reply.request_id)
        if reply.status == 202:
            accepted = Accepted.from_json(data, retry_after=None, location=reply.headers.get("Location"),
                                          request_id=reply.request_id)
            if not wait_for_result:
                return accepted
            return await self.wait_for_job(accepted.job_id, timeout - (time.monotonic() - started),
                                           poll_interval=poll_interval)
        return InferenceResult.from_json(data, request_id=reply.request_id, job_id=str(data.get("id", "")))

    async def events(self, *, last_event_id: int | None = None, reconnect: bool = True) -> AsyncIterator[Event]:
        """`GET /v1/events` as an endless async iterator: this key's job.status events and the
        capacity.update events. A dropped connection is re-opened with `Last-Event-ID` (unless
        `reconnect=False`), so no event is missed within the gateway's window; a `gap` event says
        when some were."""
        last = last_event_id
        while True:
            headers = dict(self._headers)
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._get_session().get(
                        self.url + "/v1/events", headers=headers,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._client_timeout.sock_connect,
                                                      sock_read=EVENTS_READ_TIMEOUT_S)) as resp:
                    if resp.status != 200:
                        raise error_from_response(resp.status, await resp.read(), resp.headers, reason=resp.reason)
                    async for event in _sse_events(resp.content):
                        if event.id is not None:
                            last = event.id
                        yield event
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                if not reconnect:
                    raise TransportError(0, None, f"GET {self.url}/v1/events: {exc or type(exc).__name__}") from exc
            except Unavailable:
                if not reconnect:
                    raise
            await asyncio.sleep(1.0)

    # -- discovery -------------------------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        data = (await self._send("GET", "/v1/configs/models")).json()  # /v1/models is OpenAI's list
        return [ModelInfo.from_json(m) for m in (data.get("details") or []) if isinstance(m, dict)]

    async def health(self) -> dict[str, Any]:
        """GET /health. Not retried: a probe should report what it sees now."""
        reply = await self._send("GET", "/health", retry=False)
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:  # a plain-text "ok" is a healthy answer too
            return {"status": reply.body.decode("utf-8", "replace").strip() or "ok"}
        return data if isinstance(data, dict) else {"status": data}

    async def resolve(self, model: str, op: str | None = None, *, gpu: str | None = None, pool: str | None = None,
                      bundle: str | None = None) -> dict[str, Any]:
        """The lane (bundle, machine profile, pool, ...) a request would be routed to."""
        body = orjson.dumps(_core.drop_none(
            {"model": model, "op": op, "machine_profile": gpu, "pool": pool, "bundle": bundle}))
        reply = await self._send("POST", "/v1/configs/resolve", body=body,
                                 headers={"Content-Type": "application/json"})
        data = reply.json()
        return data if isinstance(data, dict) else {"lane": data}

    # -- pools -----------------------------------------------------------------------

    async def create_pool(self, name: str, gpus: Mapping[str, int], *, models: list[str] | None = None,
                          ttl_s: int | None = None, tenant: str | None = None, renew: bool = True) -> PoolInfo:
        """Reserve workers for this key's tenant: `gpus` per machine profile, e.g. {"l4": 2}.

        models: the models the pool's dedicated workers serve (the operator runs them);
        without, run the pool's workers yourself (`switchyard worker --pool <name>`).
        ttl_s: the lease, in seconds (the gateway's default when None). tenant: admin keys only.
        With `renew`, a task renews the lease every ttl/3 until `delete_pool(name)` or `close()`.
        Creating the same pool again (same spec) returns it; needs a key with managePools.
        """
        body = orjson.dumps(_core.drop_none({"name": name, "gpus": dict(gpus), "models": models,
                                             "ttl_seconds": ttl_s, "tenant": tenant}))
        # Retried like work (same request id): an identical re-POST answers 200, so a resend is harmless.
        reply = await self._send("POST", "/v1/pools", body=body, headers={"Content-Type": "application/json"})
        info = self._pool(reply)
        if renew and info.ttl_seconds > 0 and name not in self._renewers:
            self._renewers[name] = asyncio.create_task(self._renew_forever(name, info.ttl_seconds),
                                                       name=f"switchyard-renew-{name}")
        return info

    async def get_pool(self, name: str) -> PoolInfo:
        """The pool's spec, lease (`expires_at`, `state`) and workers (reserved and ready per profile)."""
        return self._pool(await self._send("GET", _core.pool_path(name)))

    async def list_pools(self) -> list[PoolInfo]:
        """The pools this key may see: its tenant's, and the shared ones its key may use."""
        data = (await self._send("GET", "/v1/pools")).json()
        pools = data.get("pools") if isinstance(data, dict) else None
        return [PoolInfo.from_json(p) for p in (pools or []) if isinstance(p, dict)]

    async def renew_pool(self, name: str) -> PoolInfo:
        """Renew the lease now; an expired pool raises `PoolExpired` (renewal cannot revive it)."""
        return self._pool(await self._send("POST", _core.pool_path(name, "renew")))

    async def delete_pool(self, name: str) -> None:
        """Stop renewing and delete the pool; its dedicated workers go away."""
        await self._stop_renewing(name)
        await self._send("DELETE", _core.pool_path(name))

    def renewing(self) -> list[str]:
        """The pools whose leases this client is renewing."""
        return sorted(n for n, t in self._renewers.items() if not t.done())

    @staticmethod
    def _pool(reply: _Reply) -> PoolInfo:
        data = reply.json()
        if not isinstance(data, dict):
            raise SwitchyardError(reply.status, "invalid_response", "expected a JSON object", reply.request_id)
        return PoolInfo.from_json(data)

    async def _renew_forever(self, name: str, ttl_s: int) -> None:
        interval = _core.renew_interval(ttl_s)
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                info = await self.renew_pool(name)
            except (PoolExpired, UnknownPool) as exc:
                log.error("pool lease can no longer be renewed; renewal stopped",
                          extra={"pool": name, "error": str(exc)})
                self._renewers.pop(name, None)
                return
            except Exception as exc:  # noqa: BLE001 - a gateway restart, a network blip: try again soon
                log.warning("pool lease renewal failed; retrying", extra={"pool": name, "error": str(exc)})
                delay = max(interval / 3.0, 0.2)
                continue
            delay = _core.renew_interval(info.ttl_seconds or ttl_s)

    async def _stop_renewing(self, *names: str) -> None:
        tasks = [t for n in names if (t := self._renewers.pop(n, None)) is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- transport -------------------------------------------------------------------

    async def _send(self, method: str, path: str, *, body: bytes | None = None,
                    headers: Mapping[str, str] | None = None, request_id: str | None = None,
                    retry: bool = True) -> _Reply:
        """One logical request: 2xx -> reply; errors -> typed exceptions.

        Connection failures and 503 queue_unavailable/not_ready are resent with the
        SAME X-Request-ID, so the gateway can de-duplicate a resend of work it
        already stored. Any 4xx is final.
        """
        session = self._get_session()
        request_id = request_id or _core.new_request_id()
        all_headers = {**self._headers, **(headers or {}), "X-Request-ID": request_id}
        attempts = 1 + (self.retry.max_retries if retry else 0)
        lost: TransportError | None = None  # the last attempt that lost its connection
        for attempt in range(1, attempts + 1):
            retry_after: float | None = None
            try:
                async with session.request(method, self.url + path, data=body, headers=all_headers,
                                           timeout=self._client_timeout, allow_redirects=False) as resp:
                    raw = await resp.read()
                    reply = _Reply(resp.status, resp.headers, raw, resp.headers.get("X-Request-ID", request_id))
            except _CONNECT_TIMEOUT as exc:
                failure: SwitchyardError = TransportError(
                    0, None, f"could not connect to {self.url} within {self._client_timeout.sock_connect}s",
                    request_id)
                failure.__cause__ = exc
            except TimeoutError as exc:
                # The gateway may be working on it; resending would only wait twice.
                raise RequestTimeout(0, None, f"{method} {path}: no answer within {self.timeout}s",
                                     request_id) from exc
            except aiohttp.ClientConnectionError as exc:
                failure = TransportError(0, None, f"{method} {self.url}{path}: {exc or type(exc).__name__}",
                                         request_id)
                failure.__cause__ = exc
                if not isinstance(exc, aiohttp.ClientConnectorError):  # a refused connect sent nothing
                    lost = failure
            except aiohttp.ClientError as exc:  # e.g. an invalid URL: not transient
                raise TransportError(0, None, f"{method} {self.url}{path}: {exc}", request_id) from exc
            else:
                if 200 <= reply.status < 300:
                    return reply
                retry_after = _core.parse_retry_after(reply.headers.get("Retry-After"))
                failure = error_from_response(reply.status, raw, {"X-Request-ID": reply.request_id},
                                              reason=resp.reason, retry_after=retry_after)
                if failure.code == "duplicate_request" and lost is not None:
                    # The gateway stored the first attempt and its answer was lost with
                    # the connection; an awaited (non-202) result cannot be fetched again.
                    failure.message += (" (an earlier attempt of this call lost its connection after the "
                                        "gateway accepted it; its result cannot be recovered: send again "
                                        "with a new request_id to run it again)")
                    raise failure from lost
                if failure.code not in _core.RETRYABLE_CODES:
                    raise failure
            if attempt == attempts:
                raise failure
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise AssertionError("unreachable")


EVENTS_READ_TIMEOUT_S = 35.0  # the gateway sends a keepalive after 10 s without events


def _rfc3339(when: datetime | str) -> str:
    if isinstance(when, str):
        return when
    if when.tzinfo is None:
        raise ValueError("a usage range needs aware datetimes (e.g. datetime.now(timezone.utc))")
    return when.isoformat()


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[Event]:
    """Server-Sent Events as the gateway writes them (one `data:` line per event)."""
    block: dict[str, Any] = {}
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if "event" in block:
                yield Event(block.get("id"), block["event"], block.get("data") or {})
            block = {}
        elif line.startswith("id:"):
            value = line[3:].strip()
            block["id"] = int(value) if value.isdigit() else None
        elif line.startswith("event:"):
            block["event"] = line[6:].strip()
        elif line.startswith("data:"):
            block["data"] = orjson.loads(line[5:].strip())
