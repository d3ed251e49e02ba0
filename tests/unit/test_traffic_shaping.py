"""Traffic shaping in the compile step and the resolver: weighted bundles, aliases, fallbacks, breakers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from switchyard.api import compile_table, parse_objects
from switchyard.api.issues import ConfigIssue
from switchyard.api.table import BreakerRoute, RoutingTable
from switchyard.errors import ApiError
from switchyard.gateway.breaker import Breakers
from switchyard.gateway.resolve import resolve
from switchyard.messages import Result
from switchyard.subjects import Lane

GW = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw"},
      "spec": {"auth": {"anonymous": True}}}
CANARY = [{"name": "stable", "priority": 0, "weight": 90}, {"name": "canary", "priority": 1, "weight": 10}]
IDS = [f"req-{i}" for i in range(1000)]


def upstream(name: str, **spec: Any) -> dict[str, Any]:
    base = {"model": f"org/{name}", "operations": ["encode"], "machineProfiles": ["cpu"],
            "workers": {"service": f"{name}-worker"}}
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": name},
            "spec": {**base, **spec}}


def compiled(*objs: dict[str, Any]) -> tuple[RoutingTable, list[ConfigIssue]]:
    rs, issues = parse_objects([GW, *objs])
    result = compile_table(rs)
    return result.table, issues + list(result.issues)


def table_of(*objs: dict[str, Any]) -> RoutingTable:
    table, issues = compiled(*objs)
    assert not issues, issues
    return table


# -- weighted bundles ------------------------------------------------------------------------


def test_split_is_exact_for_a_fixed_id_set_and_sticky() -> None:
    table = table_of(upstream("m", bundles=CANARY))
    got = Counter(resolve(table, "encode", "org/m", request_id=rid).lane.bundle for rid in IDS)
    # sha256 of "<tenant>\0<id>" modulo 100: this set lands 901 / 99 (within 1 % of 90/10 as well).
    assert got == {"stable": 901, "canary": 99}
    again = [resolve(table, "encode", "org/m", request_id=rid).lane.bundle for rid in IDS[:50]]
    assert again == [resolve(table, "encode", "org/m", request_id=rid).lane.bundle for rid in IDS[:50]]


def test_the_split_is_scoped_by_tenant() -> None:
    """Another tenant's same request id is another point of the split (ids are scoped by tenant)."""
    from switchyard.api.table import KeyRoute
    table = table_of(upstream("m", bundles=CANARY))
    a, b = KeyRoute("a", "", None, None, "tenant-a"), KeyRoute("b", "", None, None, "tenant-b")
    by_a = [resolve(table, "encode", "org/m", key=a, request_id=rid).lane.bundle for rid in IDS]
    by_b = [resolve(table, "encode", "org/m", key=b, request_id=rid).lane.bundle for rid in IDS]
    assert by_a != by_b and Counter(by_a)["canary"] > 50 and Counter(by_b)["canary"] > 50


def test_explicit_bundle_wins_and_weight_zero_gets_only_explicit_traffic() -> None:
    bundles = [{"name": "a", "weight": 100}, {"name": "dark", "weight": 0}]
    table = table_of(upstream("m", bundles=bundles))
    assert {resolve(table, "encode", "org/m", request_id=rid).lane.bundle for rid in IDS} == {"a"}
    res = resolve(table, "encode", "org/m", bundle="dark", request_id="x")
    assert res.lane.bundle == "dark" and res.split == ()


def test_split_follows_profiles_and_renormalizes() -> None:
    """A profile only the canary serves goes to the canary; priority decides where no weight is set."""
    bundles = [{"name": "stable", "weight": 50, "profiles": ["dense"]}, {"name": "canary", "weight": 50},
               {"name": "legacy", "priority": 0}]
    table = table_of(upstream("m", bundles=bundles, profiles=[{"name": "dense"}, {"name": "sparse"}]))
    assert {resolve(table, "encode", "org/m:sparse", request_id=rid).lane.bundle for rid in IDS[:100]} == {"canary"}
    assert {resolve(table, "encode", "org/m:dense", request_id=rid).lane.bundle
            for rid in IDS[:100]} == {"stable", "canary"}
    unweighted = table_of(upstream("n", bundles=[{"name": "x", "priority": 5}, {"name": "y", "priority": 1}]))
    assert resolve(unweighted, "encode", "org/n", request_id="r").lane.bundle == "y"


def test_resolution_describes_the_split() -> None:
    table = table_of(upstream("m", bundles=CANARY))
    d = resolve(table, "encode", "org/m", request_id="r1").describe()
    assert d["split"] == [{"bundle": "stable", "weight": 90}, {"bundle": "canary", "weight": 10}]
    assert d["bundle"] in ("stable", "canary")


