"""Live queue position and ETA of queued jobs: `job.progress` events, and the lane scan behind them.

A job waiting on a lane (cold, or busy) changes no record, so the events bridge says nothing
about it. Every PROGRESS_EVERY_S one gateway replica (the holder of a KV lease, `lease.progress`
in the `sy_coldstart` bucket) reads each lane with stored items in order, once, and publishes a
`job.progress` event (queue position, ETA) for each queued job it found whose position moved,
whose ETA was revised (ETA_REVISED_S: a worker became live, a cold start was measured), or that
heard nothing for RESEND_S. One replica, one ordered scan per lane and at most
MAX_READS_PER_PASS items read per pass (lanes past it are read in the next pass) keep the cost
bounded whatever the number of jobs and replicas.

Why a lease and not "each replica its own lanes": lanes are shared by every replica that
admits to them, so per-replica ownership would scan a shared lane once per replica and send
its followers duplicates; a replica that died would leave its lanes silent.

Why core NATS (`_sy.progress.<tenant token>`) and not the events stream: progress is a live
snapshot that the next pass replaces, not history. Stored, it would crowd the job.status events
out of the stream's hour (every queued job every few seconds), and a client resuming with
Last-Event-ID would be replayed positions long stale. So it has no event id, and a resumed
client gets a fresh one within RESEND_S. The subject is per tenant, like `sy.events.job.<tenant>`:
a feed subscribes to its own tenant's only, so no tenant sees another's jobs or their count
(beyond its own position).

Positions are counted by reading the lane's stored items by sequence (a work-queue stream allows
one consumer per subject, the workers'), at most POSITION_SCAN_MAX deep: a job further back has
position null. The items read are put in the order workers serve them: the priority classes in
order, and the tenants of a class in turn (worker/fairness.py). Items on the lane's own subject
(queued by a gateway older than the classes) are not read. Items ahead that no longer wait (a job
running or ended, e.g. cancelled while queued: its worker acks it without running it) are not
counted; so `0` means next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from ..api.table import DEFAULT_COLD_START_S
from ..errors import ApiError
from ..jetstream import kv_get
from ..messages import JobRecord
from ..subjects import DEFAULT_CLASS, PRIORITY_CLASSES, PROGRESS_PREFIX, WORK_STREAM, Lane, Queue, token
from ..tasks import forever
from .eta import WRONG_LAST_SEQUENCE
from .state import GatewayState

log = logging.getLogger("switchyard.gateway.progress")

PROGRESS_EVERY_S = 2.0  # one pass per interval (by the lease holder)
RESEND_S = 5.0  # an unchanged job's progress is sent again this often
ETA_REVISED_S = 2.0  # an ETA that moved this much more than the time passed is sent at once
LEASE_S = 6.0  # a lease holder that stopped renewing for this long is replaced
LEASE_KEY = "lease.progress"  # in sy_coldstart (file storage: survives a NATS restart like its episodes)
POSITION_SCAN_MAX = 50  # items read per lane: positions are counted this deep
MAX_READS_PER_PASS = 500  # items read per pass over all lanes (~0.15 s, bench/progress.py); the rest next pass


def progress_subject(tenant: str) -> str:
    return f"{PROGRESS_PREFIX}.{token(tenant)}"


# -- the lane scan: shared by job.progress and GET /v1/jobs/{id} ----------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    key: str  # the item's Nats-Msg-Id: <tenant>.<request id>, the job key of a job
    record: JobRecord | None  # None: a request answered at once (no job), or its record is gone
    queue: str = ""  # the subject it waits on: its class and tenant (subjects.Queue)

    @property
    def queued(self) -> bool:
        """A job still to run: not running, not ended (a cancelled one is acked unrun), not past its
        deadline (its worker ends it expired without running it)."""
        record = self.record
        return record is not None and record.state == "queued" and not (record.deadline
                                                                        and time.time() > record.deadline)

    @property
    def waiting(self) -> bool:
        """Still ahead of those behind it: a queued job, or a request answered at once (no record)."""
        return self.record is None or self.queued


@dataclass(frozen=True, slots=True)
class LaneScan:
    entries: list[Entry]  # the lane's stored items, in order (the first `limit`)
    complete: bool  # False: the scan stopped at its limit with items left unread

    def positions(self) -> dict[str, int]:
        """Job key -> waiting items ahead of it, for each queued job read, in the order workers serve them
        (worker/fairness.py): the classes in order, and within a class the tenants in turn, an item each."""
        lines: dict[str, list[Entry]] = {}  # queue -> its waiting items, queues in order of their first item
        for entry in self.entries:
            if entry.waiting:
                lines.setdefault(entry.queue, []).append(entry)
        out: dict[str, int] = {}
        ahead = 0
        for rank in sorted({_rank(q) for q in lines}):
            turns = [line for q, line in lines.items() if _rank(q) == rank]
            for i in range(max(len(line) for line in turns)):
                for line in turns:
                    if i < len(line):
                        if line[i].queued:
                            out[line[i].key] = ahead
                        ahead += 1
        return out


def _rank(queue: str) -> int:
    try:
        return Queue.from_subject(queue).rank
    except ValueError:  # not read from a queue (a test's entry): served as normal
        return PRIORITY_CLASSES.index(DEFAULT_CLASS)


async def scan_lane(st: GatewayState, lane: Lane, limit: int = POSITION_SCAN_MAX,
                    stop_at: str | None = None) -> LaneScan:
    """Read the lane's stored items in stream order (at most `limit`, up to `stop_at` included), with
    the job record of each. Raises ApiError (503) when NATS is away."""
    js = st.dispatcher.js
    if js is None or not st.dispatcher.connected:
        raise ApiError("queue_unavailable", "not connected to NATS", headers={"Retry-After": "2"})
    keys: list[str] = []
    queues: list[str] = []
    seq, complete = 1, False
    while len(keys) < limit:
        try:
            msg = await js.get_msg(WORK_STREAM, seq=seq, subject=lane.queues, next=True)
        except nats.js.errors.NotFoundError:
            complete = True  # no stored item past `seq`
            break
        except (nats.errors.Error, TimeoutError) as exc:
            raise ApiError("queue_unavailable", f"cannot read the lane: {exc or type(exc).__name__}",
                           headers={"Retry-After": "2"}) from None
        keys.append((msg.headers or {}).get("Nats-Msg-Id", ""))
        queues.append(msg.subject or "")
        seq = (msg.seq or seq) + 1
        if keys[-1] == stop_at:
            break
    records = await asyncio.gather(*(st.dispatcher.job(k) if k else _none() for k in keys))
    return LaneScan([Entry(k, r, q) for k, r, q in zip(keys, records, queues, strict=True)], complete)


async def _none() -> None:
    return None


async def queue_position(st: GatewayState, lane: Lane, jkey: str) -> tuple[int | None, bool]:
    """(waiting items ahead of the job, beyond): position None with beyond=True when it is further back
    than POSITION_SCAN_MAX; None with beyond=False when it is not stored (just pulled) or NATS is away."""
    try:
        scan = await scan_lane(st, lane, stop_at=jkey)
    except ApiError:
        return None, False
    position = scan.positions().get(jkey)
    found = any(e.key == jkey for e in scan.entries)
    return position, not found and not scan.complete


# -- the pass: one replica, every PROGRESS_EVERY_S --------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sent:
    position: int
    eta_s: float
    at: float


def due(last: Sent | None, position: int, eta_s: float, now: float) -> bool:
    """Send this job's progress now: new, moved, its ETA revised, or quiet for RESEND_S."""
    if last is None or position != last.position or now - last.at >= RESEND_S:
        return True
    expected = max(0.1, last.eta_s - (now - last.at))  # the ETA counts down by itself
    return abs(eta_s - expected) >= ETA_REVISED_S


