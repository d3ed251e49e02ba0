"""OperatorMetrics.counted: every namespace pass counted by outcome, its error still raised for the queue's retry."""

from __future__ import annotations

import pytest

from switchyard.operator.metrics import OperatorMetrics


async def test_passes_are_counted_by_outcome_and_errors_still_raise() -> None:
    m = OperatorMetrics()

    async def reconcile(ns: str) -> str:
        if ns == "broken":
            raise RuntimeError("the API server said no")
        return f"done {ns}"

    counted = m.counted(reconcile)
    assert await counted("a") == "done a"
    with pytest.raises(RuntimeError, match="said no"):  # the work queue retries it with backoff
        await counted("broken")
    assert await counted("b") == "done b"
    get = m.registry.get_sample_value
    assert get("switchyard_operator_reconciles_total", {"outcome": "ok"}) == 2
    assert get("switchyard_operator_reconciles_total", {"outcome": "error"}) == 1
    assert get("switchyard_operator_reconcile_duration_seconds_count") == 3
    assert get("switchyard_operator_leader") == 0  # not leader until the election says so
