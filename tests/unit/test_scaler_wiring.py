"""The gateway's scaler port, the Service, the Deployment and every ScaledObject agree."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api.gateway import Gateway
from switchyard.api.upstream import Upstream, UpstreamSpec
from switchyard.cli.main import build_parser
from switchyard.contracts import STARTED_KEY, gateway_written
from switchyard.gateway.scaledobjects import _touched
from switchyard.operator import children


def gateway(**spec: Any) -> Gateway:
    return Gateway.model_validate({"kind": "Gateway", "metadata": {"name": "main", "namespace": "team", "uid": "u1"},
                                   "spec": spec})


def upstream(**scaling: Any) -> Upstream:
    return Upstream.model_validate({
        "kind": "Upstream", "metadata": {"name": "bge-m3", "namespace": "team", "uid": "u2"},
        "spec": {"model": "BAAI/bge-m3", "operations": ["encode"], "machineProfiles": ["l4"],
                 "workers": {"service": "bge-m3-workers"}, "scaling": scaling}})


def test_scaler_port_is_served_exposed_and_dialled() -> None:
    gw = gateway(listeners={"scaler": {"port": 9191}})
    dep = children.gateway_deployment(gw, "img")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--scaler-port") + 1] == "9191"
    assert {"name": "scaler", "containerPort": 9191} in container["ports"]
    svc = children.gateway_service(gw)
    assert {"name": "scaler", "port": 9191, "targetPort": "scaler"} in svc["spec"]["ports"]
    so = children.scaled_object(upstream(), gw)
    assert so["spec"]["triggers"][0]["metadata"]["scalerAddress"] == "main-gateway.team.svc:9191"
    # The gateway's own command line accepts exactly what the operator passes.
    parsed = build_parser().parse_args(args)
    assert parsed.scaler_port == 9191


def test_default_port_and_the_address_override() -> None:
    assert children.scaler_address(gateway()) == "main-gateway.team.svc:9091"
    gw = gateway(scaler={"address": "127.0.0.1:40123"})
    so = children.scaled_object(upstream(), gw)
    assert so["spec"]["triggers"][0]["metadata"]["scalerAddress"] == "127.0.0.1:40123"


def test_scaled_object_takes_polling_and_cooldown_from_the_upstream() -> None:
    so = children.scaled_object(upstream(pollingIntervalSeconds=2, cooldownSeconds=5, minReplicas=0,
                                         maxReplicas=3, targetPendingPerReplica=10, activationThreshold=1), gateway())
    spec = so["spec"]
    assert (spec["pollingInterval"], spec["cooldownPeriod"], spec["minReplicaCount"], spec["idleReplicaCount"],
            spec["maxReplicaCount"]) == (2, 5, 1, 0, 3)
    md = spec["triggers"][0]["metadata"]
    assert (md["model"], md["targetPendingPerReplica"], md["activationThreshold"]) == ("BAAI/bge-m3", "10", "1")
    assert STARTED_KEY not in md


def test_operator_keeps_what_a_gateway_wrote() -> None:
    gw = gateway()
    address = children.scaler_address(gw)
    rendered = children.scaled_object(upstream(), gw)
    assert gateway_written(rendered, address) == {}
    # A gateway whose scaler started: a new start time and the other spelling of the address.
    touched = {**rendered, "spec": {**rendered["spec"], "triggers": [
        _touched(rendered["spec"]["triggers"][0], "2026-11-24T10:00:00Z")]}}
    kept = gateway_written(touched, address)
    assert kept == {STARTED_KEY: "2026-11-24T10:00:00Z", "scalerAddress": f"dns:///{address}"}
    again = children.scaled_object(upstream(), gw, gateway_written=kept)
    assert again["spec"]["triggers"] == touched["spec"]["triggers"]
    # Touched twice: back to the plain spelling, still the same target.
    twice = _touched(touched["spec"]["triggers"][0], "2026-11-24T10:05:00Z")
    assert twice["metadata"]["scalerAddress"] == address
    # The Gateway's scaler address changed: the old spelling is dropped, the new address wins.
    moved = children.scaler_address(gateway(scaler={"address": "10.0.0.9:9091"}))
    assert "scalerAddress" not in gateway_written(touched, moved)


def test_gateway_role_touches_only_its_own_scaled_objects() -> None:
    rules = children.gateway_role(gateway(), ["bge-m3", "echo"])["rules"]
    keda = [r for r in rules if r["apiGroups"] == ["keda.sh"]]
    assert keda == [{"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "resourceNames": ["bge-m3", "echo"],
                     "verbs": ["get", "patch"]}]
    # No ScaledObject scales on it: no rule at all (an empty resourceNames would mean every one).
    assert not [r for r in children.gateway_role(gateway())["rules"] if r["apiGroups"] == ["keda.sh"]]


def test_one_scaled_object_per_fleet_counting_only_its_lanes() -> None:
    up = Upstream.model_validate({
        "kind": "Upstream", "metadata": {"name": "bge-m3", "namespace": "team", "uid": "u2"},
        "spec": {"model": "BAAI/bge-m3", "operations": ["encode"], "machineProfiles": ["l4", "a100-80gb"],
                 "bundles": [{"name": "default"}, {"name": "fast"}],
                 "workers": {"service": "bge-m3-workers", "fleets": [
                     {"machineProfile": "l4", "deployment": "bge-m3-l4"},
                     {"machineProfile": "a100-80gb", "bundle": "default", "deployment": "bge-m3-a100"},
                     {"machineProfile": "a100-80gb", "bundle": "fast", "deployment": "bge-m3-a100-fast"}]}}})
    objects = [children.scaled_object(up, gateway(), f) for f in children.fleets(up)]
    got = [(o["metadata"]["name"], o["spec"]["scaleTargetRef"]["name"],
            o["spec"]["triggers"][0]["metadata"].get("machineProfile"),
            o["spec"]["triggers"][0]["metadata"].get("bundle")) for o in objects]
    assert got == [("bge-m3.l4", "bge-m3-l4", "l4", None),
                   ("bge-m3.a100-80gb.default", "bge-m3-a100", "a100-80gb", "default"),
                   ("bge-m3.a100-80gb.fast", "bge-m3-a100-fast", "a100-80gb", "fast")]
    # The scaler narrows the lanes it counts with exactly these keys.
    from switchyard.gateway.scaler import Target

    t = Target.from_metadata(objects[1]["spec"]["triggers"][0]["metadata"])
    assert t.subject_filter == "sy.work.*.a100-80gb.default.BAAI_2fbge-m3"
    # Without fleets: one ScaledObject named after the Upstream, counting every lane of the model.
    plain = children.scaled_object(upstream(), gateway())
    assert plain["metadata"]["name"] == "bge-m3" and "machineProfile" not in plain["spec"]["triggers"][0]["metadata"]


def test_gateway_looks_up_every_name_a_fleet_can_have() -> None:
    from switchyard.api.table import BundleRoute, ModelRoute
    from switchyard.gateway.scaledobjects import candidate_names

    route = ModelRoute(model="m", upstream="up", operations=("encode",), bundles=(BundleRoute("b", 0),),
                       profiles={}, machine_profiles=("l4", "cpu"), default_machine_profile="l4", timeout_s=1,
                       max_attempts=1, worker_service="w")
    assert candidate_names(route) == {"up", "up.l4", "up.cpu", "up.l4.b", "up.cpu.b"}


@pytest.mark.parametrize(("fleets", "error"), [
    ([{"machineProfile": "l4", "deployment": "a"}], "no fleet for machine profile 'cpu'"),
    ([{"machineProfile": "h100", "deployment": "a"}], "'h100' is not in machineProfiles"),
    ([{"machineProfile": "l4", "bundle": "slow", "deployment": "a"}], "bundle 'slow' is not in bundles"),
    ([{"machineProfile": "l4", "deployment": "a"}, {"machineProfile": "cpu", "deployment": "a"}],
     "duplicate names: a"),
    ([{"machineProfile": "l4", "deployment": "a"}, {"machineProfile": "l4", "bundle": "default", "deployment": "b"},
      {"machineProfile": "cpu", "deployment": "c"}], "'l4' needs one fleet for every bundle"),
])
def test_every_lane_is_served_by_exactly_one_fleet(fleets: list[dict[str, str]], error: str) -> None:
    spec = {"model": "m", "operations": ["encode"], "machineProfiles": ["l4", "cpu"],
            "workers": {"service": "w", "fleets": fleets}}
    with pytest.raises(ValidationError, match=error):
        UpstreamSpec.model_validate(spec)
