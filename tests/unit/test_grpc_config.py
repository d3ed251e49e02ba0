"""spec.listeners.grpc: validated against maxRequestBodyBytes, compiled into the routing table."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchyard.api import compile_table
from switchyard.api.gateway import Gateway, GatewaySpec
from switchyard.api.loader import ResourceSet
from switchyard.api.table import RoutingTable


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
