from __future__ import annotations

import asyncio
import json
import logging

import pytest

from switchyard.logs import JsonFormatter
from switchyard.worker import PermanentError, TransientError
from switchyard.worker.cli import build_parser, config_from_args, main
from switchyard.worker.handlers import echo
from switchyard.worker.pull import Slots


def test_errors() -> None:
    p = PermanentError("bad text")
    assert (p.code, p.message, str(p)) == ("invalid_input", "bad text", "bad text")
    assert PermanentError("x", code="unsupported_operation").code == "unsupported_operation"
    t = TransientError("oom", retry_after=2.5)
    assert (t.message, t.retry_after) == ("oom", 2.5)


def test_log_lines_are_json_carrying_extra_fields() -> None:
    rec = logging.LogRecord("switchyard.worker", logging.WARNING, __file__, 1, "attempt failed", (), None)
    rec.request_id = "req-1"
    rec.error = 'CUDA "out" of memory'
    line = json.loads(JsonFormatter().format(rec))
    assert line["level"] == "warning" and line["logger"] == "switchyard.worker"
    assert line["msg"] == "attempt failed" and line["request_id"] == "req-1"
    assert line["error"] == 'CUDA "out" of memory'


def test_cli_args_to_config() -> None:
    args = build_parser().parse_args([
        "--nats", "nats://127.0.0.1:4333", "--model", "a", "--model", "b", "--bundle", "v2",
        "--machine-profile", "h100", "--pool", "team", "--handler", "switchyard.worker.handlers:echo",
        "--concurrency", "8", "--worker-id", "w1", "--drain-timeout", "5"])
    cfg = config_from_args(args)
    assert cfg.handler is echo and cfg.models == ["a", "b"] and cfg.worker_id == "w1"
    assert (cfg.nats_url, cfg.bundle, cfg.machine_profile, cfg.pool, cfg.concurrency, cfg.drain_timeout_s) == (
        "nats://127.0.0.1:4333", "v2", "h100", "team", 8, 5.0)


def test_cli_bad_handler_exits_2() -> None:
    assert main(["--model", "m", "--handler", "no_such_module_xyz:fn"]) == 2


def test_cli_requires_model_and_handler() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--handler", "a:b"])


async def test_slots_reserve_release() -> None:
    s = Slots(4)
    assert await s.reserve(3) == 3 and s.free() == 1
    assert await s.reserve(3) == 1 and s.free() == 0
    waiter = asyncio.create_task(s.reserve(2))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # full: waits for a release
    s.release(2)
    assert await asyncio.wait_for(waiter, 1) == 2
    s.take()  # a delivery beyond the credits still counts
    assert s.used == 5 and s.free() == -1
    s.release(0)
    assert s.used == 5
