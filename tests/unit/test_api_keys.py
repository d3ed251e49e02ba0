"""spec.auth.apiKeys[]: what a key carries into the compiled table (tier, scopes, window, CIDRs, rotation)."""

from __future__ import annotations

from typing import Any

from switchyard.api import compile_table, parse_objects
from switchyard.api.table import RoutingTable

KEY = "k" * 32


def gateway(*keys: dict[str, Any], **auth: Any) -> dict[str, Any]:
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw"},
            "spec": {"auth": {"apiKeys": list(keys), **auth}}}


def key(name: str = "a", **fields: Any) -> dict[str, Any]:
    return {"name": name, "secretRef": {"name": f"{name}-secret"}, **fields}


def secret(name: str, value: str = KEY) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-secret"}, "stringData": {"key": value}}


def compiled(*objs: dict[str, Any]) -> RoutingTable:
    rs, issues = parse_objects(objs)
    assert issues == []
    return compile_table(rs).raise_for_issues()


def test_tier_defaults_and_is_carried_through_json() -> None:
    plain = compiled(gateway(key()), secret("a"))
    pro = compiled(gateway(key(tier="pro")), secret("a"))
    assert plain.keys[0].tier == "default" and pro.keys[0].tier == "pro"
    assert pro.hash != plain.hash
    again = RoutingTable.from_json(pro.to_json())
    assert again.keys[0].tier == "pro" and again.hash == pro.hash


def test_tier_must_be_a_dns_label() -> None:
    _, issues = parse_objects([gateway(key(tier="Gold Plan")), secret("a")])
    assert issues and "tier" in issues[0].field