@pytest.mark.parametrize("bundles,text", [
    ([{"name": "a", "weight": 60}, {"name": "b", "weight": 30}], "the weights sum to 90"),
    ([{"name": "a", "weight": 100}, {"name": "b", "weight": 1}], "the weights sum to 101"),
    ([{"name": "a", "weight": 101}], "less than or equal to 100"),
    ([{"name": "a", "weight": -1}], "greater than or equal to 0"),
])
def test_bad_weights_are_config_issues(bundles: list[dict[str, Any]], text: str) -> None:
    table, issues = compiled(upstream("m", bundles=bundles))
    assert "org/m" not in table.models
    assert any(i.ref == "Upstream/m" and text in i.message for i in issues), issues


def test_weights_round_trip_and_tables_without_shaping_keep_their_hash() -> None:
    table = table_of(upstream("m", bundles=CANARY, aliases=["m-latest"],
                              circuitBreaker={"consecutiveFailures": 3, "coolOffSeconds": 5},
                              fallback={"model": "org/f", "afterSeconds": 30}), upstream("f"))
    again = RoutingTable.from_json(table.to_json())
    assert again == table and again.hash == table.hash
    assert again.models["org/m"].bundles[1].weight == 10 and again.aliases == {"m-latest": "org/m"}
    assert again.models["org/m"].breaker == BreakerRoute(3, 5.0, 1)
    plain = table_of(upstream("f"))
    assert "aliases" not in plain.to_dict() and "weight" not in str(plain.to_dict()["models"])


# -- aliases -----------------------------------------------------------------------------------


def test_alias_resolves_to_its_model_and_key_scopes_apply_to_the_model() -> None:
    from switchyard.api.table import KeyRoute
    table = table_of(upstream("m", aliases=["m-latest", "org/m-v2"]), upstream("f"))
    res = resolve(table, "encode", "m-latest")
    assert res.lane.model == "org/m" and res.served_model == "org/m" and res.describe()["alias"] == "m-latest"
    only_f = KeyRoute("k", "", None, ("org/f",))
    with pytest.raises(ApiError) as info:
        resolve(table, "encode", "m-latest", key=only_f)
    assert info.value.code == "forbidden" and "org/m" in info.value.message


@pytest.mark.parametrize("objs,field,text", [
    ([upstream("a", aliases=["x"]), upstream("b", aliases=["x"])], "spec.aliases[0]", "already names 'org/a'"),
    ([upstream("a", aliases=["org/b"]), upstream("b")], "spec.aliases[0]", "served by Upstream b"),
])
def test_alias_conflicts_are_config_issues(objs: list[dict[str, Any]], field: str, text: str) -> None:
    table, issues = compiled(*objs)
    assert [(i.field, text in i.message) for i in issues if i.ref.endswith(("/a", "/b"))] == [(field, True)]
    assert set(table.aliases.values()) <= {"org/a"}  # the first Upstream by name keeps a contested alias


@pytest.mark.parametrize("spec,text", [
    ({"aliases": ["org/m"]}, "the model itself"),
    ({"aliases": ["x", "x"]}, "duplicate names: x"),
    ({"fallback": {"model": "org/m", "afterSeconds": 5}}, "cannot fall back to itself"),
    ({"fallback": {"model": "org/f", "afterSeconds": 0}}, "greater than or equal to 1"),
    ({"circuitBreaker": {"consecutiveFailures": 0}}, "greater than or equal to 1"),
    ({"circuitBreaker": {"consecutiveFailures": 2, "coolOffSeconds": 3601}}, "less than or equal to 3600"),
    ({"circuitBreaker": {"consecutiveFailures": 2, "probes": 3}}, "Extra inputs are not permitted"),
])
def test_bad_shaping_fields_are_refused(spec: dict[str, Any], text: str) -> None:
    table, issues = compiled(upstream("m", **spec), upstream("f"))
    assert "org/m" not in table.models and any(text in i.message for i in issues), issues


def test_fallback_must_name_a_served_model() -> None:
    table, issues = compiled(upstream("m", aliases=["m2"], fallback={"model": "org/nope", "afterSeconds": 5}))
    assert [i.field for i in issues] == ["spec.fallback.model"]
    assert table.models["org/m"].fallback is None and table.aliases == {"m2": "org/m"}


