"""Python SDK for a Switchyard gateway.

    from switchyard.client import Client
    with Client("http://gateway:8080", api_key="...") as sy:
        out = sy.encode("BAAI/bge-m3", ["hello", "world"], gpu="l4", wait_for_capacity=True)
        vectors = out.items

`AsyncClient` is the asyncio twin with the same methods. See docs/client.md.
"""

from __future__ import annotations

from .async_client import AsyncClient
from .errors import (
    BadRequest,
    CapacityTimeout,
    Conflict,
    DeadlineExceeded,
    DeadlineUnreachable,
    DuplicateRequest,
    Forbidden,
    IncompatibleBundle,
    InvalidInput,
    JobCancelled,
    JobNotFinished,
    NoCapacity,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PoolExists,
    PoolExpired,
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
from .models import Accepted, Event, InferenceResult, Job, JobPage, ModelInfo, PoolInfo, UsageRow
from .sync_client import Client

__all__ = [
    "AsyncClient", "Client",
    "InferenceResult", "Accepted", "Job", "ModelInfo", "PoolInfo",
    "SwitchyardError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "UnknownModel",
    "UnknownPool", "UnknownJob", "Conflict", "IncompatibleBundle", "DuplicateRequest",
    "PayloadTooLarge", "InvalidInput", "ServerError", "WorkerError", "Unavailable", "NoCapacity",
    "QueueUnavailable", "NotReady", "DeadlineExceeded", "CapacityTimeout", "TransportError",
    "RequestTimeout", "PoolExists", "PoolExpired", "PoolProtected", "TooManyPools", "PoolTooLarge",
    "JobNotFinished", "DeadlineUnreachable", "JobCancelled", "JobPage", "Event", "UsageRow",
]
