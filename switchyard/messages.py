"""Messages on NATS, all msgpack maps with a version field `v`.

WorkItem  gateway -> stream -> worker
Result    worker  -> gateway inbox (core NATS), and into the jobs bucket when kept
Chunk     worker  -> gateway inbox (core NATS): one piece of a streamed result (item.stream)
Heartbeat worker  -> workers bucket, key = worker id
JobRecord gateway/worker -> jobs bucket, key = <tenant>.<request id> (subjects.job_key)
UsageRecord worker -> usage ledger (subjects.usage_subject), one per finished attempt
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import msgpack

from .contracts import FINAL_STATES
from .subjects import DEFAULT_CLASS, job_key

VERSION = 1



_NAMES: dict[type, tuple[str, ...]] = {}  # a dataclass's field names, read once per class (hot path)


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


def as_dict(obj: Any) -> dict[str, Any]:
    """Shallow, unlike dataclasses.asdict, which deep-copies every item (hot path)."""
    return {name: getattr(obj, name) for name in _names(type(obj))}


def _pack(obj: Any) -> bytes:
    return msgpack.packb({"v": VERSION, **as_dict(obj)}, use_bin_type=True)


def _unpack(cls: Any, raw: bytes) -> Any:
    data = msgpack.unpackb(raw, raw=False)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError(f"unsupported {cls.__name__} message (v={data.get('v') if isinstance(data, dict) else '?'})")
    names = _names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class WorkItem:
    id: str
    op: str
    model: str
    bundle: str
    machine_profile: str
    pool: str
    items: list[Any]
    params: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    deadline: float = 0.0  # unix seconds; 0 = none
    reply: str | None = None  # gateway inbox subject; None when nobody waits
    attempt: int = 1  # the worker overwrites it from the delivery count
    max_attempts: int = 3
    keep_result: bool = False  # write the outcome into the jobs bucket
    enqueued_at: float = field(default_factory=time.time)
    tenant: str = ""  # who sent it: scopes the dedup id and the job record
    # W3C trace context of the gateway's publish span ({"traceparent", "tracestate"?}); None with
    # tracing off, and then not on the wire at all. Untrusted on decode: see switchyard/tracing.py.
    trace_context: dict[str, str] | None = None
    # The gateway streams the result: chunks go to `reply` as the handler yields them, and the
    # worker listens for a cancel on subjects.cancel_subject(reply). Not on the wire when False.
    stream: bool = False
    # Its priority class (subjects.PRIORITY_CLASSES), also a token of the subject it waits on. Not on the
    # wire when normal.
    priority: str = DEFAULT_CLASS
    # The name (never the secret) of the API key that sent it, for the usage ledger. Not on the wire
    # when empty (anonymous requests, items queued before the field existed).
    key_name: str = ""

    @property
    def key(self) -> str:
        """Nats-Msg-Id and jobs-bucket key."""
        return job_key(self.tenant, self.id)

    def encode(self) -> bytes:
        data = {"v": VERSION, **as_dict(self)}
        if self.trace_context is None:
            del data["trace_context"]  # tracing off adds nothing to the item
        if not self.stream:
            del data["stream"]
        if self.priority == DEFAULT_CLASS:
            del data["priority"]
        if not self.key_name:
            del data["key_name"]
        return msgpack.packb(data, use_bin_type=True)

    @classmethod
    def decode(cls, raw: bytes) -> WorkItem:
        return _unpack(cls, raw)

    def expired(self, now: float | None = None) -> bool:
        return bool(self.deadline) and (now or time.time()) > self.deadline


@dataclass(slots=True)
class Result:
    id: str
    ok: bool
    items: list[Any] | None = None
    error: dict[str, str] | None = None  # {"code", "message", "error_id"?}
    worker: str = ""
    attempt: int = 1
    state: str = "succeeded"  # succeeded | failed | expired | cancelled
    timing: dict[str, float] = field(default_factory=dict)  # queue_ms, compute_ms
    usage: dict[str, int] | None = None  # token counts the handler put in ctx.usage (input_tokens, output_tokens)

    def encode(self) -> bytes:
        return _pack(self)

    @classmethod
    def decode(cls, raw: bytes) -> Result:
        return _unpack(cls, raw)


@dataclass(slots=True)
class Chunk:
    """One message of a streamed result, on the item's reply inbox.

    `seq` counts from 0 within one attempt. The last message of an attempt has `final` set,
    no payload, and `seq` = the number of data chunks before it, so a gap is visible even
    at the end; it carries `error` when the handler failed mid-stream, and `usage`.
    A redelivered item streams again from seq 0 with a higher `attempt`.
    """

    id: str
    seq: int
    payload: Any = None
    final: bool = False
    error: dict[str, str] | None = None  # {"code", "message", "error_id"?}; only on the final chunk
    attempt: int = 1
    worker: str = ""
    usage: dict[str, int] | None = None  # on the final chunk
    # first_ms (handler start to its first chunk) on seq 0; queue_ms, compute_ms on the final one
    timing: dict[str, float] = field(default_factory=dict)

    def encode(self) -> bytes:
        return msgpack.packb({"v": VERSION, "chunk": True, **as_dict(self)}, use_bin_type=True)

    @classmethod
    def decode(cls, raw: bytes) -> Chunk:
        return _unpack(cls, raw)


def decode_reply(raw: bytes) -> Result | Chunk:
    """What a streamed item's inbox receives: chunks, or one Result (a non-generator handler, or
    an item that ended before it ran: expired, out of attempts)."""
    data = msgpack.unpackb(raw, raw=False)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError("unsupported reply message")
    cls: Any = Chunk if data.get("chunk") else Result
    names = _names(cls)
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class Heartbeat:
    worker_id: str
    models: list[str]
    bundle: str
    machine_profile: str
    pool: str
    in_flight: int = 0
    healthy: bool = True
    started_at: float = 0.0
    interval_s: float = 2.0
    host: str = ""  # pod name in Kubernetes: matched against the worker Service's EndpointSlices
    draining: bool = False  # stopping: finishes what it holds, takes nothing new; gateways drop it at once
    concurrency: int = 0  # items it runs at once (0 from workers older than this field): GET /v1/capacity
    holders: dict[str, int] | None = None  # tenant -> items of theirs in flight here (admin view of capacity)

    def encode(self) -> bytes:
        return _pack(self)

    @classmethod
    def decode(cls, raw: bytes) -> Heartbeat:
        return _unpack(cls, raw)


@dataclass(slots=True)
class JobRecord:
    id: str
    state: str  # JobState
    model: str = ""
    pool: str = ""
    machine_profile: str = ""
    bundle: str = ""
    result: dict[str, Any] | None = None  # the Result as a dict once final
    updated_at: float = field(default_factory=time.time)
    tenant: str = ""
    deadline: float = 0.0  # the item's; a record still open after it is reported expired
    kind: str = "item"  # "item": one work item; "plan": a Planner run (its steps live in RUNS_BUCKET)
    created_at: float = 0.0  # when the gateway accepted it (0 in records written before this field)
    op: str = ""  # the operation (a plan: the Planner's name)
    attempt: int = 0  # the delivery that wrote it (running or final); 0 while queued
    started_at: float = 0.0  # when its last attempt started running
    # Earlier outcomes of a dead letter that was re-queued ({"state", "error", "attempt", "worker", "at"}).
    history: list[dict[str, Any]] | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def encode(self) -> bytes:
        return _pack(self)

    @classmethod
    def decode(cls, raw: bytes) -> JobRecord:
        return _unpack(cls, raw)


@dataclass(slots=True)
class UsageRecord:
    """What one attempt of one work item used: appended by the worker that ran it to the usage ledger.

    Every attempt that a worker finished is a record, the retried ones included (they held the GPU too);
    `final` marks the attempt that ended the item, so an item counts as a request once. The ledger stores
    it once whatever the retries of the publish (Nats-Msg-Id = `msg_id`). An attempt whose worker died
    mid-item leaves no record: nobody measured it. An item is one accepted submission, `item_key`: a
    request id reused once its dedup window passed, or a re-queued dead letter, is another item, whose
    attempts count again from 1.
    """

    id: str  # the request id
    tenant: str
    key_name: str  # the API key's name ("" when anonymous)
    op: str
    model: str
    bundle: str
    machine_profile: str
    pool: str
    attempt: int
    final: bool  # this attempt ended the item (succeeded, failed for good, expired, cancelled)
    state: str  # succeeded | failed | expired | cancelled | retried
    items: int  # inputs in the item
    input_tokens: int = 0
    output_tokens: int = 0
    compute_s: float = 0.0  # the handler's wall time in this attempt (0 when it never ran)
    gpus: float = 0.0  # GPUs the worker holds (its --gpus)
    worker: str = ""
    at: float = field(default_factory=time.time)  # when the attempt ended (the worker's clock)
    enqueued_at: float = 0.0  # the item's WorkItem.enqueued_at, set once by the gateway that queued it

    @property
    def gpu_seconds(self) -> float:
        return self.compute_s * self.gpus

    @property
    def item_key(self) -> str:
        return f"{job_key(self.tenant, self.id)}@{round(self.enqueued_at * 1e6)}"

    @property
    def msg_id(self) -> str:
        return f"{self.item_key}.{self.attempt}"

    def encode(self) -> bytes:
        return _pack(self)

    @classmethod
    def decode(cls, raw: bytes) -> UsageRecord:
        return _unpack(cls, raw)
