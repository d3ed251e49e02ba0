"""spec.listeners.grpc: validated against maxRequestBodyBytes, compiled into the routing table, rendered by the
operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api import compile_table
from switchyard.api.gateway import Gateway, GatewaySpec
from switchyard.api.loader import ResourceSet
from switchyard.api.table import RoutingTable
from switchyard.cli.main import build_parser
from switchyard.operator import children

ROOT = Path(__file__).resolve().parents[2]


def _table(spec: dict) -> RoutingTable:
    gw = Gateway.model_validate({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway",
                                 "metadata": {"name": "gw"}, "spec": spec})
    return compile_table(ResourceSet(gateways=[gw]), epoch=1).table


def test_receive_limit_defaults_to_the_body_limit_and_round_trips() -> None:
    table = _table({"maxRequestBodyBytes": 4096, "listeners": {"grpc": {"keepaliveTimeSeconds": 5}}})
    assert table.grpc is not None and table.grpc.max_receive_bytes == 4096
    assert table.grpc.keepalive_time_s == 5.0
    again = RoutingTable.from_json(table.to_json())
    assert again.grpc == table.grpc and again.hash == table.hash


def test_no_grpc_listener_leaves_the_table_as_it_was() -> None:
    table = _table({})
    assert table.grpc is None and "grpc" not in table.to_dict()


def test_a_receive_limit_past_the_body_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="maxReceiveMessageBytes"):
        GatewaySpec.model_validate({"maxRequestBodyBytes": 2048,
                                    "listeners": {"grpc": {"maxReceiveMessageBytes": 4096}}})


def _gateway(**spec: Any) -> Gateway:
    return Gateway.model_validate({"kind": "Gateway", "metadata": {"name": "main", "namespace": "team", "uid": "u1"},
                                   "spec": spec})


def test_the_grpc_port_is_served_exposed_and_allowed_only_when_turned_on() -> None:
    gw = _gateway(listeners={"grpc": {"port": 50061}})
    container = children.gateway_deployment(gw, "img")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--grpc-port") + 1] == "50061"
    assert {"name": "grpc", "containerPort": 50061} in container["ports"]
    assert {"name": "grpc", "port": 50061, "targetPort": "grpc"} in children.gateway_service(gw)["spec"]["ports"]
    # The gateway's own command line takes what the operator passes.
    assert build_parser().parse_args(args).grpc_port == 50061
    # The NetworkPolicies admit the container's named port (manifests and the chart alike).
    for path in ("manifests/networkpolicy.yaml", "charts/switchyard/templates/networkpolicy.yaml"):
        assert "{protocol: TCP, port: grpc}" in (ROOT / path).read_text(), path

    off = _gateway()
    container = children.gateway_deployment(off, "img")["spec"]["template"]["spec"]["containers"][0]
    assert "--grpc-port" not in container["args"] and all(p["name"] != "grpc" for p in container["ports"])
    assert all(p["name"] != "grpc" for p in children.gateway_service(off)["spec"]["ports"])


def test_a_grpc_port_taken_by_another_listener_is_refused() -> None:
    with pytest.raises(ValidationError, match="taken by another listener"):
        GatewaySpec.model_validate({"listeners": {"grpc": {"port": 8080}}})
    with pytest.raises(ValidationError, match="taken by another listener"):
        GatewaySpec.model_validate({"listeners": {"scaler": {"port": 9999}, "grpc": {"port": 9999}}})
