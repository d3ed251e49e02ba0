"""The dashboard and the alerts: committed files current, PromQL valid, metric names real, chart in step.

The names are checked here against the metric registries of the gateway and the
operator; tests/integration/test_metrics_names.py checks them again on a running
gateway's /metrics, and tests/k8s/test_operator_metrics.py on a running operator's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from switchyard.gateway.metrics import Metrics
from switchyard.gateway.usage_metrics import UsageMetrics
from switchyard.monitoring import __main__ as generate
from switchyard.monitoring import rules
from switchyard.monitoring.dashboard import dashboard
from switchyard.monitoring.promql import exported_names, metric_names, parse
from switchyard.operator.metrics import OperatorMetrics

ROOT = Path(__file__).resolve().parents[2]
ALL = dashboard().expressions() + rules.expressions()


@pytest.mark.parametrize("name", sorted(generate.rendered()))
@pytest.mark.parametrize("where", [str(d) for d in generate.DIRS])
def test_committed_files_are_current(where: str, name: str) -> None:
    assert (ROOT / where / name).read_text() == generate.rendered()[name], \
        f"{where}/{name} is stale: run `python -m switchyard.monitoring`"


@pytest.mark.parametrize("expr", ALL)
def test_every_query_parses_as_promql(expr: str) -> None:
    parse(expr)  # raises ValueError with the parser's message


def test_the_parser_is_real() -> None:
    """Guards the check above: broken PromQL must fail it."""
    for bad in ("sum(rate(x[5m])", "rate(x)", "x{a=}", "sum by (a) b c", "x[5q]"):
        with pytest.raises(ValueError):
            parse(bad)


def test_every_metric_named_is_exported() -> None:
    exported = exported_names(generate_latest(Metrics().registry).decode())
    exported |= exported_names(generate_latest(OperatorMetrics().registry).decode())
    exported |= exported_names(generate_latest(UsageMetrics(CollectorRegistry()).registry).decode())
    named = metric_names(ALL)
    assert named and named <= exported, sorted(named - exported)
    # And the other way: every gateway metric the docs table lists is on some panel or alert, or said why not.
    unused = {n for n in exported if n.startswith("switchyard_") and not n.endswith("_created")} - named
    families = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in unused} - {
        re.sub(r"_(bucket|count|sum|total)$", "", n) for n in named}
    # Relists: for a look when watches misbehave (docs/api.md), not a panel of their own.
    assert families <= {"switchyard_operator_reconcile_duration_seconds",
                        "switchyard_operator_watch_relists", "switchyard_gateway_watch_relists"}, sorted(families)


def test_alerts_are_well_formed_and_documented() -> None:
    doc = (ROOT / "docs/observability.md").read_text()
    names = [a.name for a in rules.ALERTS]
    assert len(names) == len(set(names)) == 6
    for a in rules.ALERTS:
        assert re.fullmatch(r"\d+[smh]", a.for_) and a.severity in ("warning", "critical")
        assert f"### {a.name}" in doc, f"docs/observability.md has no section for {a.name}"
        assert a.to_rule()["annotations"]["runbook"] == f"docs/observability.md#{a.name.lower()}"


def test_dashboard_layout() -> None:
    board = json.loads((ROOT / "manifests/monitoring/switchyard-dashboard.json").read_text())
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["description"] and p["targets"], p["title"]
            assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    # No two panels overlap on Grafana's grid.
    cells = [(x, y) for p in panels for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))
    titles = " ".join(p["title"].lower() for p in panels)
    for signal in ("request rate", "latency", "error", "pending demand", "live workers", "cold start",
                   "eta accuracy", "age", "refused", "nats connected", "config epoch", "operator", "dead letters"):
        assert signal in titles, signal
