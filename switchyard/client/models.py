"""Result objects returned by the clients. Each keeps the gateway's JSON in `raw`,
so fields the gateway adds later are reachable before this SDK names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..contracts import FINAL_STATES, JobState
from .errors import SwitchyardError, error_for

__all__ = ["InferenceResult", "Accepted", "Job", "JobPage", "JobState", "ModelInfo", "PoolInfo", "UsageRow",
           "FINAL_STATES"]



@dataclass(slots=True)
class InferenceResult:
    """A finished inference: one output per input item, in order."""

    id: str
    model: str
    items: list[Any]
    worker: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    request_id: str | None = None
    job_id: str | None = None  # set when the result came through a queued job (a 202)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, request_id: str | None = None,
                  job_id: str | None = None) -> InferenceResult:
        return cls(
            id=str(data.get("id", "")),
            model=str(data.get("model", "")),
            items=list(data.get("items") or []),
            worker=str(data.get("worker", "")),
            timing=dict(data.get("timing") or {}),
            request_id=request_id,
            job_id=job_id,
            raw=data,
        )

    def __len__(self) -> int:
        return len(self.items)


@dataclass(slots=True)
class Accepted:
    """A 202: no live worker for the lane yet; the item is durably queued and a
    worker is being started. Fetch the outcome with `wait_for_job(job_id)` or
    `job(job_id)`, or call with `wait_for_capacity=True` to have the SDK do it."""

    job_id: str
    status: str = "provisioning"
    machine_profile: str | None = None
    bundle: str | None = None
    pool: str | None = None
    estimated_wait_s: float | None = None
    retry_after: float | None = None  # the Retry-After header, seconds
    location: str | None = None  # the Location header, /v1/jobs/{id}
    request_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, retry_after: float | None, location: str | None,
                  request_id: str | None) -> Accepted:
        job_id = data.get("job_id") or (location.rstrip("/").rpartition("/")[2] if location else "")
        wait = data.get("estimated_wait_s")
        return cls(
            job_id=str(job_id or request_id or ""),  # the job id is the request id on this gateway
            status=str(data.get("status", "provisioning")),
            machine_profile=data.get("machine_profile"),
            bundle=data.get("bundle"),
            pool=data.get("pool"),
            estimated_wait_s=float(wait) if isinstance(wait, (int, float)) else None,
            retry_after=retry_after,
            location=location,
            request_id=request_id,
            raw=data,
        )


@dataclass(slots=True)
class Job:
    """A queued job as `GET /v1/jobs/{id}` reports it."""

    id: str
    state: str  # JobState; a plain str so an unknown future state does not break parsing
    result: InferenceResult | None = None  # when succeeded
    error: SwitchyardError | None = None  # when failed or expired
    model: str | None = None
    pool: str | None = None
    machine_profile: str | None = None
    bundle: str | None = None
    updated_at: float | None = None  # unix seconds
    kind: str = "item"  # "item", or "plan" (a Planner run)
    attempts: int = 0
    created_at: float | None = None
    started_at: float | None = None
    estimated_wait_s: float | None = None  # while queued
    queue_position: int | None = None  # while queued: items ahead of it on its lane (None: far back)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def unwrap(self) -> InferenceResult:
        """The result of a succeeded job; raises the job's typed error otherwise."""
        if self.result is not None:
            return self.result
        if self.error is not None:
            raise self.error
        raise SwitchyardError(0, "job_not_done", f"job {self.id!r} is {self.state!r}, not finished",
                              self.id)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        job_id = str(data.get("id", ""))
        state = str(data.get("state", ""))
        outcome = data.get("result")
        result: InferenceResult | None = None
        error: SwitchyardError | None = None
        if isinstance(outcome, dict) and isinstance(outcome.get("error"), dict):
            err = outcome["error"]
            error = error_for(None, str(err.get("code") or "internal"), str(err.get("message", "")), job_id,
                              error_id=err.get("error_id"))
        elif isinstance(outcome, dict) and state == "succeeded":
            result = InferenceResult.from_json(outcome, request_id=job_id, job_id=job_id)
        if error is None and state == "failed":
            # A failed job without an error object still deserves a typed error.
            error = error_for(None, "worker_error", f"job {job_id!r} failed", job_id)
        elif error is None and state == "expired":
            error = error_for(None, "deadline_exceeded", f"job {job_id!r} expired before a worker ran it",
                              job_id)
        elif result is None and error is None and state == "succeeded":
            error = SwitchyardError(200, "invalid_response", f"job {job_id!r} succeeded without a result",
                                    job_id)
        position = data.get("queue_position")
        return cls(id=job_id, state=state, result=result, error=error, model=data.get("model"),
                   pool=data.get("pool"), machine_profile=data.get("machine_profile"),
                   bundle=data.get("bundle"), updated_at=_seconds(data.get("updated_at")),
                   kind=str(data.get("kind") or "item"), attempts=int(data.get("attempts") or 0),
                   created_at=_seconds(data.get("created_at")), started_at=_seconds(data.get("started_at")),
                   estimated_wait_s=_seconds(data.get("estimated_wait_s")),
                   queue_position=position if isinstance(position, int) else None, raw=data)


