"""Unit tests for the SDK (switchyard.client) against a FAKE gateway.

`FakeGateway` is a small aiohttp.web server on 127.0.0.1 that speaks the gateway's
HTTP contract, with behaviour picked by the model id (err/<code>, cold/<outcome>,
flaky/..., ...). It stands in for the real gateway so the SDK's HTTP handling can
be tested alone; integration tests run the SDK against the real gateway.
It runs on its own loop in a thread, so blocking `Client` calls from a test work.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from switchyard.client import (
    Accepted,
    AsyncClient,
    BadRequest,
    CapacityTimeout,
    Client,
    Conflict,
    DeadlineExceeded,
    DeadlineUnreachable,
    DuplicateRequest,
    Forbidden,
    IncompatibleBundle,
    InferenceResult,
    InvalidInput,
    JobNotFinished,
    NoCapacity,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PoolExists,
    PoolExpired,
    PoolInfo,
    PoolProtected,
    PoolTooLarge,
    QueueUnavailable,
    RequestTimeout,
    ServerError,
    SwitchyardError,
    TooManyPools,
    TransportError,
    Unauthorized,
    Unavailable,
    UnknownJob,
    UnknownModel,
    UnknownPool,
    WorkerError,
)
from switchyard.client._core import RetryPolicy, normalize_items, parse_retry_after, poll_delays
from switchyard.errors import STATUS

API_KEY = "test-key"


# --------------------------------------------------------------------------- fake gateway

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeJob:
    states: list[str]  # one per poll; the last one repeats
    model: str
    error: dict[str, str] | None = None
    polls: int = 0
    missing_polls: int = 0  # answer 404 this many times first (record not written yet)


class FakeGateway:
    """A stand-in for the Switchyard gateway, for SDK unit tests only."""

    def __init__(self, api_key: str | None = API_KEY) -> None:
        self.api_key = api_key
        self.seen: list[Seen] = []
        self.jobs: dict[str, FakeJob] = {}
        self.attempts: dict[str, int] = defaultdict(int)  # per request id
        self.accepted_retry_after = "1"
        self.pools: dict[str, dict[str, Any]] = {}
        self.renew_script: dict[str, list[str]] = {}  # pool -> codes its next renewals answer ("ok" or an error)
        self.renewals: dict[str, int] = defaultdict(int)  # pool -> renew calls seen
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    # lifecycle
    def start(self) -> FakeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._echo_request_id])
        app.router.add_post("/v1/configs/resolve", self._resolve)
        app.router.add_post("/v1/{op}/{model:.+}", self._infer)
        app.router.add_get("/v1/jobs/{id}", self._job)
        app.router.add_get("/v1/configs/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/pools", self._create_pool)
        app.router.add_get("/v1/pools", self._list_pools)
        app.router.add_get("/v1/pools/{name}", self._get_pool)
        app.router.add_post("/v1/pools/{name}/renew", self._renew_pool)
        app.router.add_delete("/v1/pools/{name}", self._delete_pool)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # a free port, loopback only
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    # test helpers
    def finish(self, job_id: str) -> None:
        self.jobs[job_id].states = ["succeeded"]

    def requests_to(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]

    # contract
    @web.middleware
    async def _echo_request_id(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        body = orjson.loads(await request.read()) if request.can_read_body else None
        self.seen.append(Seen(request.method, request.path, dict(request.headers), body))
        if self.api_key and request.path != "/health" \
                and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            resp: web.StreamResponse = self._error("unauthorized", "unknown API key")
        else:
            resp = await handler(request)
        resp.headers["X-Request-ID"] = rid
        return resp

    @staticmethod
    def _error(code: str, message: str, status: int | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}},
                                 status=status or STATUS[code], headers=headers)

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        rid = request.headers.get("X-Request-ID", "")
        self.attempts[rid] += 1
        attempt = self.attempts[rid]
        kind, _, arg = model.partition("/")
        if kind == "err":  # err/<code>[/<status>]
            code, _, status = arg.partition("/")
            extra = {"Retry-After": "1"} if (int(status or STATUS.get(code, 500))) == 503 else None
            return self._error(code, f"fake gateway says {code}", int(status) if status else None, extra)
        if kind == "raw":  # a non-JSON error body, as a proxy would send
            return web.Response(status=int(arg), text="<html><body>upstream broke</body></html>",
                                content_type="text/html")
        if kind == "flaky":  # flaky/<code>/<failures>/<retry-after>
            code, failures, retry_after = arg.split("/")
            if attempt <= int(failures):
                return self._error(code, "try again", headers={"Retry-After": retry_after})
        if kind == "dupe":  # accepted and awaited, connection lost; the same id again is a 409
            if attempt > 1:
                return self._error("duplicate_request", f"request id {rid!r} was already accepted")
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if kind == "drop" and attempt <= int(arg):  # drop/<failures>: cut the connection
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if kind == "slow":  # slow/<seconds>: answer after a pause
            await asyncio.sleep(float(arg))
        if kind == "garbage":  # a 200 that is not JSON
            return web.Response(text="not json")
        if kind == "cold":  # cold/<outcome>: 202, then a job
            job = self._new_job(arg, model)
            self.jobs[rid] = job
            return web.json_response(
                {"status": "provisioning", "job_id": rid, "machine_profile": "l4", "bundle": "b1",
                 "pool": "default", "estimated_wait_s": 42},
                status=202, headers={"Retry-After": self.accepted_retry_after, "Location": f"/v1/jobs/{rid}"})
        body = await request.json()
        return web.json_response(self._result(rid, model, body["items"], body.get("params")))

    @staticmethod
    def _result(rid: str, model: str, items: list[Any], params: Any = None) -> dict[str, Any]:
        return {"id": rid, "model": model, "items": [{"echo": it, "params": params} for it in items],
                "worker": "fake-worker-1", "timing": {"queue_ms": 1.0, "compute_ms": 2.0}}

    @staticmethod
    def _new_job(outcome: str, model: str) -> FakeJob:
        if outcome == "ok":
            return FakeJob(["queued", "running", "succeeded"], model)
        if outcome == "fail":
            return FakeJob(["queued", "failed"], model, {"code": "invalid_input", "message": "item 0 is empty"})
        if outcome == "expire":
            return FakeJob(["queued", "expired"], model)
        if outcome == "late":  # the queued record appears only after a while
            return FakeJob(["queued", "succeeded"], model, missing_polls=2)
        return FakeJob(["queued"], model)  # "never"

    async def _job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs.get(job_id)
        if job is None or job.missing_polls > 0:
            if job is not None:
                job.missing_polls -= 1
            return self._error("unknown_job", f"no job {job_id!r}")
        state = job.states[min(job.polls, len(job.states) - 1)]
        job.polls += 1
        result: Any = None
        if state == "succeeded":
            result = self._result(job_id, job.model, [{"text": "queued"}])
        elif state == "failed" and job.error:
            result = {"error": job.error}
        return web.json_response({"id": job_id, "state": state, "result": result, "model": job.model,
                                  "pool": "default", "machine_profile": "l4", "bundle": "b1",
                                  "updated_at": 1795433346.3})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": ["BAAI/bge-m3"], "details": [{
            "id": "BAAI/bge-m3", "operations": ["encode"], "machine_profiles": ["l4", "h100"],
            "default_machine_profile": "l4", "bundles": ["b1"], "profiles": ["sparse"]}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # pools: just enough of the contract to drive the SDK's renewal task
    async def _create_pool(self, request: web.Request) -> web.Response:
        body = await request.json()
        view = {"name": body["name"], "tenant": "fake", "models": body.get("models", []), "gpus": body["gpus"],
                "ttl_seconds": body.get("ttl_seconds", 3600), "expires_at": "2026-11-24T13:20:00.000000Z",
                "state": "active", "workers": {p: {"reserved": n, "ready": 0} for p, n in body["gpus"].items()}}
        self.pools[body["name"]] = view
        return web.json_response(view, status=201)

    async def _list_pools(self, request: web.Request) -> web.Response:
        return web.json_response({"pools": list(self.pools.values())})

    async def _get_pool(self, request: web.Request) -> web.Response:
        view = self.pools.get(request.match_info["name"])
        return web.json_response(view) if view else self._error("unknown_pool", "no such pool")

    async def _renew_pool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.renewals[name] += 1
        script = self.renew_script.get(name) or ["ok"]
        code = script.pop(0) if len(script) > 1 else script[0]
        if code != "ok":
            return self._error(code, f"fake renewal says {code}")
        return web.json_response(self.pools[name])

    async def _delete_pool(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "default":
            return self._error("pool_protected", "the default pool cannot be deleted")
        if self.pools.pop(name, None) is None:
            return self._error("unknown_pool", "no such pool")
        return web.json_response({"name": name, "deleted": True})

    async def _resolve(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"model": body["model"], "bundle": "b1",
                                  "machine_profile": body.get("machine_profile", "l4"),
                                  "pool": body.get("pool", "default"), "pinned_pool": "pool" in body})


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    gw = FakeGateway().start()
    yield gw
    gw.stop()


@pytest.fixture
async def client(gateway: FakeGateway) -> Any:
    # Small retry pauses keep the tests fast; the Retry-After cap is exercised below.
    async with AsyncClient(gateway.url, API_KEY, timeout=10, retry_backoff=0.01, max_retry_delay=0.05) as c:
        yield c


# --------------------------------------------------------------------------- 200s

async def test_infer_ok_sends_contract_headers_and_body(client: AsyncClient, gateway: FakeGateway) -> None:
    out = await client.encode("BAAI/bge-m3:sparse", ["a", {"text": "b", "lang": "en"}],
                              params={"normalize": True}, gpu="tenant-abc/l4", bundle="b1",
                              request_id="req-123")
    assert isinstance(out, InferenceResult)
    assert out.request_id == "req-123" and out.id == "req-123"
    assert out.model == "BAAI/bge-m3:sparse" and out.worker == "fake-worker-1"
    assert out.timing == {"queue_ms": 1.0, "compute_ms": 2.0}
    assert [i["echo"] for i in out.items] == [{"text": "a"}, {"text": "b", "lang": "en"}]
    assert len(out) == 2
    seen = gateway.requests_to("/v1/encode/")[0]
    assert seen.path == "/v1/encode/BAAI/bge-m3:sparse"
    assert seen.headers["Authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["X-Request-ID"] == "req-123"
    assert seen.headers["X-Machine-Profile"] == "tenant-abc/l4"  # the gateway splits pool/profile
    assert seen.headers["X-Bundle"] == "b1" and "X-Pool" not in seen.headers
    assert seen.body == {"items": [{"text": "a"}, {"text": "b", "lang": "en"}], "params": {"normalize": True}}


async def test_request_id_generated_and_echoed(client: AsyncClient, gateway: FakeGateway) -> None:
    out = await client.score("m/x", "only one")
    sent = gateway.requests_to("/v1/score/")[0].headers["X-Request-ID"]
    assert sent and out.request_id == sent
    assert gateway.requests_to("/v1/score/")[0].body["items"] == [{"text": "only one"}]


async def test_generate_single_dict_item_and_pool_header(client: AsyncClient, gateway: FakeGateway) -> None:
    await client.generate("org/llm", {"prompt": "hi"}, pool="tenant-abc", gpu="h100")
    seen = gateway.requests_to("/v1/generate/")[0]
    assert seen.body["items"] == [{"prompt": "hi"}]
    assert seen.headers["X-Pool"] == "tenant-abc" and seen.headers["X-Machine-Profile"] == "h100"


def test_items_normalization() -> None:
    assert normalize_items("x") == [{"text": "x"}]
    assert normalize_items({"a": 1}) == [{"a": 1}]
    assert normalize_items(["x", {"a": 1}]) == [{"text": "x"}, {"a": 1}]
    assert normalize_items(("x",)) == [{"text": "x"}]
    assert normalize_items([]) == []
    with pytest.raises(TypeError, match=r"items\[1\]"):
        normalize_items(["x", 3])
    with pytest.raises(TypeError):
        normalize_items(42)


# --------------------------------------------------------------------------- errors

CONTRACT_ERRORS: list[tuple[str, type[SwitchyardError]]] = [
    ("bad_request", BadRequest), ("invalid_json", BadRequest), ("invalid_request_id", BadRequest),
    ("unsupported_operation", BadRequest), ("unknown_machine_profile", BadRequest),
    ("unauthorized", Unauthorized), ("forbidden", Forbidden),
    ("unknown_model", UnknownModel), ("unknown_pool", UnknownPool), ("unknown_job", UnknownJob),
    ("incompatible_bundle", IncompatibleBundle), ("duplicate_request", DuplicateRequest),
    ("payload_too_large", PayloadTooLarge), ("invalid_input", InvalidInput),
    ("worker_error", WorkerError), ("no_capacity", NoCapacity), ("queue_unavailable", QueueUnavailable),
    ("not_ready", NotReady), ("deadline_exceeded", DeadlineExceeded), ("internal", ServerError),
    ("queue_full", Unavailable), ("pool_exists", PoolExists), ("pool_protected", PoolProtected),
    ("too_many_pools", TooManyPools), ("pool_too_large", PoolTooLarge), ("pool_expired", PoolExpired),
    ("pools_unavailable", Unavailable), ("job_not_finished", JobNotFinished),
    ("deadline_unreachable", DeadlineUnreachable),
]


@pytest.mark.parametrize(("code", "cls"), CONTRACT_ERRORS)
async def test_error_code_maps_to_type(client: AsyncClient, gateway: FakeGateway, code: str,
                                       cls: type[SwitchyardError]) -> None:
    client.retry = RetryPolicy(max_retries=1, backoff=0.01, max_delay=0.01)
    with pytest.raises(cls) as info:
        await client.encode(f"err/{code}", "x", request_id="rid-1")
    err = info.value
    assert type(err) is cls
    assert (err.status, err.code, err.message, err.request_id) == (STATUS[code], code,
                                                                     f"fake gateway says {code}", "rid-1")
    assert code in str(err) and "rid-1" in str(err)
    if err.status == 503:
        assert isinstance(err, Unavailable) and err.retry_after == 1.0


def test_error_families() -> None:
    assert issubclass(UnknownModel, NotFound) and issubclass(UnknownJob, NotFound)
    assert issubclass(DuplicateRequest, Conflict) and issubclass(IncompatibleBundle, Conflict)
    assert issubclass(NoCapacity, Unavailable) and issubclass(QueueUnavailable, Unavailable)
    assert issubclass(CapacityTimeout, SwitchyardError) and issubclass(TransportError, SwitchyardError)


@pytest.mark.parametrize(("code", "status", "cls"), [
    ("brand_new_404", 404, NotFound), ("brand_new_503", 503, Unavailable),
    ("brand_new_500", 500, ServerError), ("teapot", 418, SwitchyardError),
])
async def test_unknown_code_maps_by_status(client: AsyncClient, code: str, status: int,
                                           cls: type[SwitchyardError]) -> None:
    with pytest.raises(SwitchyardError) as info:
        await client.encode(f"err/{code}/{status}", "x")
    assert type(info.value) is cls and info.value.code == code and info.value.status == status


@pytest.mark.parametrize(("status", "cls"), [(502, WorkerError), (404, NotFound), (500, ServerError)])
async def test_non_json_error_body(client: AsyncClient, gateway: FakeGateway, status: int,
                                   cls: type[SwitchyardError]) -> None:
    with pytest.raises(SwitchyardError) as info:
        await client.encode(f"raw/{status}", "x", request_id="rid-raw")
    err = info.value
    assert type(err) is cls and err.status == status and err.code == f"http_{status}"
    assert "without a Switchyard error body" in err.message and "upstream broke" in err.message
    assert err.request_id == "rid-raw"


def test_errors_pickle() -> None:
    err = pickle.loads(pickle.dumps(NoCapacity(503, "no_capacity", "none", "r1", retry_after=2.0)))
    assert (type(err), err.status, err.code, err.request_id, err.retry_after) == (NoCapacity, 503, "no_capacity",
                                                                                   "r1", 2.0)
    timeout = pickle.loads(pickle.dumps(CapacityTimeout("job-1", 3.0, "queued")))
    assert timeout.job_id == "job-1" and "job-1" in str(timeout)


async def test_wrong_api_key(gateway: FakeGateway) -> None:
    async with AsyncClient(gateway.url, "wrong") as c:
        with pytest.raises(Unauthorized):
            await c.encode("m/x", "x")
    async with AsyncClient(gateway.url) as c:  # no key: no Authorization header at all
        with pytest.raises(Unauthorized):
            await c.encode("m/x", "x")
    assert "Authorization" not in gateway.seen[-1].headers


# --------------------------------------------------------------------------- retries

@pytest.mark.parametrize("code", ["queue_unavailable", "not_ready"])
async def test_503_retried_with_same_request_id(client: AsyncClient, gateway: FakeGateway, code: str) -> None:
    out = await client.encode(f"flaky/{code}/2/0", "x")
    attempts = gateway.requests_to("/v1/encode/")
    assert len(attempts) == 3
    ids = {s.headers["X-Request-ID"] for s in attempts}
    assert len(ids) == 1 and out.request_id in ids


async def test_503_retries_are_bounded(client: AsyncClient, gateway: FakeGateway) -> None:
    with pytest.raises(NotReady) as info:
        await client.encode("flaky/not_ready/99/0", "x")
    assert len(gateway.requests_to("/v1/encode/")) == 1 + client.retry.max_retries
    assert info.value.retry_after == 0.0


@pytest.mark.parametrize("code", ["bad_request", "unauthorized", "unknown_model", "duplicate_request",
                                  "invalid_input", "no_capacity", "worker_error"])
async def test_not_retried(client: AsyncClient, gateway: FakeGateway, code: str) -> None:
    with pytest.raises(SwitchyardError):
        await client.encode(f"err/{code}", "x")
    assert len(gateway.requests_to("/v1/encode/")) == 1


async def test_retry_after_is_honoured(gateway: FakeGateway) -> None:
    async with AsyncClient(gateway.url, API_KEY, max_retry_delay=5) as c:
        t0 = time.monotonic()
        await c.encode("flaky/queue_unavailable/1/0.3", "x")
        assert time.monotonic() - t0 >= 0.3


async def test_retry_after_is_capped(gateway: FakeGateway) -> None:
    async with AsyncClient(gateway.url, API_KEY, max_retry_delay=0.05) as c:
        t0 = time.monotonic()
        await c.encode("flaky/queue_unavailable/2/30", "x")  # the gateway asks for 30 s
        assert time.monotonic() - t0 < 2


async def test_dropped_connection_retried_with_same_request_id(client: AsyncClient,
                                                               gateway: FakeGateway) -> None:
    out = await client.encode("drop/1", "x")
    attempts = gateway.requests_to("/v1/encode/")
    assert len(attempts) == 2
    assert attempts[0].headers["X-Request-ID"] == attempts[1].headers["X-Request-ID"] == out.request_id


async def test_resend_answered_duplicate_request_explains(client: AsyncClient, gateway: FakeGateway) -> None:
    with pytest.raises(DuplicateRequest) as info:
        await client.encode("dupe/x", "x", request_id="rid-dupe")
    assert len(gateway.requests_to("/v1/encode/")) == 2
    assert "lost its connection" in str(info.value) and info.value.request_id == "rid-dupe"
    assert isinstance(info.value.__cause__, TransportError)


async def test_unreachable_gateway_raises_transport_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncClient(f"http://127.0.0.1:{port}", max_retries=2, retry_backoff=0.01) as c:
        with pytest.raises(TransportError) as info:
            await c.encode("m/x", "x", request_id="rid-conn")
    assert info.value.status == 0 and info.value.request_id == "rid-conn"
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)


async def test_request_timeout_is_not_retried(gateway: FakeGateway) -> None:
    # A timeout well above a loaded machine's request latency, far below the handler's sleep: the
    # request surely reached the gateway (0.2 s let it time out first in a full run under load).
    async with AsyncClient(gateway.url, API_KEY, timeout=1.0) as c:
        with pytest.raises(RequestTimeout) as info:
            await c.encode("slow/2", "x", request_id="rid-slow")
    assert info.value.request_id == "rid-slow" and isinstance(info.value, TransportError)
    assert len(gateway.requests_to("/v1/encode/")) == 1  # the gateway may still be working on it


async def test_non_json_success_body(client: AsyncClient) -> None:
    with pytest.raises(SwitchyardError) as info:
        await client.encode("garbage/x", "x")
    assert info.value.code == "invalid_response" and "not json" in info.value.message


def test_retry_policy_and_retry_after_parsing() -> None:
    policy = RetryPolicy(max_retries=3, backoff=1.0, max_delay=3.0)
    assert policy.delay(1, 10.0) == 3.0 and policy.delay(1, 0.5) == 0.5
    assert 0.8 <= policy.delay(1, None) <= 1.2 and policy.delay(5, None) == 3.0
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None and parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    delays = poll_delays(30.0, 2.0)
    assert [next(delays) for _ in range(3)] == [2.0, 2.0, 2.0]  # a 30 s hint is polled at the cap
    delays = poll_delays(None, 2.0)
    first = [next(delays) for _ in range(8)]
    assert first[0] == 0.25 and first == sorted(first) and first[-1] == 2.0


# --------------------------------------------------------------------------- 202 and jobs

async def test_202_without_wait_returns_accepted(client: AsyncClient, gateway: FakeGateway) -> None:
    out = await client.encode("cold/ok", "x", request_id="job-a")
    assert isinstance(out, Accepted)
    assert (out.job_id, out.status, out.estimated_wait_s, out.retry_after) == ("job-a", "provisioning", 42.0, 1.0)
    assert (out.machine_profile, out.bundle, out.pool) == ("l4", "b1", "default")
    assert out.location == "/v1/jobs/job-a" and out.request_id == "job-a"
    assert gateway.requests_to("/v1/jobs/") == []  # no polling unless asked
    job = await client.job("job-a")
    assert job.state == "queued" and not job.done and job.result is None
    assert (job.model, job.pool, job.machine_profile, job.bundle, job.updated_at) == (
        "cold/ok", "default", "l4", "b1", 1795433346.3)
    with pytest.raises(SwitchyardError, match="not finished"):
        job.unwrap()
    result = await client.wait_for_job(out, timeout=5, poll_interval=0.02)
    assert result.job_id == "job-a" and result.items


async def test_202_wait_for_capacity_polls_until_succeeded(client: AsyncClient, gateway: FakeGateway) -> None:
    gateway.accepted_retry_after = "30"  # capped by poll_interval
    t0 = time.monotonic()
    out = await client.encode("cold/ok", "x", wait_for_capacity=True, poll_interval=0.02)
    assert time.monotonic() - t0 < 5
    assert isinstance(out, InferenceResult) and out.job_id == out.request_id
    assert out.items == [{"echo": {"text": "queued"}, "params": None}]
    polls = gateway.requests_to("/v1/jobs/")
    assert len(polls) == 3 and all(p.path == f"/v1/jobs/{out.job_id}" for p in polls)


@pytest.mark.parametrize(("outcome", "cls", "code"), [("fail", InvalidInput, "invalid_input"),
                                                      ("expire", DeadlineExceeded, "deadline_exceeded")])
async def test_202_final_failure_raises_typed_error(client: AsyncClient, outcome: str,
                                                    cls: type[SwitchyardError], code: str) -> None:
    with pytest.raises(cls) as info:
        await client.encode(f"cold/{outcome}", "x", request_id="job-f", wait_for_capacity=True,
                            poll_interval=0.02)
    assert info.value.code == code and info.value.request_id == "job-f" and info.value.status == STATUS[code]
    if outcome == "fail":
        assert info.value.message == "item 0 is empty"


async def test_capacity_timeout_then_poll_later(client: AsyncClient, gateway: FakeGateway) -> None:
    t0 = time.monotonic()
    with pytest.raises(CapacityTimeout) as info:
        await client.encode("cold/never", "x", request_id="job-slow", wait_for_capacity=True,
                            capacity_timeout=0.3, poll_interval=0.05)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 3
    err = info.value
    assert err.job_id == "job-slow" and err.state == "queued" and "job-slow" in str(err)
    assert len(gateway.requests_to("/v1/jobs/")) >= 3
    gateway.finish("job-slow")  # the job kept running server side
    result = await client.wait_for_job("job-slow", timeout=5, poll_interval=0.02)
    assert result.job_id == "job-slow"


async def test_wait_tolerates_late_job_record_after_202(client: AsyncClient) -> None:
    out = await client.encode("cold/late", "x", wait_for_capacity=True, poll_interval=0.02)
    assert isinstance(out, InferenceResult)


async def test_unknown_job(client: AsyncClient) -> None:
    with pytest.raises(UnknownJob):
        await client.job("nope")
    with pytest.raises(UnknownJob):  # a bare id is not known to exist: fail fast
        await client.wait_for_job("nope", timeout=5)


# --------------------------------------------------------------------------- discovery

async def test_models_health_resolve(client: AsyncClient, gateway: FakeGateway) -> None:
    (model,) = await client.models()
    assert model.id == "BAAI/bge-m3" and model.default_machine_profile == "l4"
    assert model.machine_profiles == ["l4", "h100"] and model.profiles == ["sparse"]
    assert await client.health() == {"status": "ok"}
    lane = await client.resolve("BAAI/bge-m3", "encode", gpu="h100", pool="tenant-abc")
    assert lane["machine_profile"] == "h100" and lane["pinned_pool"] is True
    assert gateway.requests_to("/v1/configs/resolve")[0].body == {
        "model": "BAAI/bge-m3", "op": "encode", "machine_profile": "h100", "pool": "tenant-abc"}


async def test_borrowed_session_is_not_closed(gateway: FakeGateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with AsyncClient(gateway.url, API_KEY, session=session) as c:
            await c.encode("m/x", "x")
        assert not session.closed
        with pytest.raises(RuntimeError, match="closed"):
            await c.encode("m/x", "x")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AsyncClient("gateway:8080")


# --------------------------------------------------------------------------- sync client

def test_sync_client_from_plain_sync_code(gateway: FakeGateway) -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # really no loop here
    with Client(gateway.url, API_KEY, timeout=10) as sy:
        out = sy.encode("BAAI/bge-m3", ["a", "b"], request_id="sync-1")
        assert isinstance(out, InferenceResult) and out.request_id == "sync-1" and len(out.items) == 2
        waited = sy.infer("encode", "cold/ok", "x", wait_for_capacity=True, poll_interval=0.02)
        assert isinstance(waited, InferenceResult) and waited.job_id
        with pytest.raises(UnknownModel) as info:
            sy.encode("err/unknown_model", "x")
        assert info.value.code == "unknown_model"
        assert sy.health() == {"status": "ok"}
        assert sy.models()[0].id == "BAAI/bge-m3"
        assert sy.job(waited.job_id).state == "succeeded"
        thread = sy._thread
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        sy.encode("m/x", "x")


def test_sync_client_from_many_threads(gateway: FakeGateway) -> None:
    with Client(gateway.url, API_KEY) as sy:
        results: list[Any] = []

        def work(i: int) -> None:
            results.append(sy.encode("m/x", f"t{i}", request_id=f"thr-{i}").request_id)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == sorted(f"thr-{i}" for i in range(8))


async def test_sync_client_inside_a_running_loop(gateway: FakeGateway) -> None:
    # Blocking, but it must neither deadlock nor complain about the running loop.
    sy = Client(gateway.url, API_KEY)
    try:
        assert sy.score("m/x", "x").items
    finally:
        sy.close()


def test_sync_client_signatures_match_async() -> None:
    import inspect
    for name in ("infer", "encode", "wait_for_job", "resolve"):
        assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name))
    assert Client.infer.__doc__ == AsyncClient.infer.__doc__


def test_a_worker_error_carries_its_error_id() -> None:
    from switchyard.client.errors import error_from_response
    body = b'{"error": {"code": "worker_error", "message": "the handler failed", "error_id": "e1f2"}}'
    err = error_from_response(502, body, {"X-Request-ID": "rid-9"})
    assert type(err) is WorkerError and err.error_id == "e1f2" and err.request_id == "rid-9"


# --------------------------------------------------------------------------- pools


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_pool_calls_and_their_paths(client: AsyncClient, gateway: FakeGateway) -> None:
    info = await client.create_pool("team-a", {"l4": 2}, models=["BAAI/bge-m3"], ttl_s=600, renew=False)
    assert isinstance(info, PoolInfo) and info.active and info.reserved("l4") == 2 and info.ready() == 0
    assert gateway.requests_to("/v1/pools")[0].body == {"name": "team-a", "gpus": {"l4": 2},
                                                         "models": ["BAAI/bge-m3"], "ttl_seconds": 600}
    assert (await client.get_pool("team-a")).gpus == {"l4": 2}
    assert [p.name for p in await client.list_pools()] == ["team-a"]
    assert (await client.renew_pool("team-a")).name == "team-a"
    await client.delete_pool("team-a")
    with pytest.raises(UnknownPool):
        await client.get_pool("team-a")
    with pytest.raises(PoolProtected):
        await client.delete_pool("default")
    with pytest.raises(ValueError):
        await client.get_pool("../jobs/x")  # a name never turns into another path
    assert client.renewing() == []


async def test_pool_renewal_survives_failed_renewals_and_stops_on_delete(client: AsyncClient,
                                                                         gateway: FakeGateway) -> None:
    # ttl 1 s: renewals every 1/3 s; the first two fail (a 500, then a lost NATS), the rest succeed.
    gateway.renew_script["busy"] = ["internal", "pools_unavailable", "ok"]
    client.retry = RetryPolicy(max_retries=0)
    await client.create_pool("busy", {"l4": 1}, ttl_s=1)
    task = client._renewers["busy"]
    await _until(lambda: gateway.renewals["busy"] >= 4, 15, "renewals after two failures")
    assert not task.done() and client.renewing() == ["busy"]
    await client.delete_pool("busy")
    assert task.cancelled() and client.renewing() == []
    assert (gateway.seen[-1].method, gateway.seen[-1].path) == ("DELETE", "/v1/pools/busy")


async def test_pool_renewal_ends_when_the_pool_expired(client: AsyncClient, gateway: FakeGateway) -> None:
    gateway.renew_script["lapsed"] = ["pool_expired"]
    await client.create_pool("lapsed", {"l4": 1}, ttl_s=1)
    task = client._renewers.get("lapsed")
    assert task is not None
    await _until(task.done, 15, "the renewal task to give up")
    assert not task.cancelled() and task.exception() is None and client.renewing() == []


async def test_close_cancels_pool_renewals(gateway: FakeGateway) -> None:
    sy = AsyncClient(gateway.url, API_KEY)
    await sy.create_pool("a", {"l4": 1}, ttl_s=30)
    await sy.create_pool("b", {"l4": 1}, ttl_s=30)
    tasks = list(sy._renewers.values())
    await sy.close()
    assert all(t.cancelled() for t in tasks) and sy.renewing() == []


def test_sync_client_pool_renewal_leaks_no_thread(gateway: FakeGateway) -> None:
    before = set(threading.enumerate())
    for _ in range(3):
        sy = Client(gateway.url, API_KEY)
        sy.create_pool("renewed", {"l4": 1}, ttl_s=1)
        assert sy.renewing() == ["renewed"]
        deadline = time.monotonic() + 15
        while gateway.renewals["renewed"] < 2:  # renewed in the background, between calls
            assert time.monotonic() < deadline, "never renewed"
            time.sleep(0.05)
        gateway.renewals["renewed"] = 0
        sy.close()
    assert set(threading.enumerate()) - before == set(), "a thread outlived close()"


def test_sync_client_pool_methods_match_async() -> None:
    import inspect
    for name in ("create_pool", "get_pool", "list_pools", "renew_pool", "delete_pool"):
        assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name))
