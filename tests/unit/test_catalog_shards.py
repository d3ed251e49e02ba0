"""The routing table stored as a catalog: inline when small, shards and an index past the wall."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from switchyard.api import catalog, compile_table
from switchyard.api.loader import parse_objects
from switchyard.api.table import RoutingTable
from switchyard.operator import children
from switchyard.testing import catalog as gen

SMALL = catalog.Limits(inline_bytes=0)  # force shards with a handful of models


def table_of(n: int, start: int = 0, *, epoch: int = 1, **change: str) -> RoutingTable:
    ups = gen.upstreams(n, start)
    for i, ups_i in enumerate(ups):
        if str(i) in change:
            ups_i["spec"]["workers"]["service"] = change[str(i)]
    rs, issues = parse_objects([gen.gateway(), *ups])
    assert not issues
    result = compile_table(rs, gateway=gen.GATEWAY, epoch=epoch)
    assert not result.issues
    return result.table


def decoded(c: catalog.Catalog) -> dict[int, tuple[str, dict]]:
    return {s.index: catalog.decode_shard(s.payload) for s in c.shards}


def test_small_tables_stay_one_readable_routing_json() -> None:
    table = table_of(3)
    c = catalog.split(table)
    assert c.inline == table.to_json() and c.shards == () and c.index is None
    cm = children.routing_configmaps(GW, c)
    assert [o["metadata"]["name"] for o in cm] == ["main-routing"]
    assert RoutingTable.from_json(cm[0]["data"]["routing.json"]) == table


def test_ten_thousand_models_fit_well_inside_the_object_limit() -> None:
    table = table_of(10_000)
    assert len(table.to_json()) > 4 * 1024 * 1024  # the single-ConfigMap format could not hold it
    c = catalog.split(table)
    assert len(c.shards) == 16 and sum(s.models for s in c.shards) == 10_000
    objs = children.routing_configmaps(GW, c)
    # shards first, the index last: the order the operator writes them in
    assert [o["metadata"]["name"] for o in objs] == [f"main-routing-{i}" for i in range(16)] + ["main-routing"]
    for obj in objs:  # every object, base64 included, far below 1 MiB (etcd's request limit is 1.5 MiB)
        assert len(orjson.dumps(obj)) < catalog.SHARD_BYTES * 4 // 3 + 4096
    assembled = catalog.assemble(c.index, decoded(c))
    assert assembled == table and assembled.hash == table.hash and len(assembled.models) == 10_000


def test_one_changed_model_rewrites_one_shard() -> None:
    before = catalog.split(table_of(2_000, epoch=1))
    after = catalog.split(table_of(2_000, epoch=2, **{"1234": "other-worker"}))
    changed = [a.index for a, b in zip(after.shards, before.shards, strict=True) if a.payload != b.payload]
    assert changed == [catalog.bucket(gen.model_name(1234), len(after.shards))]
    assert after.index["epoch"] == 2 and after.index["hash"] != before.index["hash"]


def test_a_reader_never_assembles_half_of_two_epochs() -> None:
    old = catalog.split(table_of(2_000, epoch=1))
    new = catalog.split(table_of(2_000, epoch=2, **{"7": "other-worker"}))
    # the operator wrote the changed shard, not yet the index: the old index no longer assembles...
    mixed = {**decoded(old), **decoded(new)}
    with pytest.raises(ValueError, match="not the one epoch 1 names"):
        catalog.assemble(old.index, mixed)
    # ...and an index whose shards are not all written yet does not either
    with pytest.raises(ValueError, match="not the one epoch 2 names"):
        catalog.assemble(new.index, decoded(old))
    assert catalog.assemble(new.index, mixed).models[gen.model_name(7)].worker_service == "other-worker"


def test_a_tampered_shard_fails_the_hash_check() -> None:
    c = catalog.split(table_of(20), SMALL)
    shards = decoded(c)
    digest, models = shards[0]
    name = next(iter(models))
    models = {**models, name: {**models[name], "upstream": "someone-else"}}
    with pytest.raises(ValueError, match="hash"):
        catalog.assemble(c.index, {**shards, 0: (digest, models)})  # the digest lies: the table hash catches it


def test_too_large_is_refused_with_the_limit_named() -> None:
    table = table_of(200)
    with pytest.raises(catalog.CatalogTooLarge, match="more than the limit of 1000"):
        catalog.split(table, replace(SMALL, max_bytes=1000))
    with pytest.raises(catalog.CatalogTooLarge, match="more than 2 shards"):
        catalog.split(table, replace(SMALL, shard_bytes=800, max_shards=2))


def test_standalone_reads_the_same_catalog_from_a_directory(tmp_path: Path) -> None:
    table = table_of(50)
    catalog.write_dir(catalog.split(table, SMALL), tmp_path)
    assert (tmp_path / "catalog.json").exists() and not (tmp_path / "routing.json").exists()
    assert catalog.read_dir(tmp_path) == table
    catalog.write_dir(catalog.split(table), tmp_path)  # back to inline: the index goes
    assert not (tmp_path / "catalog.json").exists() and catalog.read_dir(tmp_path) == table


def test_the_gateway_role_may_read_every_shard_and_nothing_else() -> None:
    role = children.gateway_role(GW)
    names = role["rules"][0]["resourceNames"]
    assert names[0] == "main-routing" and len(names) == 1 + catalog.MAX_SHARDS
    assert names[-1] == f"main-routing-{catalog.MAX_SHARDS - 1}"
    shard = children.routing_configmaps(GW, catalog.split(table_of(20), SMALL))[0]
    assert base64.b64decode(shard["binaryData"]["models.json.gz"])[:2] == b"\x1f\x8b"  # gzip


GW = parse_objects([{**gen.gateway(), "metadata": {"name": "main", "namespace": "ns", "uid": "u1"}}])[0].gateways[0]
