"""compile_table with the operator's route memo: the same table as without it, built from fewer parts."""

from __future__ import annotations

import copy

from switchyard.api import catalog, compile_table
from switchyard.api.compile import RouteMemo
from switchyard.api.loader import ResourceSet, parse_objects
from switchyard.testing import catalog as gen


def resources(objs: list[dict]) -> ResourceSet:
    rs, issues = parse_objects(objs)
    assert not issues, issues
    return rs


def test_a_memo_changes_nothing_in_the_table_and_reuses_unchanged_routes() -> None:
    objs = [gen.gateway(), *gen.upstreams(300)]
    rs = resources(objs)
    memo: RouteMemo = {}
    first = compile_table(rs, gateway=gen.GATEWAY, memo=memo).raise_for_issues()
    assert first == compile_table(rs, gateway=gen.GATEWAY).raise_for_issues()
    assert len(memo) == 300

    # One Upstream changed: a new object for it (as the operator validates a new resourceVersion),
    # the same objects for the other 299.
    changed = copy.deepcopy(objs[1 + 7])
    changed["spec"]["operations"] = ["encode", "generate", "rerank"]
    rs2 = ResourceSet()
    rs2.gateways = rs.gateways
    rs2.upstreams = [*rs.upstreams[:7], resources([changed]).upstreams[0], *rs.upstreams[8:]]
    second = compile_table(rs2, gateway=gen.GATEWAY, memo=memo).raise_for_issues()
    plain = compile_table(rs2, gateway=gen.GATEWAY).raise_for_issues()
    assert second == plain and second.hash == plain.hash != first.hash
    assert second.models[gen.model_name(7)].operations == ("encode", "generate", "rerank")
    reused = [m for m in second.models if second.models[m] is first.models[m]]
    assert len(reused) == 299 and gen.model_name(7) not in reused

    # Its JSON form too: the catalog of the memoised table is byte for byte the plain one's.
    a, b = catalog.split(second), catalog.split(plain)
    assert a.index == b.index and [s.payload for s in a.shards] == [s.payload for s in b.shards]


def test_a_deleted_upstream_leaves_the_memo_and_the_table() -> None:
    rs = resources([gen.gateway(), *gen.upstreams(20)])
    memo: RouteMemo = {}
    compile_table(rs, gateway=gen.GATEWAY, memo=memo)
    gone = rs.upstreams.pop(3)
    table = compile_table(rs, gateway=gen.GATEWAY, memo=memo).raise_for_issues()
    assert gone.spec.model not in table.models and len(table.models) == 19
    assert id(gone) not in memo and len(memo) == 19


def test_a_new_epoch_keeps_the_hash_and_the_routes() -> None:
    table = compile_table(resources([gen.gateway(), *gen.upstreams(5)]), gateway=gen.GATEWAY).table
    later = table.with_epoch(9)
    assert later.epoch == 9 and later.hash == table.hash and later.models is table.models
    assert later == type(table).from_json(later.to_json())