async def take_lease(kv: KeyValue, instance: str, now: float) -> bool:
    """Hold (or renew) the progress lease for LEASE_S: True when this replica holds it now.
    Every write is a compare-and-set, so two replicas never both win the same lapse."""
    value = orjson.dumps({"owner": instance, "until": now + LEASE_S})
    try:
        entry = await kv_get(kv, LEASE_KEY)
        if entry is None:
            await kv.create(LEASE_KEY, value)
            return True
        held = orjson.loads(entry.value)
        if held.get("owner") != instance and float(held.get("until", 0)) > now:
            return False
        await kv.update(LEASE_KEY, value, last=entry.revision)
        return True
    except nats.js.errors.KeyWrongLastSequenceError:
        return False  # another replica wrote first
    except nats.js.errors.APIError as exc:
        if exc.err_code in WRONG_LAST_SEQUENCE:
            return False
        raise


class Progress:
    """The pass. Only the lease holder reads lanes and publishes; the others only renew their bid."""

    def __init__(self, st: GatewayState) -> None:
        self.st = st
        self.sent: dict[Lane, dict[str, Sent]] = {}  # lane -> job key -> what its followers last heard
        self._next_lane = 0  # where the next pass starts when the last one ran out of reads
        self.published = 0  # job.progress events sent by this replica, ever

    async def run_forever(self) -> None:
        await forever(self.pass_once, pause_s=PROGRESS_EVERY_S, what="progress pass", logger=log, pause_first=True)

    async def pass_once(self) -> int:
        """One pass; the number of job.progress events published."""
        st = self.st
        kv, nc = st.dispatcher.coldstart, st.dispatcher.nc
        if not st.dispatcher.connected or kv is None or nc is None:
            return 0
        now = time.time()
        if not await take_lease(kv, st.instance, now):
            self.sent.clear()  # another replica sends: if this one takes over, it starts afresh
            return 0
        lanes = sorted((lane for lane, n in st.demand.by_lane.items() if n > 0), key=lambda lane: lane.subject)
        if not lanes:
            self.sent.clear()
            return 0
        start = self._next_lane % len(lanes)
        order = lanes[start:] + lanes[:start]
        sent: dict[Lane, dict[str, Sent]] = {}
        reads = published = 0
        for i, lane in enumerate(order):
            if i and reads + POSITION_SCAN_MAX > MAX_READS_PER_PASS:  # the first lane is always read
                self._next_lane = start + i
                # Lanes not read this pass keep what their jobs were last sent (they hear again next pass).
                sent.update({lane: self.sent[lane] for lane in order[i:] if lane in self.sent})
                break
            scan = await scan_lane(st, lane)
            reads += len(scan.entries)
            sent[lane], n = await self._lane(lane, scan)
            published += n
            self.published += n
        else:
            self._next_lane = 0
        self.sent = sent
        return published

    async def _lane(self, lane: Lane, scan: LaneScan) -> tuple[dict[str, Sent], int]:
        """Publish what is due on one lane: (what its queued jobs' followers heard last, events published)."""
        st = self.st
        last_sent = self.sent.get(lane, {})
        seen: dict[str, Sent] = {}
        positions = scan.positions()
        jobs = [(e.key, e.record) for e in scan.entries if e.key in positions and e.record is not None]
        if not jobs:
            return seen, 0
        table = st.holder.table
        route = table.models.get(lane.model) if table else None
        etas = await st.eta.for_jobs(lane, route.cold_start_s if route else DEFAULT_COLD_START_S,
                                     [record.updated_at for _, record in jobs])
        nc = st.dispatcher.nc
        assert nc is not None
        now = time.time()
        published = 0
        for (key, record), eta_s in zip(jobs, etas, strict=True):  # one ETA per job
            position = positions[key]
            last = last_sent.get(key)
            if not due(last, position, eta_s, now):
                assert last is not None
                seen[key] = last
                continue
            tenant = record.tenant or key.partition(".")[0]
            event = {"id": record.id, "kind": record.kind, "state": "queued", "model": record.model,
                     "op": record.op, "queue_position": position, "estimated_wait_s": eta_s, "at": round(now, 3)}
            await nc.publish(progress_subject(tenant), orjson.dumps(event))
            seen[key] = Sent(position, eta_s, now)
            published += 1
        return seen, published
