"""Tracing's configuration and its off state: spec.tracing through the table, the worker's flag and
environment, W3C carriers taken apart safely, and gateway and worker without OpenTelemetry installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest
from pydantic import ValidationError

from switchyard.api import compile_table
from switchyard.api.gateway import GatewaySpec
from switchyard.api.loader import parse_objects
from switchyard.api.table import RoutingTable, TracingRoute
from switchyard.messages import WorkItem
from switchyard.worker import cli
from switchyard.worker.tracing import wanted

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def table(tracing: dict[str, object] | None = None) -> RoutingTable:
    spec = {"tracing": tracing} if tracing is not None else {}
    rs, issues = parse_objects([{"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway",
                                 "metadata": {"name": "gw"}, "spec": spec}])
    assert not issues
    return compile_table(rs).raise_for_issues()


def test_spec_tracing_compiles_into_the_table_and_round_trips() -> None:
    t = table({"endpoint": "http://otel-collector.observability:4318/", "sampleRatio": 0.25})
    assert t.tracing == TracingRoute("http://otel-collector.observability:4318", 0.25)
    again = RoutingTable.from_json(t.to_json())
    assert again.tracing == t.tracing and again.hash == t.hash


def test_tracing_off_leaves_the_table_as_it_was() -> None:
    t = table()
    assert t.tracing is None and "tracing" not in t.to_dict()
    assert table({"sampleRatio": 0.5}).tracing is None  # no endpoint: off, whatever the ratio
    assert table({"endpoint": "http://otel:4318"}).hash != t.hash


@pytest.mark.parametrize("endpoint", ["otel:4318", "ftp://otel", "http://user:pw@otel:4318", "http://otel:4318?x=1",
                                      "http://otel 4318", "http://otel:4318/#frag", "http://" + "a" * 2100])
def test_spec_tracing_refuses_what_is_not_an_otlp_http_base_url(endpoint: str) -> None:
    with pytest.raises(ValidationError):
        GatewaySpec.model_validate({"tracing": {"endpoint": endpoint}})


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_spec_tracing_ratio_is_a_fraction(ratio: float) -> None:
    with pytest.raises(ValidationError):
        GatewaySpec.model_validate({"tracing": {"endpoint": "http://otel:4318", "sampleRatio": ratio}})


def test_worker_flag_refuses_a_bad_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--handler", "a:b", "--otlp-endpoint", "otel:4318"])
    assert "--otlp-endpoint" in capsys.readouterr().err
    ok = parser.parse_args(["--model", "m", "--handler", "a:b", "--otlp-endpoint", "http://otel:4318"])
    assert ok.otlp_endpoint == "http://otel:4318"


def test_worker_tracing_is_on_only_with_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(var, raising=False)
    assert not wanted(None)
    assert wanted("http://otel:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")  # from Upstream workers.template.env
    assert wanted(None)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not wanted(None) and not wanted("http://otel:4318")


def test_an_item_without_trace_context_is_packed_as_before_and_old_items_decode() -> None:
    item = WorkItem(id="a", op="encode", model="m", bundle="b", machine_profile="cpu", pool="default", items=[1])
    assert "trace_context" not in msgpack.unpackb(item.encode())
    old = {k: v for k, v in msgpack.unpackb(item.encode()).items()}  # what a gateway before tracing wrote
    assert WorkItem.decode(msgpack.packb(old)).trace_context is None
    item.trace_context = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    assert WorkItem.decode(item.encode()).trace_context == item.trace_context


@pytest.mark.parametrize("carrier", [
    None, "00-x", 5, [], {}, {"traceparent": 1}, {"traceparent": b"00-" + TRACE_ID.encode()},
    {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01" + "0" * 10},
    {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
    {"traceparent": f"00-{TRACE_ID}-{'0' * 16}-01"}, {"traceparent": "00-" + "g" * 32 + "-00f067aa0ba902b7-01"},
])
def test_extract_ignores_what_is_not_a_valid_traceparent(carrier: object) -> None:
    from switchyard import tracing

    assert tracing.extract(carrier) is None


def test_extract_keeps_a_valid_parent_and_drops_an_oversized_tracestate() -> None:
    from opentelemetry import trace

    from switchyard import tracing

    parent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    ctx = tracing.extract({"traceparent": parent, "tracestate": "a=b," * 1000})
    assert ctx is not None
    sc = trace.get_current_span(ctx).get_span_context()
    assert format(sc.trace_id, "032x") == TRACE_ID and sc.is_remote and len(sc.trace_state) == 0


BLOCK_OTEL = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
"""


def run_without_otel(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_OTEL + textwrap.dedent(code), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})


def test_gateway_and_worker_run_without_the_tracing_extra() -> None:
    done = run_without_otel("""
        import sys, logging
        import switchyard.gateway.app, switchyard.gateway.inference, switchyard.worker.runtime, switchyard.worker.cli
        from switchyard.api.table import TracingRoute
        from switchyard.gateway import tracing
        from switchyard.messages import WorkItem
        WorkItem(id="a", op="encode", model="m", bundle="b", machine_profile="cpu", pool="default", items=[1]).encode()
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported with tracing off"
        logging.basicConfig(level=logging.ERROR)
        # spec.tracing on but the extra missing: said once, requests go on untraced.
        assert tracing.tracer_for(TracingRoute("http://127.0.0.1:4318")) is None
        print("ok")
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "spec.tracing is set but tracing cannot start" in done.stderr


def test_worker_asked_to_trace_without_the_extra_names_it() -> None:
    done = run_without_otel("""
        import sys
        from switchyard.worker.cli import main
        sys.exit(main(sys.argv[1:]))
    """, "--model", "m", "--handler", "switchyard.worker.handlers:echo", "--otlp-endpoint", "http://127.0.0.1:4318")
    assert done.returncode == 2
    assert "switchyard[tracing]" in done.stderr and "opentelemetry-sdk" in done.stderr


def traces_doc() -> str:
    """The Traces section of docs/observability.md."""
    merged = (ROOT / "docs" / "observability.md").read_text()
    return merged[merged.index("## Traces"):]


def test_the_traces_doc_resources_are_valid_and_turn_tracing_on() -> None:
    import yaml

    fences = re.findall(r"```yaml\n(.*?)```", traces_doc(), re.S)
    resources = [yaml.safe_load(f) for f in fences if "apiVersion: switchyard.dev" in f]
    assert {r["kind"] for r in resources} == {"Gateway", "Upstream"}
    rs, issues = parse_objects(resources)
    assert not issues, issues
    t = compile_table(rs).raise_for_issues()
    assert t.tracing == TracingRoute("http://otel-collector.observability:4318", 0.1)
    env = {e["name"]: e["value"] for e in resources[1]["spec"]["workers"]["template"]["env"]}
    assert cli.OTLP_URL.match(env["OTEL_EXPORTER_OTLP_ENDPOINT"])


@pytest.mark.parametrize("state, kept", [
    ("vendor=x", 1), ("a=1, b@tenant=2,,", 2), ("=,=", 0), ("A=1", 0), ("a=1,b", 0), ("a= ", 0), ("a=1,a=2", 0),
])
def test_a_tracestate_is_kept_only_when_well_formed_and_a_bad_one_logs_nothing(
        state: str, kept: int, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry import trace

    from switchyard import tracing

    ctx = tracing.extract({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01", "tracestate": state})
    assert ctx is not None
    assert len(trace.get_current_span(ctx).get_span_context().trace_state) == kept
    assert not [r for r in caplog.records if r.levelno >= 30]  # no warning an attacker could repeat per request
