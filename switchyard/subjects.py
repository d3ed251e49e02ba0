"""NATS names: the work subject scheme, streams, KV buckets and inboxes.

A lane is (model, bundle, machine profile, pool). Its items wait on the SWITCHYARD_WORK stream,
one subject per priority class and tenant (a *queue*), so a worker can serve the classes in order
and the tenants in turn (worker/fairness.py, docs/policy.md):

    sy.work.<pool>.<machine_profile>.<bundle>.<model>.<class>.<tenant>

The lane's own subject (the first six tokens) is where gateways before the priority classes
put every item; workers still serve it. Every part goes through `token()`, so a model id
such as "BAAI/bge-m3" can never add tokens or wildcards to a subject.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

WORK_STREAM = "SWITCHYARD_WORK"
WORK_PREFIX = "sy.work"
WORKERS_BUCKET = "sy_workers"  # worker heartbeats, TTL'd
JOBS_BUCKET = "sy_jobs"  # state and result of accepted-but-not-awaited items
COLDSTART_BUCKET = "sy_coldstart"  # measured cold starts per lane, shared by gateway replicas
POOLS_BUCKET = "sy_pools"  # standalone mode: pools made through POST /v1/pools
RESULTS_BUCKET = "sy_results"  # results of requests answered at once, re-fetchable for a short while
RUNS_BUCKET = "sy_runs"  # Planner runs: each step's state, key = job_key(tenant, run id)
LIMITS_BUCKET = "sy_limits"  # spec.policy counters, key = <kind>.<token(limit)>.<token(subject)>
PLANSTATS_BUCKET = "sy_planstats"  # Planner run counts, key = <token(planner)>.<token(tenant)>
EVENTS_STREAM = "SWITCHYARD_EVENTS"  # job.status and capacity.update events, for SSE resume
EVENTS_PREFIX = "sy.events"  # + <kind>.<tenant token>
DEAD_STREAM = "SWITCHYARD_DEAD"  # items failed after their last attempt (dead letters)
DEAD_PREFIX = "sy.dead"  # + <lane subject tail>
USAGE_STREAM = "SWITCHYARD_USAGE"  # the usage ledger: one record per finished attempt (docs/usage.md)
USAGE_PREFIX = "sy.usage"  # + <tenant token>
JOB_CANCEL_PREFIX = "_sy.jobcancel"  # + token(job key): stop a job wherever it is (jobs API)
INBOX_PREFIX = "_sy.inbox"  # + <gateway instance>.<sequence>
CANCEL_PREFIX = "_sy.cancel"  # + <gateway instance>.<sequence>: stop a streamed item (cancel_subject)
PROGRESS_PREFIX = "_sy.progress"  # + .<tenant token>: queue positions of a tenant's jobs (progress.py)
AUTH_BLOCKS_SUBJECT = "_sy.auth.blocked"  # {"ip": bucket, "until": Unix seconds}: an IP past its auth failures
RING_PREFIX = "_sy.ring"  # + <work subject tail>: core NATS, "an item was queued here" for idle workers
DEDUPE_WINDOW_S = 120.0

# Priority classes, highest first: a worker serves a class only while every higher one is empty.
PRIORITY_CLASSES = ("high", "normal", "low")
DEFAULT_CLASS = "normal"

ANONYMOUS_TENANT = "_anonymous"  # not a DNS label, so no key's tenant can be named so


def job_key(tenant: str, request_id: str) -> str:
    """Where a request's identity lives: its Nats-Msg-Id and its jobs-bucket key.

    Scoped by tenant, so two tenants choosing the same X-Request-ID never meet.
    """
    return f"{tenant}.{request_id}" if tenant else request_id


def usage_subject(tenant: str) -> str:
    """Where a worker appends the usage records of a tenant's items (the ledger, USAGE_STREAM)."""
    return f"{USAGE_PREFIX}.{token(tenant or ANONYMOUS_TENANT)}"


def job_cancel_subject(key: str) -> str:
    """Where a cancelled job's worker (or Planner run) hears of it; key is job_key(tenant, id)."""
    return f"{JOB_CANCEL_PREFIX}.{token(key)}"


def cancel_subject(reply: str) -> str:
    """Where a gateway cancels the streamed item whose chunks go to `reply` (its client went away)."""
    if not reply.startswith(INBOX_PREFIX + "."):
        raise ValueError(f"not a gateway inbox: {reply!r}")
    return CANCEL_PREFIX + reply[len(INBOX_PREFIX):]


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


