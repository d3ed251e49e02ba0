"""Worker configuration and identity."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..runtime import Backoff
from ..settings import load
from ..subjects import Lane
from .settings import WorkerSettings

_KEY_BAD = re.compile(r"[^-_=.a-zA-Z0-9]")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def default_host() -> str:
    """The pod name in Kubernetes (POD_NAME from the downward API, else the hostname, which is the pod name)."""
    return load(WorkerSettings).pod_name or socket.gethostname()


DEVICE_VARIABLES = ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")


def visible_gpus(env: dict[str, str] | None = None) -> float:
    """GPUs this process was given, from the device list the NVIDIA device plugin (or the user) set.

    `all` cannot be counted, and `none`/`void`/empty mean none: 0 then, so set --gpus instead.
    """
    env = dict(os.environ) if env is None else env
    for name in DEVICE_VARIABLES:
        value = env.get(name)
        if value is None:
            continue
        value = value.strip()
        if value.lower() in ("", "none", "void", "all", "nodevfiles"):
            return 0.0
        return float(len([d for d in value.split(",") if d.strip()]))
    return 0.0


def kv_key(worker_id: str) -> str:
    """A KV key for the worker id: only [-_=.a-zA-Z0-9], no leading/trailing dot."""
    key = _KEY_BAD.sub("_", worker_id).strip(".")
    return key or "worker"


@dataclass
class WorkerConfig:
    nats_url: str
    handler: Callable[..., Any]
    model: str | None = None
    models: list[str] = field(default_factory=list)  # serve several models (lanes) at once
    bundle: str = "default"
    machine_profile: str = "cpu"
    pool: str = "default"
    worker_id: str = field(default_factory=default_worker_id)
    host: str = field(default_factory=default_host)  # gateways match it against worker EndpointSlices
    concurrency: int = 4  # work items in flight, over all lanes
    ack_wait_s: float = 30.0  # used when this worker creates the lane consumer
    heartbeat_interval_s: float = 2.0
    drain_timeout_s: float = 30.0
    nak_delay_s: float = 1.0  # retry backoff base: nak_delay_s * 2**(attempt-1)
    nak_max_delay_s: float = 60.0
    name: str = "switchyard-worker"
    # GPUs this worker holds, for GPU-seconds in the usage ledger; None: counted from the device list
    # NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES (worker/usage.py), else 0.
    gpus: float | None = None

    def __post_init__(self) -> None:
        names = list(dict.fromkeys(([self.model] if self.model else []) + list(self.models)))
        if not names:
            raise ValueError("WorkerConfig needs a model (or models)")
        self.models = names
        self.model = names[0]
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.gpus is None:
            self.gpus = visible_gpus()
        if self.gpus < 0:
            raise ValueError("gpus must be >= 0")
        if not callable(self.handler):
            raise TypeError("handler must be callable (see load_handler for 'module:function')")

    @property
    def lanes(self) -> list[Lane]:
        return [Lane(model=m, bundle=self.bundle, machine_profile=self.machine_profile, pool=self.pool)
                for m in self.models]

    @property
    def heartbeat_key(self) -> str:
        return kv_key(self.worker_id)

    def retry_delay(self, attempt: int) -> float:
        return Backoff(self.nak_delay_s, self.nak_max_delay_s).delay(attempt)