@dataclass(slots=True)
class JobPage:
    """One page of `list_jobs`: newest first; pass `next_cursor` back for the next (None: the last)."""

    jobs: list[Job]
    next_cursor: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobPage:
        cursor = data.get("next_cursor")
        return cls(jobs=[Job.from_json(j) for j in data.get("jobs") or [] if isinstance(j, dict)],
                   next_cursor=cursor if isinstance(cursor, str) else None)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(slots=True)
class ModelInfo:
    """One entry of `GET /v1/configs/models` (its `details`)."""

    id: str
    operations: list[str] = field(default_factory=list)
    machine_profiles: list[str] = field(default_factory=list)
    default_machine_profile: str | None = None
    bundles: list[Any] = field(default_factory=list)
    profiles: Any = field(default_factory=list)  # profile names (or name -> params)
    timeout_s: float | None = None
    max_attempts: int | None = None
    live_workers: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            id=str(data.get("id", "")),
            operations=list(data.get("operations") or []),
            machine_profiles=list(data.get("machine_profiles") or []),
            default_machine_profile=data.get("default_machine_profile"),
            bundles=list(data.get("bundles") or []),
            profiles=data.get("profiles") or [],
            timeout_s=data.get("timeout_s"),
            max_attempts=data.get("max_attempts"),
            live_workers=data.get("live_workers"),
            raw=data,
        )


@dataclass(slots=True)
class PoolInfo:
    """A pool as `/v1/pools` reports it: its spec, its lease and its workers per machine profile.

    `workers[profile]` is `{"reserved": n, "ready": m}`: the workers the pool reserves on that
    profile, and the live ones serving it now.
    """

    name: str
    tenant: str | None = None
    models: list[str] = field(default_factory=list)
    gpus: dict[str, int] = field(default_factory=dict)
    ttl_seconds: int = 0
    expires_at: str | None = None  # ISO 8601 (UTC); None: never expires
    state: str = "active"  # "active" | "expired"
    workers: dict[str, dict[str, int]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def active(self) -> bool:
        return self.state == "active"

    def ready(self, profile: str | None = None) -> int:
        """Live workers of the pool (on `profile`, or on every profile)."""
        rows = [self.workers.get(profile, {})] if profile else list(self.workers.values())
        return sum(int(r.get("ready", 0)) for r in rows)

    def reserved(self, profile: str | None = None) -> int:
        rows = [self.workers.get(profile, {})] if profile else list(self.workers.values())
        return sum(int(r.get("reserved", 0)) for r in rows)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolInfo:
        workers = data.get("workers")
        workers = workers if isinstance(workers, dict) else {}
        return cls(
            name=str(data.get("name", "")),
            tenant=data.get("tenant"),
            models=list(data.get("models") or []),
            gpus=dict(data.get("gpus") or {}),
            ttl_seconds=int(data.get("ttl_seconds") or 0),
            expires_at=data.get("expires_at"),
            state=str(data.get("state", "active")),
            workers={str(k): dict(v) for k, v in workers.items() if isinstance(v, dict)},
            raw=data,
        )


@dataclass(slots=True)
class UsageRow:
    """One group of `GET /v1/usage` (docs/usage.md): the group's columns (those asked for in `group_by`; the
    others None) and its counts over the range."""

    requests: int
    items: int
    attempts: int
    input_tokens: int
    output_tokens: int
    compute_seconds: float
    gpu_seconds: float
    tenant: str | None = None
    key: str | None = None
    model: str | None = None
    machine_profile: str | None = None
    pool: str | None = None
    bundle: str | None = None
    op: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRow:
        def text(name: str) -> str | None:
            value = data.get(name)
            return str(value) if value is not None else None

        return cls(requests=int(data.get("requests", 0)), items=int(data.get("items", 0)),
                   attempts=int(data.get("attempts", 0)), input_tokens=int(data.get("input_tokens", 0)),
                   output_tokens=int(data.get("output_tokens", 0)),
                   compute_seconds=float(data.get("compute_seconds", 0.0)),
                   gpu_seconds=float(data.get("gpu_seconds", 0.0)), tenant=text("tenant"), key=text("key"),
                   model=text("model"), machine_profile=text("machine_profile"), pool=text("pool"),
                   bundle=text("bundle"), op=text("op"), raw=data)


@dataclass(slots=True)
class Event:
    """One event of `GET /v1/events`: `event` is job.status, job.progress, capacity.update or gap; `id` is
    what `Last-Event-ID` resumes after (None on a gap and on job.progress, a live snapshot never replayed)."""

    id: int | None
    event: str
    data: dict[str, Any]
