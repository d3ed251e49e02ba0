"""The alerts, evaluated by the real Prometheus rule engine: `promtool check rules` and `promtool test rules`.

promtool is built from its Go module (tests/controlplane/build-tool.sh promtool). The
rules are the committed manifests/monitoring/prometheusrule.yaml; each case feeds series
over time and says which alerts must be firing then, with their labels and their
annotations as Prometheus renders them (so a template naming a missing label fails too).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from switchyard.monitoring import rules
from switchyard.testing import gotools

ROOT = Path(__file__).resolve().parents[2]
A = {"namespace": "a", "pool": "default", "machine_profile": "l4", "bundle": "default"}
ALERTS = {a.name: a for a in rules.ALERTS}


@pytest.fixture(scope="module")
def promtool() -> Path:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build promtool (tests/controlplane/build-tool.sh promtool)")
    try:
        return gotools.ensure_built("promtool") / "promtool"
    except gotools.GoToolBuildError as exc:
        pytest.skip(f"the Go build of promtool failed: {exc}")


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@dataclass
class Case:
    """Series, then at `at` the alert `alert` fires once per (labels, $value as Prometheus prints it)."""

    what: str
    input: list[dict[str, str]]
    alert: str
    at: str
    firing: list[tuple[dict[str, str], str]] = field(default_factory=list)

    def expected(self) -> list[dict[str, dict[str, str]]]:
        a = ALERTS[self.alert]
        out = []
        for labels, value in self.firing:
            def render(text: str) -> str:
                text = text.replace("{{ $value | humanizePercentage }}",
                                    f"{float(value) * 100:g}%").replace("{{ $value }}", value)
                return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
            rule = a.to_rule()
            out.append({"exp_labels": {**rule["labels"], **labels},
                        "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()}})
        return out


LANE = {**A, "model": "m"}
TENANT = {"namespace": "a", "tenant": "acme"}
CASES = [
    Case("demand and no live worker for 15 m", [
        series("switchyard_gateway_pending_demand", A, "3x30"),
        series("switchyard_gateway_workers_live", LANE, "0x30")], "SwitchyardFleetStuckAtZero", "16m", [(A, "3")]),
    Case("not yet 15 m", [
        series("switchyard_gateway_pending_demand", A, "3x30"),
        series("switchyard_gateway_workers_live", LANE, "0x30")], "SwitchyardFleetStuckAtZero", "10m"),
    Case("demand and no workers series at all", [
        series("switchyard_gateway_pending_demand", A, "2x30")], "SwitchyardFleetStuckAtZero", "16m", [(A, "2")]),
    Case("demand with a live worker", [
        series("switchyard_gateway_pending_demand", A, "3x30"),
        series("switchyard_gateway_workers_live", LANE, "1x30")], "SwitchyardFleetStuckAtZero", "16m"),
    Case("no demand", [
        series("switchyard_gateway_pending_demand", A, "0x30"),
        series("switchyard_gateway_workers_live", LANE, "0x30")], "SwitchyardFleetStuckAtZero", "16m"),
    Case("a lane's first dead letter (a new series at 1)", [
        series("switchyard_gateway_dead_letters_total", LANE, "_x5 1x25")], "SwitchyardDeadLetters", "7m",
         [(LANE, "1")]),
    Case("that dead letter, 20 m later", [
        series("switchyard_gateway_dead_letters_total", LANE, "_x5 1x25")], "SwitchyardDeadLetters", "25m"),
    Case("one more dead letter on a known lane", [
        series("switchyard_gateway_dead_letters_total", LANE, "2x20 3x20")], "SwitchyardDeadLetters", "30m",
         [(LANE, "1.0714285714285714")]),
    Case("a tenant's first usage anomaly (a new series at 1)", [
        series("switchyard_usage_anomalies_total", TENANT, "_x5 1x25")], "SwitchyardUsageAnomaly", "7m",
         [(TENANT, "1")]),
    Case("that anomaly, 20 m later", [
        series("switchyard_usage_anomalies_total", TENANT, "_x5 1x25")], "SwitchyardUsageAnomaly", "25m"),
    Case("a gateway not ready for 5 m", [
        series("switchyard_gateway_ready", {"namespace": "a", "pod": "main-gateway-1"}, "0x10")],
         "SwitchyardGatewayNotReady", "6m", [({"namespace": "a", "pod": "main-gateway-1"}, "0")]),
    Case("a ready gateway", [
        series("switchyard_gateway_ready", {"namespace": "a", "pod": "main-gateway-1"}, "1x10")],
         "SwitchyardGatewayNotReady", "6m"),
    Case("two operator replicas, no leader", [
        series("switchyard_operator_leader", {"pod": "op-1"}, "0x10"),
        series("switchyard_operator_leader", {"pod": "op-2"}, "0x10")], "SwitchyardOperatorNoLeader", "3m",
         [({}, "0")]),
    Case("no operator scraped at all", [
        series("switchyard_gateway_ready", {"namespace": "a", "pod": "main-gateway-1"}, "1x10")],
         "SwitchyardOperatorNoLeader", "3m", [({}, "0")]),
    Case("one leader", [
        series("switchyard_operator_leader", {"pod": "op-1"}, "1x10"),
        series("switchyard_operator_leader", {"pod": "op-2"}, "0x10")], "SwitchyardOperatorNoLeader", "3m"),
    Case("the work stream at 90% of its bytes", [
        series("switchyard_gateway_stream_used", {"namespace": "a", "resource": "bytes"}, "900x10"),
        series("switchyard_gateway_stream_limit", {"namespace": "a", "resource": "bytes"}, "1000x10"),
        series("switchyard_gateway_stream_used", {"namespace": "a", "resource": "messages_per_lane"}, "10x10"),
        series("switchyard_gateway_stream_limit", {"namespace": "a", "resource": "messages_per_lane"}, "100x10")],
         "SwitchyardStreamNearLimit", "6m", [({"namespace": "a", "resource": "bytes"}, "0.9")]),
    Case("the work stream at half", [
        series("switchyard_gateway_stream_used", {"namespace": "a", "resource": "bytes"}, "500x10"),
        series("switchyard_gateway_stream_limit", {"namespace": "a", "resource": "bytes"}, "1000x10")],
         "SwitchyardStreamNearLimit", "6m"),
]


def write_rules(tmp_path: Path) -> Path:
    committed = yaml.safe_load((ROOT / "manifests/monitoring/prometheusrule.yaml").read_text())
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": committed["spec"]["groups"]}, sort_keys=False))
    return path


def test_promtool_check_rules(promtool: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(promtool), "check", "rules", str(write_rules(tmp_path))], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and f"SUCCESS: {len(rules.ALERTS)} rules found" in done.stdout, \
        done.stdout + done.stderr


def test_every_alert_has_a_firing_case() -> None:
    assert {c.alert for c in CASES if c.firing} == set(ALERTS)


def test_alerts_fire_exactly_when_they_should(promtool: Path, tmp_path: Path) -> None:
    write_rules(tmp_path)
    tests = [{"name": c.what, "interval": "1m", "input_series": c.input,
              "alert_rule_test": [{"eval_time": c.at, "alertname": c.alert, "exp_alerts": c.expected()}]}
             for c in CASES]
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests},
                                   sort_keys=False))
    done = subprocess.run([str(promtool), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_dashboard_queries_pass_promtool(promtool: Path, tmp_path: Path) -> None:
    """Prometheus's own parser on every dashboard query, with Grafana's variables filled in as Grafana does."""
    from switchyard.monitoring.dashboard import dashboard
    from switchyard.monitoring.promql import expand

    exprs = dashboard().expressions()
    group = {"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": expand(e)}
                                             for i, e in enumerate(exprs)]}
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [group]}, sort_keys=False))
    done = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and f"SUCCESS: {len(exprs)} rules found" in done.stdout, done.stdout + done.stderr
