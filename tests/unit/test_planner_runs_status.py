"""`status.runs` as the gateway applies it (gateway/plannerstatus.py): what the CRD's schema (made from
PlannerRuns) accepts, built from the counters' records (gateway/planstats.py)."""

from __future__ import annotations

from switchyard.api.planner import Planner
from switchyard.gateway.plannerstatus import runs_status
from switchyard.gateway.planstats import Counts, Failure

T = 1_795_433_345.9  # 2026-11-23T11:29:05Z


def test_counts_over_tenants_become_status_runs() -> None:
    a = Counts("p", "team-a", started=3, succeeded=1, failed=1, last_run_at=T,
               last_failure=Failure(at=T - 60, step="score", code="worker_error"))
    b = Counts("p", "team-b", started=2, cancelled=1, last_run_at=T - 10,
               last_failure=Failure(at=T - 5, step=None, code="unauthorized"))
    total = Counts("p", None)
    for c in (a, b):
        total.add(c)
    runs = runs_status(total)
    assert runs == {"started": 5, "running": 2, "succeeded": 1, "failed": 1, "cancelled": 1,
                    "lastRunAt": "2026-11-23T11:29:05Z",
                    "lastFailure": {"at": "2026-11-23T11:29:00Z", "code": "unauthorized"}}  # the latest; no step
    # The operator parses Planners with their status: what the gateway writes must validate.
    Planner.model_validate({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Planner", "metadata": {"name": "p"},
                            "spec": {"steps": [{"name": "a", "model": "m", "operation": "encode"}]},
                            "status": {"phase": "Valid", "conditions": [], "runs": runs}})


def test_nothing_run_yet_is_zeros_without_times() -> None:
    assert runs_status(Counts("p", None)) == {"started": 0, "running": 0, "succeeded": 0, "failed": 0,
                                              "cancelled": 0}


def test_a_counter_record_round_trips() -> None:
    c = Counts("p", "t", started=2, failed=1, last_run_at=T, last_failure=Failure(at=T, step="b", code="x"))
    assert Counts.decode(c.encode()) == c
    assert c.view()["running"] == 1 and c.view()["last_failure"] == {"at": T, "step": "b", "code": "x"}
