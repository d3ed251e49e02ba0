"""spec.policy: bad config refused with a clear message; the table carries it (hash unchanged without it);
windows, headers and token reservations computed as docs/policy.md says; a chain with a stage that is not
installed is broken, never silently shortened."""

from __future__ import annotations

import calendar
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api.compile import compile_table
from switchyard.api.gateway import GatewaySpec
from switchyard.api.loader import parse_objects
from switchyard.api.table import LimitRoute, PolicyRoute, RoutingTable, StageRoute
from switchyard.errors import ApiError
from switchyard.gateway.policy.chain import build
from switchyard.gateway.policy.headers import Standing, render
from switchyard.gateway.policy.stages import DEFAULT_MAX_TOKENS, DefaultsStage, token_reservation
from switchyard.gateway.policy.windows import window_end, window_length, window_of


def spec(*stages: dict[str, Any]) -> GatewaySpec:
    return GatewaySpec.model_validate({"policy": {"stages": list(stages)}})


def limits(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "limits", "limits": list(items)}


RPM = {"name": "rpm", "kind": "requests", "limit": 10, "windowSeconds": 60}


@pytest.mark.parametrize(("stages", "message"), [
    ([limits({**RPM, "period": "day"})], "set exactly one of windowSeconds and period"),
    ([limits({"name": "rpm", "kind": "requests", "limit": 10})], "set exactly one of windowSeconds and period"),
    ([limits({"name": "c", "kind": "concurrent", "limit": 2, "windowSeconds": 60})], "has no windowSeconds"),
    ([limits({**RPM, "limit": 0})], "greater than or equal to 1"),
    ([limits({**RPM, "kind": "bytes"})], "'requests', 'items', 'tokens' or 'concurrent'"),
    ([limits({**RPM, "per": "moon"})], "'key', 'tenant', 'ip' or 'global'"),
    ([limits({**RPM, "tiers": ["Gold!"]})], "tier 'Gold!' is not a DNS label"),
    ([limits({**RPM, "windowSeconds": 86_401})], "less than or equal to 86400"),
    ([limits(RPM, RPM)], "policy limit names must be unique: rpm"),
    ([limits(RPM), limits({**RPM, "name": "b"})], "names limits more than once"),
    ([{"name": "limits"}], "stage 'limits' needs at least one limit"),
    ([{"name": "limits", "limits": [RPM], "config": {}}], "stage 'limits' takes 'limits', not 'config'"),
    ([{"name": "defaults", "limits": [RPM]}], "stage 'defaults' takes 'params', not 'limits'"),
    ([{"name": "my-plugin", "params": {"a": 1}}], "stage 'my-plugin' takes 'config', not 'params'"),
    ([{"name": "Not_A_Label"}], "should match pattern"),
    ([limits({**RPM, "burst": 5})], "Extra inputs are not permitted"),
])
def test_bad_policy_config_is_refused_with_a_clear_message(stages: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        spec(*stages)
    assert message in str(err.value)


GATEWAY = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw"}, "spec": {}}


def table_of(policy: dict[str, Any] | None) -> RoutingTable:
    doc = {**GATEWAY, "spec": {"policy": policy} if policy is not None else {}}
    rs, issues = parse_objects([doc])
    assert not issues
    return compile_table(rs).table


def test_the_table_carries_the_policy_and_keeps_its_hash_without_one() -> None:
    plain = table_of(None)
    assert "policy" not in plain.to_dict()
    assert table_of({"stages": []}).hash == plain.hash
    policy = {"stages": [{"name": "defaults", "params": {"max_tokens": 64}},
                         limits({**RPM, "per": "ip", "tiers": ["free"]},
                                {"name": "q", "kind": "items", "per": "tenant", "limit": 5, "period": "month"},
                                {"name": "c", "kind": "concurrent", "per": "global", "limit": 3}),
                         {"name": "word-filter", "enabled": False, "config": {"refuse": "x"}}]}
    table = table_of(policy)
    assert table.hash != plain.hash
    again = RoutingTable.from_json(table.to_json())
    assert again.policy == table.policy and again.hash == table.hash
    stages = again.policy.stages
    assert [s.name for s in stages] == ["defaults", "limits", "word-filter"]
    assert dict(stages[0].params or {}) == {"max_tokens": 64} and not stages[2].enabled
    assert stages[1].limits == (LimitRoute("rpm", "requests", "ip", 10, 60, None, ("free",)),
                                LimitRoute("q", "items", "tenant", 5, None, "month", None),
                                LimitRoute("c", "concurrent", "global", 3, None, None, None))


def test_windows_align_to_the_epoch_and_the_utc_calendar() -> None:
    minute = LimitRoute("m", "requests", "key", 1, window_s=60)
    assert window_of(minute, 125.0) == 2 and window_end(minute, 2) == 180.0 and window_length(minute) == 60
    day = LimitRoute("d", "requests", "key", 1, period="day")
    t = calendar.timegm((2026, 11, 24, 22, 0, 0))
    assert window_end(day, window_of(day, t)) == calendar.timegm((2026, 11, 25, 0, 0, 0))
    month = LimitRoute("mo", "requests", "key", 1, period="month")
    assert window_end(month, window_of(month, t)) == calendar.timegm((2026, 12, 1, 0, 0, 0))
    december = calendar.timegm((2026, 12, 31, 23, 59, 0))
    assert window_end(month, window_of(month, december)) == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert window_of(month, december) + 1 == window_of(month, calendar.timegm((2027, 1, 1, 0, 0, 0)))


def test_ratelimit_headers_are_structured_field_lists() -> None:
    headers = render([Standing("per-key", 100, 60, 42, 17), Standing("in-flight", 4, None, 3, None)])
    assert headers == {"RateLimit-Policy": '"per-key";q=100;w=60, "in-flight";q=4',
                       "RateLimit": '"per-key";r=42;t=17, "in-flight";r=3'}
    assert render([]) == {}


def test_token_reservation_is_the_declared_maximum_per_item_plus_the_input_bytes() -> None:
    items = [{"prompt": "héllo"}] * 2
    size = len('[{"prompt":"héllo"},{"prompt":"héllo"}]'.encode())
    assert token_reservation(items, {"max_tokens": 100}) == 200 + size
    assert token_reservation(items, {"max_completion_tokens": 7}) == 14 + size
    assert token_reservation(items, {}) == 2 * DEFAULT_MAX_TOKENS + size
    for bad in ("lots", 0, -5, 1.5, True):
        with pytest.raises(ApiError) as err:
            token_reservation(items, {"max_tokens": bad})
        assert err.value.code == "bad_request"


async def test_a_stage_not_installed_breaks_the_chain_and_says_which() -> None:
    policy = PolicyRoute((StageRoute("defaults", params={"a": 1}), StageRoute("nowhere-to-be-found", config={})))
    chain = build(policy, {"defaults": lambda s: DefaultsStage(s.params or {})}, find=lambda name: None)
    assert chain.broken is not None and "'nowhere-to-be-found', which is not installed" in chain.broken

    def refuses(config: Any) -> Any:
        raise ValueError("needs a word")

    chain = build(PolicyRoute((StageRoute("picky", config={}),)), {}, find=lambda name: refuses)
    assert chain.broken == "policy stage 'picky' refused its config: needs a word"
    # A disabled stage is left out, whether it is installed or not.
    chain = build(PolicyRoute((StageRoute("nowhere-to-be-found", enabled=False, config={}),)), {},
                  find=lambda name: None)
    assert chain.broken is None and chain.stages == ()