@lru_cache(maxsize=4096)
def token(value: str) -> str:
    """Encode any string as one subject token: [A-Za-z0-9-] kept, each other byte -> _xx."""
    if not value:
        raise ValueError("empty subject token")
    return "".join(ch if ch in _SAFE else "".join(f"_{b:02x}" for b in ch.encode()) for ch in value)


def untoken(tok: str) -> str:
    out = bytearray()
    i = 0
    while i < len(tok):
        if tok[i] == "_":
            out.append(int(tok[i + 1 : i + 3], 16))
            i += 3
        else:
            out += tok[i].encode()
            i += 1
    return out.decode()


@dataclass(frozen=True, slots=True)
class Lane:
    model: str
    bundle: str
    machine_profile: str
    pool: str

    @property
    def subject(self) -> str:
        return _subject(self.pool, self.machine_profile, self.bundle, self.model)

    @property
    def consumer(self) -> str:
        """Durable consumer shared by every worker of this lane, for its own subject (older gateways')."""
        return consumer_name(self.subject)

    @property
    def queues(self) -> str:
        """Every queue of the lane (its classes and tenants), as one subject filter."""
        return self.subject + ".>"

    def queue(self, priority: str, tenant: str) -> str:
        """The subject of one class and tenant on this lane."""
        return _queue(self.subject, priority, tenant or ANONYMOUS_TENANT)

    @classmethod
    def from_subject(cls, subject: str) -> Lane:
        """The lane of a work subject: the lane's own, or one of its queues."""
        parts = subject.split(".")
        if len(parts) not in (6, 8) or ".".join(parts[:2]) != WORK_PREFIX:
            raise ValueError(f"not a work subject: {subject!r}")
        pool, mp, bundle, model = (untoken(p) for p in parts[2:6])
        return cls(model=model, bundle=bundle, machine_profile=mp, pool=pool)


@dataclass(frozen=True, slots=True)
class Queue:
    """One queue of a lane: its items of one priority class and tenant (or the lane's own subject)."""

    subject: str
    priority: str  # DEFAULT_CLASS for the lane's own subject
    tenant: str  # "" for the lane's own subject

    @property
    def rank(self) -> int:
        """0 is served first; a class this worker does not know goes after the known ones."""
        try:
            return PRIORITY_CLASSES.index(self.priority)
        except ValueError:
            return len(PRIORITY_CLASSES)

    @property
    def consumer(self) -> str:
        return consumer_name(self.subject)

    @classmethod
    def from_subject(cls, subject: str) -> Queue:
        parts = subject.split(".")
        if len(parts) == 8 and ".".join(parts[:2]) == WORK_PREFIX:
            return cls(subject, untoken(parts[6]), untoken(parts[7]))
        if len(parts) == 6 and ".".join(parts[:2]) == WORK_PREFIX:
            return cls(subject, DEFAULT_CLASS, "")
        raise ValueError(f"not a work subject: {subject!r}")


def queue_subject(subject: str, priority: str, tenant: str) -> str:
    """The queue of an item published to `subject`: a lane's own subject gets the class and tenant tokens,
    a queue's subject (a dead letter's, queued again) stays as it is."""
    return _queue(subject, priority, tenant or ANONYMOUS_TENANT) if subject.count(".") == 5 else subject


def consumer_name(subject: str) -> str:
    """The durable consumer of a work subject: the same name for every worker, and never too long."""
    return "lane_" + hashlib.sha256(subject.encode()).hexdigest()[:24]


def ring_subject(work_subject: str) -> str:
    """Where a gateway says an item was queued on `work_subject` (a queue's), for workers waiting idle."""
    return RING_PREFIX + work_subject[len(WORK_PREFIX):]


def ring_filter(lane: Lane) -> str:
    return RING_PREFIX + lane.subject[len(WORK_PREFIX):] + ".>"


def work_subject_of_ring(ring: str) -> str:
    return WORK_PREFIX + ring[len(RING_PREFIX):]


@lru_cache(maxsize=4096)
def _queue(lane_subject: str, priority: str, tenant: str) -> str:
    return f"{lane_subject}.{token(priority)}.{token(tenant)}"


@lru_cache(maxsize=4096)
def _subject(pool: str, mp: str, bundle: str, model: str) -> str:
    return f"{WORK_PREFIX}.{token(pool)}.{token(mp)}.{token(bundle)}.{token(model)}"

