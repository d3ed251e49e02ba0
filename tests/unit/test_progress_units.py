"""job.progress without NATS: which items count as ahead of a job, and when a job's progress is due."""

from __future__ import annotations

from switchyard.gateway.progress import ETA_REVISED_S, RESEND_S, Entry, LaneScan, Sent, due, progress_subject
from switchyard.messages import JobRecord


def job(tenant: str, job_id: str, state: str = "queued") -> Entry:
    return Entry(f"{tenant}.{job_id}", JobRecord(id=job_id, state=state, model="m", tenant=tenant))


def test_positions_count_only_the_items_still_waiting_ahead() -> None:
    scan = LaneScan([
        job("a", "running", "running"),  # pulled: its worker has it, it is not ahead of anyone
        job("b", "first"),
        Entry("a.sync", None),  # a request answered at once: no record, may still wait
        job("a", "cancelled", "cancelled"),  # its worker acks it without running it
        job("b", "second"),
        job("a", "done", "succeeded"),
        Entry("a.lapsed", JobRecord(id="lapsed", state="queued", tenant="a", deadline=1.0)),  # ends expired, unrun
        job("c", "third"),
    ], complete=True)
    assert scan.positions() == {"b.first": 0, "b.second": 2, "c.third": 3}


def test_progress_is_due_when_new_moved_revised_or_quiet_too_long() -> None:
    last = Sent(position=2, eta_s=100.0, at=1000.0)
    assert due(None, 2, 100.0, 1000.0)
    assert due(last, 1, 98.0, 1002.0)  # moved up
    assert not due(last, 2, 98.0, 1002.0)  # the ETA only counted down with the time passed
    assert due(last, 2, 1.0, 1002.0)  # a worker is live: the ETA fell at once
    assert due(last, 2, 98.0 + ETA_REVISED_S, 1002.0)  # a slower cold start was measured
    assert due(last, 2, 100.0 - RESEND_S, 1000.0 + RESEND_S)  # nothing changed, but followers hear again
    steady = Sent(position=0, eta_s=1.0, at=1000.0)  # a live lane: 1 s, not a countdown
    assert not due(steady, 0, 1.0, 1002.0)


def test_each_tenant_has_its_own_progress_subject() -> None:
    assert progress_subject("team-a") == "_sy.progress.team-a"
    assert progress_subject("a.b") != progress_subject("a") and "*" not in progress_subject("*")
