"""spec.auth.apiKeys[]: what a key carries into the compiled table (tier, scopes, window, CIDRs, rotation)."""

from __future__ import annotations

from typing import Any

import pytest

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


def issues_of(*objs: dict[str, Any]) -> list[str]:
    rs, issues = parse_objects(objs)
    return [f"{i.field}: {i.message}" for i in issues + list(compile_table(rs).issues)]


def test_every_attribute_reaches_the_table_and_its_hash() -> None:
    plain = compiled(gateway(key("old"), key("new")), secret("old"), secret("new", "n" * 32))
    full = compiled(gateway(
        key("old", tenant="acme", operations=["encode"], scopes=["readAllJobs", "readUsage"],
            notBefore="2026-01-01T00:00:00Z", notAfter="2027-01-01T00:00:00+02:00",
            allowedCidrs=["10.0.0.0/8", "2001:db8::/32"],
            rotation={"successor": "new", "sunsetAt": "2026-06-01T00:00:00Z"}),
        key("new", tenant="acme"), trustedProxies=["192.168.0.0/16"], maxFailuresPerMinute=5),
        secret("old"), secret("new", "n" * 32))
    old = full.keys[0]
    assert old.operations == ("encode",) and old.scopes == {"readAllJobs", "readUsage"}
    assert old.not_before == 1767225600.0 and old.not_after == 1798754400.0  # +02:00 taken into account
    assert old.allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert old.successor == "new" and old.sunset_at == 1780272000.0
    assert full.trusted_proxies == ("192.168.0.0/16",) and full.max_auth_failures == 5
    assert full.hash != plain.hash
    again = RoutingTable.from_json(full.to_json())
    assert again.keys == full.keys and again.hash == full.hash
    assert again.trusted_proxies == full.trusted_proxies and again.max_auth_failures == 5
    # Keys without the new fields serialize as before: a table's hash does not change with the upgrade.
    assert set(plain.to_dict()["keys"][0]) == {"name", "sha256", "pools", "models", "tenant", "admin", "managePools"}
    assert "auth" not in plain.to_dict()


def test_admin_holds_every_scope_and_manage_pools_is_a_scope() -> None:
    table = compiled(gateway(key("a", admin=True), key("b", managePools=True), key("c", scopes=["managePools"]),
                             key("d", scopes=["readFleet"])),
                     *(secret(n, n * 20) for n in "abcd"))
    a, b, c, d = table.keys
    assert all(a.can(s) for s in ("readAllJobs", "readFleet", "managePools", "readUsage"))
    assert b.can("managePools") and c.can("managePools") and not d.can("managePools")
    assert d.can("readFleet") and not d.can("readAllJobs") and not b.can("readUsage")
    assert a.allows_operation("chat") and not compiled(gateway(key(operations=["encode"])), secret("a")) \
        .keys[0].allows_operation("chat")


@pytest.mark.parametrize("fields,where,text", [
    ({"allowedCidrs": ["10.0.0.300/8"]}, "allowedCidrs", "is not a CIDR"),
    ({"allowedCidrs": ["10.0.0.1/8"]}, "allowedCidrs", "host bits set"),  # 10.0.0.0/8 meant: never widened silently
    ({"allowedCidrs": ["example.com"]}, "allowedCidrs", "is not a CIDR"),
    ({"notBefore": "2026-02-01T00:00:00Z", "notAfter": "2026-01-01T00:00:00Z"}, "apiKeys[0]", "notAfter must be later"),
    ({"notBefore": "2026-01-01T00:00:00Z", "notAfter": "2026-01-01T00:00:00Z"}, "apiKeys[0]", "notAfter must be later"),
    ({"notAfter": "2026-01-01T00:00:00"}, "notAfter", "timezone"),  # a time without an offset is ambiguous
    ({"notAfter": "next tuesday"}, "notAfter", "datetime"),
    ({"rotation": {"successor": "ghost", "sunsetAt": "2026-01-01T00:00:00Z"}}, "auth", "'ghost' is not in apiKeys"),
    ({"rotation": {"successor": "a", "sunsetAt": "2026-01-01T00:00:00Z"}}, "apiKeys[0]", "names the key itself"),
    ({"rotation": {"successor": "b"}}, "rotation.sunsetAt", "required"),
    ({"scopes": ["root"]}, "scopes[0]", "readAllJobs"),
    ({"operations": ["fly"]}, "operations[0]", "encode"),
])
def test_bad_key_fields_are_refused(fields: dict[str, Any], where: str, text: str) -> None:
    found = issues_of(gateway(key("a", **fields), key("b")), secret("a"), secret("b", "b" * 20))
    assert any(where in f and text in f for f in found), found


def test_a_successor_must_act_for_the_same_tenant() -> None:
    found = issues_of(gateway(key("a", rotation={"successor": "b", "sunsetAt": "2026-01-01T00:00:00Z"}),
                              key("b", tenant="someone-else")), secret("a"), secret("b", "b" * 20))
    assert any("acts for tenant 'someone-else', not 'a'" in f for f in found), found
    same = issues_of(gateway(key("a", tenant="t", rotation={"successor": "b", "sunsetAt": "2026-01-01T00:00:00Z"}),
                             key("b", tenant="t")), secret("a"), secret("b", "b" * 20))
    assert same == []


def test_rotation_cycles_and_duplicate_names_are_refused() -> None:
    cycle = issues_of(gateway(key("a", tenant="t", rotation={"successor": "b", "sunsetAt": "2026-01-01T00:00:00Z"}),
                              key("b", tenant="t", rotation={"successor": "a", "sunsetAt": "2026-01-01T00:00:00Z"})),
                      secret("a"), secret("b", "b" * 20))
    assert any("form a cycle" in f for f in cycle), cycle
    dupes = issues_of(gateway(key("a"), key("a")), secret("a"))
    assert any("duplicate names: a" in f for f in dupes), dupes


def test_a_successor_left_out_of_the_table_is_reported() -> None:
    found = issues_of(gateway(key("a", rotation={"successor": "b", "sunsetAt": "2026-01-01T00:00:00Z"}),
                              key("b", tenant="a")), secret("a"))  # b's Secret is missing
    assert any("rotation.successor: successor 'b' was left out" in f for f in found), found


def test_trusted_proxies_are_cidrs() -> None:
    found = issues_of(gateway(key(), trustedProxies=["10.0.0.0/33"]), secret("a"))
    assert any("trustedProxies" in f and "is not a CIDR" in f for f in found), found
