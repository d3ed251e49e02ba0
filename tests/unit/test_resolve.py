"""Lane resolution and API-key checks against the example manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from switchyard.api import compile_table, load_dir
from switchyard.api.table import RoutingTable
from switchyard.errors import ApiError
from switchyard.gateway.auth import credentials, find_key
from switchyard.gateway.resolve import resolve
from switchyard.subjects import Lane, token, untoken

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_KEY = "sy-demo-key-0123456789abcdef"
TENANT_KEY = "sy-tenant-abc-key-0123456789"


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    rs, _ = load_dir(EXAMPLES)
    return compile_table(rs).raise_for_issues()


def code_of(fn, *a, **kw) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        fn(*a, **kw)
    return info.value.status, info.value.code


def test_default_route_picks_lowest_priority_bundle_and_default_profile(table: RoutingTable) -> None:
    r = resolve(table, "encode", "BAAI/bge-m3")
    assert r.lane == Lane("BAAI/bge-m3", "default", "l4", "default") and not r.pinned


def test_model_profile_selects_a_compatible_bundle_and_merges_params(table: RoutingTable) -> None:
    r = resolve(table, "encode", "BAAI/bge-m3:sparse")
    assert r.lane.bundle == "flagembedding" and r.profile == "sparse"
    assert r.params({"x": 1}) == {"output": "sparse", "x": 1}
    assert r.params({"output": "mine"}) == {"output": "mine"}  # the request wins


def test_explicit_bundle_and_machine_profile(table: RoutingTable) -> None:
    r = resolve(table, "encode", "BAAI/bge-m3", bundle="flagembedding", machine_profile="a100-80gb")
    assert (r.lane.bundle, r.lane.machine_profile) == ("flagembedding", "a100-80gb")


def test_pool_slash_profile_pins_the_pool(table: RoutingTable) -> None:
    r = resolve(table, "encode", "BAAI/bge-m3", machine_profile="tenant-abc/l4")
    assert (r.lane.pool, r.lane.machine_profile, r.pinned) == ("tenant-abc", "l4", True)
    assert code_of(resolve, table, "encode", "BAAI/bge-m3", machine_profile="tenant-abc/l4",
                   pool="default") == (400, "bad_request")


@pytest.mark.parametrize("kwargs,expected", [
    ({"model_ref": "nope/model"}, (404, "unknown_model")),
    ({"model_ref": "BAAI/bge-m3:nope"}, (404, "unknown_model")),
    ({"op": "generate"}, (400, "unsupported_operation")),
    ({"machine_profile": "h100"}, (400, "unknown_machine_profile")),
    ({"pool": "nope"}, (404, "unknown_pool")),
    ({"bundle": "sentence-transformers"}, (409, "incompatible_bundle")),
    ({"model_ref": "BAAI/bge-m3:sparse", "bundle": "default"}, (409, "incompatible_bundle")),
])
def test_resolution_errors(table: RoutingTable, kwargs: dict, expected: tuple[int, str]) -> None:
    args = {"op": "encode", "model_ref": "BAAI/bge-m3", **kwargs}
    op, model = args.pop("op"), args.pop("model_ref")
    assert code_of(resolve, table, op, model, **args) == expected


def test_key_scopes(table: RoutingTable) -> None:
    tenant = find_key(table, TENANT_KEY)
    assert tenant is not None and tenant.name == "tenant-abc"
    # A tenant key without an explicit pool lands in its own pool, unpinned.
    r = resolve(table, "encode", "BAAI/bge-m3", key=tenant)
    assert (r.lane.pool, r.pinned) == ("tenant-abc", False)
    assert code_of(resolve, table, "encode", "BAAI/bge-m3", pool="default", key=tenant) == (403, "forbidden")


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc"])
def test_malformed_authorization(header: str) -> None:
    assert code_of(credentials, header, None, None) == (401, "unauthorized")


def test_an_unknown_key_matches_none(table: RoutingTable) -> None:
    assert find_key(table, "wrong-key-0123456789") is None


def test_only_hashes_are_compared(table: RoutingTable) -> None:
    key = find_key(table, DEMO_KEY)
    assert key is not None
    assert key.sha256 == hashlib.sha256(b"sy-demo-key-0123456789abcdef").hexdigest()


@pytest.mark.parametrize("value", ["BAAI/bge-m3", "a.b*c>d e", "ünï/cødé", "_x_", "-"])
def test_subject_tokens_are_safe_and_reversible(value: str) -> None:
    tok = token(value)
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in tok)
    assert untoken(tok) == value


def test_lane_subject_round_trip() -> None:
    lane = Lane("org/m.v2", "b-1", "a100-80gb", "tenant.x")
    assert lane.subject.count(".") == 5
    assert Lane.from_subject(lane.subject) == lane
