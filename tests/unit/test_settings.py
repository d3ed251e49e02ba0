"""Settings: a flag wins over its environment variable, which wins over the default; one table documents them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from switchyard.cli.main import build_parser
from switchyard.cli.settings import DevSettings
from switchyard.gateway.settings import GatewaySettings
from switchyard.operator.settings import OperatorSettings
from switchyard.settings import load, variables
from switchyard.worker.cli import build_parser as worker_parser
from switchyard.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [GatewaySettings, OperatorSettings, WorkerSettings, DevSettings]
GATEWAY = ["gateway", "--config-dir", "examples"]


def test_the_gateways_log_level_is_the_flag_then_the_variable_then_info() -> None:
    env = {"SWITCHYARD_LOG_LEVEL": "DEBUG"}
    assert build_parser(env).parse_args([*GATEWAY, "--log-level", "ERROR"]).log_level == "ERROR"
    assert build_parser(env).parse_args(GATEWAY).log_level == "DEBUG"  # ignored before: always INFO
    assert build_parser({}).parse_args(GATEWAY).log_level == "INFO"


def test_the_gateways_nats_url_and_namespace_follow_the_same_order() -> None:
    env = {"SWITCHYARD_NATS_URL": "nats://env:4222", "POD_NAMESPACE": "team-a"}
    args = build_parser(env).parse_args(GATEWAY)
    assert (args.nats, args.namespace) == ("nats://env:4222", "team-a")
    args = build_parser(env).parse_args([*GATEWAY, "--nats", "nats://flag:4222", "--namespace", "team-b"])
    assert (args.nats, args.namespace) == ("nats://flag:4222", "team-b")
    args = build_parser({}).parse_args(GATEWAY)
    assert (args.nats, args.namespace) == ("nats://127.0.0.1:4222", "default")


def test_an_empty_variable_is_unset() -> None:
    # Kubernetes renders `value: ""` for an unset Helm value: that must not blank the default.
    assert build_parser({"SWITCHYARD_LOG_LEVEL": "", "SWITCHYARD_NATS_URL": ""}).parse_args(GATEWAY).nats \
        == "nats://127.0.0.1:4222"


def test_dev_logs_warnings_unless_told_otherwise() -> None:
    assert build_parser({}).parse_args(["dev"]).log_level == "WARNING"
    assert build_parser({"SWITCHYARD_LOG_LEVEL": "INFO"}).parse_args(["dev"]).log_level == "INFO"
    assert build_parser({"SWITCHYARD_LOG_LEVEL": "INFO"}).parse_args(["dev", "--log-level", "ERROR"]).log_level \
        == "ERROR"


def test_the_operators_flags_default_to_its_variables() -> None:
    env = {"KUBECONFIG": "/k", "SWITCHYARD_WATCH_NAMESPACES": "a,b", "POD_NAMESPACE": "ops", "POD_NAME": "op-0",
           "SWITCHYARD_IMAGE": "registry.example/sy:1", "SWITCHYARD_LOG_LEVEL": "WARNING"}
    args = build_parser(env).parse_args(["operator"])
    assert (args.kubeconfig, args.namespaces, args.lease_namespace, args.identity, args.image, args.log_level) == (
        "/k", "a,b", "ops", "op-0", "registry.example/sy:1", "WARNING")
    args = build_parser(env).parse_args(["operator", "--identity", "op-9", "--image", "other:2"])
    assert (args.identity, args.image) == ("op-9", "other:2")
    args = build_parser({}).parse_args(["operator"])
    assert (args.kubeconfig, args.lease_namespace, args.log_level) == (None, "switchyard-system", "INFO")
    assert args.identity and args.image.startswith("ghcr.io/switchyard-dev/switchyard:")


def test_the_workers_flags_default_to_its_variables() -> None:
    base = ["--model", "m", "--handler", "switchyard.worker.handlers:echo"]
    env = {"SWITCHYARD_NATS_URL": "nats://env:4222", "SWITCHYARD_HEALTH_HOST": "10.0.0.7",
           "SWITCHYARD_LOG_LEVEL": "DEBUG"}
    args = worker_parser(environ=env).parse_args(base)
    assert (args.nats, args.health_host, args.log_level) == ("nats://env:4222", "10.0.0.7", "DEBUG")
    args = worker_parser(environ=env).parse_args([*base, "--log-level", "ERROR", "--nats", "nats://flag:4222"])
    assert (args.nats, args.log_level) == ("nats://flag:4222", "ERROR")
    args = worker_parser(environ={}).parse_args(base)
    assert (args.nats, args.health_host, args.log_level) == ("nats://127.0.0.1:4222", "0.0.0.0", "INFO")


@pytest.mark.parametrize("value,on", [("0", False), ("1", True), ("", True), ("yes", True)])
def test_uvloop_is_on_unless_the_variable_is_zero(value: str, on: bool) -> None:
    assert load(WorkerSettings, {"SWITCHYARD_UVLOOP": value}).uvloop is on


def test_the_workers_host_is_its_pod_name() -> None:
    assert load(WorkerSettings, {"POD_NAME": "echo-7c9d-x2"}).pod_name == "echo-7c9d-x2"
    assert load(WorkerSettings, {}).pod_name is None


def test_every_variable_is_in_the_one_table() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text[text.index("## Settings"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = {m.group(1) for m in re.finditer(r"^\| `([A-Z_]+)` \|", section, re.M)}
    read = {v.name for cls in SETTINGS for v in variables(cls)}
    assert read - rows == set(), "variables the settings read but docs/architecture.md's table does not list"
    assert rows - read == set(), "rows in docs/architecture.md's settings table that no settings class reads"


# Modules that read the environment themselves, and why; anything else goes through a settings class.
OWN_VARIABLES = {
    "switchyard/settings.py": "the one reader",
    "switchyard/tracing.py": "OTEL_SERVICE_NAME, OpenTelemetry's own variable, where its SDK is configured",
    "switchyard/worker/tracing.py": "OTEL_SDK_DISABLED and the OTLP endpoints: OpenTelemetry's own variables, "
                                    "read by serve() too, which runs without the command line",
    "switchyard/worker/engine.py": "SWITCHYARD_ENGINE_*: that handler's configuration, not the worker's",
    "switchyard/worker/examples/minilm.py": "SWITCHYARD_MINILM_DIR: that example handler's configuration",
    "switchyard/worker/config.py": "NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES: the device plugin's, "
                                   "counted for the usage ledger",
}


def test_nothing_else_reads_the_environment() -> None:
    readers = set()
    for path in (ROOT / "switchyard").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("switchyard/testing/"):
            continue  # test code: its switches (SWITCHYARD_KEEP_CONTROLPLANE) are the tests'
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"} \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.add(rel)
    assert readers - set(OWN_VARIABLES) == set(), "read the environment in a settings class instead"
