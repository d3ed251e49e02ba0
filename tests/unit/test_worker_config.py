from __future__ import annotations

import os
import socket

import pytest

from switchyard.subjects import Lane
from switchyard.worker import WorkerConfig, default_worker_id, kv_key
from switchyard.worker.handlers import echo


def test_kv_key_keeps_only_kv_characters() -> None:
    assert kv_key("gpu-7.node_a=b") == "gpu-7.node_a=b"
    assert kv_key("pod/x:y z") == "pod_x_y_z"
    assert kv_key(".edge.") == "edge"
    assert kv_key("ü") == "_"
    assert kv_key("...") == "worker"


def test_default_worker_id_is_host_pid_random() -> None:
    a, b = default_worker_id(), default_worker_id()
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-") and a != b


def test_model_and_models_merge_in_order() -> None:
    cfg = WorkerConfig(nats_url="nats://x", handler=echo, model="a", models=["b", "a", "c"])
    assert cfg.models == ["a", "b", "c"] and cfg.model == "a"
    only_list = WorkerConfig(nats_url="nats://x", handler=echo, models=["m"])
    assert only_list.model == "m"
    assert [lane.model for lane in cfg.lanes] == ["a", "b", "c"]
    assert cfg.lanes[0] == Lane(model="a", bundle="default", machine_profile="cpu", pool="default")


def test_defaults() -> None:
    cfg = WorkerConfig(nats_url="nats://x", handler=echo, model="m")
    assert (cfg.bundle, cfg.machine_profile, cfg.pool, cfg.concurrency, cfg.ack_wait_s,
            cfg.heartbeat_interval_s, cfg.drain_timeout_s) == ("default", "cpu", "default", 4, 30.0, 2.0, 30.0)
    assert cfg.heartbeat_key == kv_key(cfg.worker_id)


@pytest.mark.parametrize("kw, err", [
    ({}, ValueError),
    ({"model": "m", "concurrency": 0}, ValueError),
    ({"model": "m", "handler": "mod:fn"}, TypeError),
])
def test_invalid(kw: dict, err: type) -> None:
    kw.setdefault("handler", echo)
    with pytest.raises(err):
        WorkerConfig(nats_url="nats://x", **kw)


def test_retry_delay_is_exponential_and_capped() -> None:
    cfg = WorkerConfig(nats_url="nats://x", handler=echo, model="m", nak_delay_s=0.5, nak_max_delay_s=3)
    assert [cfg.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3, 3]