# -- the breaker's state machine (a clock we move: timing is never asserted) ---------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_failures_half_opens_and_a_probe_closes_it() -> None:
    table = table_of(upstream("m", circuitBreaker={"consecutiveFailures": 3, "coolOffSeconds": 30}))
    route, lane, clock = table.models["org/m"], Lane("org/m", "default", "cpu", "default"), Clock()
    b = Breakers(clock)
    bad, good = Result("x", False, error={"code": "worker_error"}, state="failed"), Result("x", True)
    for t in ("a", "b"):
        b.admit(lane, route, t)
        b.record(lane, route, t, bad)
    b.record(lane, route, "a", good)  # a success ends the streak
    b.record(lane, route, "a", bad)
    b.record(lane, route, "b", bad)
    b.record(lane, route, "a", Result("x", False, error={"code": "invalid_input"}, state="failed"))  # the caller's
    assert b.state(lane) == "closed"
    b.record(lane, route, "b", None)  # no result in time: the third failure in a row, of two tenants
    assert b.state(lane) == "open"
    with pytest.raises(ApiError) as info:
        b.admit(lane, route, "c")
    assert (info.value.status, info.value.code, info.value.headers["Retry-After"]) == (503, "circuit_open", "30")
    clock.now += 20
    with pytest.raises(ApiError) as info:
        b.admit(lane, route, "c")
    assert info.value.headers["Retry-After"] == "10"
    clock.now += 10
    assert b.state(lane) == "half_open"
    b.admit(lane, route, "c")  # the probe
    with pytest.raises(ApiError):  # one probe at a time
        b.admit(lane, route, "a")
    b.record(lane, route, "c", bad)  # the probe failed: another cool-off
    assert b.state(lane) == "open"
    clock.now += 30
    b.admit(lane, route, "c")
    b.record(lane, route, "c", good)
    assert b.state(lane) == "closed"
    b.admit(lane, route, "a")
    assert b.snapshot()[0]["opened"] == 2


def test_one_tenants_failures_open_a_circuit_for_that_tenant_only() -> None:
    """A tenant whose inputs crash the handler cannot shut the lane for the others."""
    table = table_of(upstream("m", circuitBreaker={"consecutiveFailures": 2, "coolOffSeconds": 30}))
    route, lane, clock = table.models["org/m"], Lane("org/m", "default", "cpu", "default"), Clock()
    b = Breakers(clock)
    bad = Result("x", False, error={"code": "worker_error"}, state="failed")
    b.record(lane, route, "hostile", bad)
    b.record(lane, route, "hostile", bad)
    assert (b.state(lane), b.state(lane, "hostile")) == ("closed", "open")
    b.admit(lane, route, "victim")
    with pytest.raises(ApiError) as info:
        b.admit(lane, route, "hostile")
    assert info.value.code == "circuit_open" and "this tenant's" in info.value.message
    assert [(c["tenant"], c["state"]) for c in b.snapshot()] == [(None, "closed"), ("hostile", "open")]


def test_a_lost_probe_frees_its_slot_after_the_timeout_and_no_breaker_means_no_state() -> None:
    table = table_of(upstream("m", timeoutSeconds=5, circuitBreaker={"consecutiveFailures": 1, "coolOffSeconds": 1}))
    route, lane, clock = table.models["org/m"], Lane("org/m", "default", "cpu", "default"), Clock()
    b = Breakers(clock)
    b.record(lane, route, "a", None)  # one tenant: its own circuit
    clock.now += 1
    b.admit(lane, route, "a")  # a probe whose outcome never comes (it became a 202 job)
    with pytest.raises(ApiError):
        b.admit(lane, route, "a")
    clock.now += 5
    b.admit(lane, route, "a")
    plain = table_of(upstream("m")).models["org/m"]
    b.admit(lane, plain, "a")  # the breaker was taken off the Upstream: its state goes
    assert b.snapshot() == [] and b.state(lane, "a") == "closed"


@pytest.mark.parametrize("spec,ok", [
    ({"aliases": [f"a{i}" for i in range(16)]}, True),
    ({"aliases": [f"a{i}" for i in range(17)]}, False),
    ({"aliases": ["a" * 200]}, True),
    ({"aliases": ["a" * 201]}, False),
    ({"aliases": ["has space"]}, False),
    ({"aliases": ["-leading-dash"]}, False),
    ({"circuitBreaker": {"consecutiveFailures": 1000, "coolOffSeconds": 1, "halfOpenProbes": 100}}, True),
    ({"circuitBreaker": {"consecutiveFailures": 1001}}, False),
    ({"circuitBreaker": {"consecutiveFailures": 1, "coolOffSeconds": 0}}, False),
    ({"circuitBreaker": {"consecutiveFailures": 1, "halfOpenProbes": 101}}, False),
    ({"circuitBreaker": {"consecutiveFailures": 1, "halfOpenProbes": 0}}, False),
    ({"fallback": {"model": "org/f", "afterSeconds": 86_400}}, True),
    ({"fallback": {"model": "org/f", "afterSeconds": 86_401}}, False),
    ({"fallback": {"model": "org/f"}}, False),
    ({"bundles": [{"name": "a", "weight": 100}, {"name": "b", "weight": 0}]}, True),
    ({"bundles": [{"name": "a", "weight": 0}]}, False),  # the weights set sum to 0, not 100
])
def test_shaping_fields_at_and_past_their_limits(spec: dict[str, Any], ok: bool) -> None:
    table, issues = compiled(upstream("m", **spec), upstream("f"))
    assert ("org/m" in table.models and not issues) is ok, issues
