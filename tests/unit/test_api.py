"""Resource models, loading, and the compile step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.api import compile_table, load_dir, parse_objects
from switchyard.api.planner import find_cycle
from switchyard.api.table import RoutingTable

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def upstream(name: str = "echo", **spec: Any) -> dict[str, Any]:
    base = {"model": f"org/{name}", "operations": ["encode"], "machineProfiles": ["cpu"],
            "workers": {"service": f"{name}-worker"}}
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Upstream", "metadata": {"name": name},
            "spec": {**base, **spec}}


def gateway(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "gw"},
            "spec": {"auth": {"anonymous": True}, **spec}}


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def compile_objs(*objs: dict[str, Any]):  # type: ignore[no-untyped-def]
    rs, issues = parse_objects(objs)
    result = compile_table(rs)
    return result, issues + list(result.issues)


def test_examples_compile_without_issues() -> None:
    rs, issues = load_dir(EXAMPLES)
    assert issues == []
    table = compile_table(rs).raise_for_issues()
    assert set(table.models) == {"switchyard/echo", "sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-m3"}
    assert set(table.pools) == {"default", "tenant-abc"}
    assert [k.name for k in table.keys] == ["demo", "tenant-abc"]
    assert "embed-and-score" in table.planners


def test_api_keys_are_kept_only_as_hashes() -> None:
    rs, _ = load_dir(EXAMPLES)
    table = compile_table(rs).table
    raw = table.to_json().decode()
    for s in rs.secrets:
        for value in s.stringData.values():
            assert value not in raw
    assert all(len(k.sha256) == 64 for k in table.keys)


def test_table_round_trips_through_json_with_the_same_hash() -> None:
    rs, _ = load_dir(EXAMPLES)
    table = compile_table(rs, epoch=7).table
    again = RoutingTable.from_json(table.to_json())
    assert again.hash == table.hash and again.epoch == 7
    assert again.to_dict() == table.to_dict()


def test_hash_ignores_epoch_but_not_content() -> None:
    a, _ = compile_objs(gateway(), upstream())
    b, _ = compile_objs(gateway(), upstream(timeoutSeconds=5))
    assert a.table.with_epoch(9).hash == a.table.hash
    assert a.table.hash != b.table.hash


@pytest.mark.parametrize("spec,field,text", [
    ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "spec.scaling", "minReplicas must be <= maxReplicas"),
    ({"operations": []}, "spec.operations", "at least 1"),
    ({"operations": ["fly"]}, "spec.operations[0]", "encode"),
    ({"defaultMachineProfile": "h100"}, "spec", "defaultMachineProfile must be one of machineProfiles"),
    ({"model": "has space"}, "spec.model", "pattern"),
    ({"bundles": [{"name": "a"}, {"name": "a"}]}, "spec", "duplicate"),
    ({"bundles": [{"name": "a", "profiles": ["nope"]}]}, "spec", "unknown profile"),
    ({"timeoutSeconds": 0}, "spec.timeoutSeconds", "greater than 0"),
    ({"unknownField": 1}, "spec.unknownField", "Extra inputs"),
])
def test_invalid_upstream_names_resource_and_field(spec: dict[str, Any], field: str, text: str) -> None:
    _, issues = compile_objs(gateway(), upstream(**spec))
    assert issues, "expected an issue"
    issue = issues[0]
    assert issue.ref == "Upstream/echo"
    assert issue.field == field
    assert text in issue.message


def test_one_bad_upstream_does_not_take_the_others_down() -> None:
    result, issues = compile_objs(gateway(), upstream("good"), upstream("bad", machineProfiles=[]))
    assert list(result.table.models) == ["org/good"]
    assert [i.ref for i in issues] == ["Upstream/bad"]


def test_duplicate_model_is_reported_on_the_later_upstream() -> None:
    result, issues = compile_objs(gateway(), upstream("a"), {**upstream("b"), "spec": upstream("a")["spec"]})
    assert [(i.ref, i.field) for i in issues] == [("Upstream/b", "spec.model")]
    assert result.table.models["org/a"].upstream == "a"


def test_default_pool_always_exists_and_never_expires() -> None:
    pool = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "default"},
            "spec": {"ttlSeconds": 60}}
    result, issues = compile_objs(gateway(), upstream(), pool)
    assert issues == []
    assert result.table.pools["default"].ttl_seconds == 0
    result, _ = compile_objs(gateway(), upstream())
    assert "default" in result.table.pools


def test_pool_with_unknown_machine_profile_is_rejected() -> None:
    pool = {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool", "metadata": {"name": "t"},
            "spec": {"gpus": {"h100": 1}}}
    result, issues = compile_objs(gateway(), upstream(), pool)
    assert [(i.ref, i.field) for i in issues] == [("Pool/t", "spec.gpus.h100")]
    assert "t" not in result.table.pools


def test_api_key_secret_must_exist_and_be_long_enough() -> None:
    gw = gateway(auth={"apiKeys": [{"name": "k", "secretRef": {"name": "s"}}]})
    _, issues = compile_objs(gw, upstream())
    assert issues[0].field == "spec.auth.apiKeys[0].secretRef" and "no key 'key'" in issues[0].message
    _, issues = compile_objs(gw, upstream(), secret("s", key="short"))
    assert "shorter than 16" in issues[0].message
    result, issues = compile_objs(gw, upstream(), secret("s", key="x" * 32))
    assert issues == [] and result.table.keys[0].name == "k"


def test_gateway_default_pool_must_exist() -> None:
    _, issues = compile_objs(gateway(defaultPool="nope"), upstream())
    assert [(i.ref, i.field) for i in issues] == [("Gateway/gw", "spec.defaultPool")]


def test_planner_cycle_and_references() -> None:
    def planner(steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "switchyard.dev/v1alpha1", "kind": "Planner", "metadata": {"name": "p"},
                "spec": {"steps": steps}}

    a = {"name": "a", "model": "org/echo", "operation": "encode", "dependsOn": ["b"]}
    b = {"name": "b", "model": "org/echo", "operation": "encode", "dependsOn": ["a"]}
    _, issues = compile_objs(gateway(), upstream(), planner([a, b]))
    assert "cycle" in issues[0].message and issues[0].ref == "Planner/p"
    _, issues = compile_objs(gateway(), upstream(), planner([{**a, "dependsOn": ["zz"]}]))
    assert "unknown step" in issues[0].message
    _, issues = compile_objs(gateway(), upstream(), planner([{**a, "dependsOn": [], "model": "org/none"}]))
    assert issues[0].field == "spec.steps[0].model"
    _, issues = compile_objs(gateway(), upstream(), planner([{**a, "dependsOn": [], "operation": "chat"}]))
    assert issues[0].field == "spec.steps[0].operation"
    result, issues = compile_objs(gateway(), upstream(), planner([{**a, "dependsOn": []}, {**b, "dependsOn": ["a"]}]))
    assert issues == [] and result.table.planners["p"].output == "b"


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_unknown_switchyard_kind_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Nope",
                                                     "metadata": {"name": "x"}}))
    (tmp_path / "b.yaml").write_text("a: [unclosed")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment",
                                                     "metadata": {"name": "ignored"}}))
    _, issues = load_dir(tmp_path)
    assert {i.ref for i in issues} == {str(tmp_path / "b.yaml"), "Nope/x"}


def test_secret_data_must_be_base64() -> None:
    bad = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"key": "%%%"}}
    _, issues = parse_objects([bad])
    assert issues[0].field == "data" and "base64" in issues[0].message


def test_several_gateways_need_a_name() -> None:
    other = copy.deepcopy(gateway())
    other["metadata"]["name"] = "gw2"
    rs, _ = parse_objects([gateway(), other, upstream()])
    assert "several Gateways" in str(compile_table(rs).issues[0])
    assert compile_table(rs, gateway="gw2").table.gateway == "gw2"


def test_field_reference_is_current() -> None:
    from switchyard.api.reference import render

    committed = (EXAMPLES.parent / "docs" / "resources.md").read_text()
    assert committed == render(), "run: python -m switchyard.api.reference > docs/resources.md"
