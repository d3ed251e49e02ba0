"""ConfigSource: every mode hands the gateway's state a complete source (gateway/configsource.py).

Nothing here connects to NATS (the URL goes nowhere): the directory and catalog sources read files,
the cluster one is only built (tests/k8s/test_gateway_cluster.py runs it against a real API server).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from switchyard.api import CompileError, catalog, load_dir
from switchyard.api import compile_table as compile_resources
from switchyard.gateway.app import new_state
from switchyard.gateway.catalogdir import CatalogDirConfig, catalog_dir
from switchyard.gateway.cluster import ClusterConfig, cluster
from switchyard.gateway.config import DirectoryConfig, directory
from switchyard.gateway.configsource import ConfigSource, Manual
from switchyard.gateway.kubepools import KubePoolStore
from switchyard.gateway.kvpools import KvPoolStore
from switchyard.messages import Heartbeat

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOWHERE = "nats://127.0.0.1:1"


def _examples(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(EXAMPLES, conf)
    return conf


def _reloads(st: object, outcome: str) -> float:
    value = st.metrics.config_reloads.labels(outcome)._value.get()  # type: ignore[attr-defined]
    return float(value)


def test_a_directory_source_loads_strictly_and_keeps_its_table_through_a_bad_edit(tmp_path: Path) -> None:
    conf = _examples(tmp_path)
    st = new_state(NOWHERE, directory(conf))
    assert isinstance(st.source, DirectoryConfig) and isinstance(st.source, ConfigSource)
    assert st.holder.table is None  # nothing until load()
    st.source.load()
    first = st.table()
    assert first.epoch == 1 and "switchyard/echo" in first.models

    upstreams = conf / "upstreams.yaml"
    upstreams.write_text(upstreams.read_text() + "\n---\napiVersion: switchyard.dev/v1alpha1\nkind: Upstream\n"
                         "metadata: {name: broken}\nspec: {model: ''}\n")
    st.source.refresh()  # what run() does when the directory changes
    assert st.table() is first and _reloads(st, "rejected") == 1

    upstreams.write_text((EXAMPLES / "upstreams.yaml").read_text().replace("switchyard/echo", "switchyard/echo2"))
    st.source.refresh()
    assert st.table().epoch == 2 and "switchyard/echo2" in st.table().models and _reloads(st, "applied") == 1


def test_a_directory_that_does_not_compile_fails_the_first_load(tmp_path: Path) -> None:
    conf = _examples(tmp_path)
    (conf / "broken.yaml").write_text("apiVersion: switchyard.dev/v1alpha1\nkind: Upstream\n"
                                      "metadata: {name: broken}\nspec: {model: ''}\n")
    st = new_state(NOWHERE, directory(conf))
    with pytest.raises(CompileError):
        st.source.load()
    assert st.holder.table is None


def test_standalone_pools_are_in_nats_kv_and_every_heartbeat_counts(tmp_path: Path) -> None:
    st = new_state(NOWHERE, directory(_examples(tmp_path)))
    assert isinstance(st.pool_store, KvPoolStore) and st.pool_store is st.source.pool_store
    assert st.source.pool_expired("nothing-made-yet") is None
    st.check_pool("nothing-made-yet")  # no lease lapsed: no 410
    beat = Heartbeat(worker_id="w1", models=["switchyard/echo"], bundle="default", machine_profile="cpu",
                     pool="default", host="not-an-endpoint-anywhere")
    assert st.source.admits(beat)


def test_a_catalog_directory_is_a_source_with_no_pools(tmp_path: Path) -> None:
    resources, issues = load_dir(EXAMPLES)
    assert not issues
    table = compile_resources(resources, epoch=7).raise_for_issues()
    catalog.write_dir(catalog.split(table, catalog.Limits(inline_bytes=0)), tmp_path)
    st = new_state(NOWHERE, catalog_dir(tmp_path))
    assert isinstance(st.source, CatalogDirConfig)
    st.source.load()
    assert st.table().hash == table.hash
    assert st.pool_store is None  # /v1/pools answers 404 here


def test_without_a_source_the_table_is_installed_by_hand() -> None:
    st = new_state(NOWHERE)
    assert isinstance(st.source, Manual) and st.pool_store is None and st.holder.table is None
    st.source.load()  # nothing to read
    assert st.holder.table is None


def test_cluster_mode_decides_which_heartbeats_count_from_ready_endpoints() -> None:
    # Built only (no API server is contacted until run()): the registry asks the source, nothing patched in.
    st = new_state(NOWHERE, cluster("team-a", "main-routing"))
    source = st.source
    assert isinstance(source, ClusterConfig) and isinstance(st.pool_store, KubePoolStore)
    assert st.pool_store.namespace == "team-a"
    beat = Heartbeat(worker_id="echo-0-abc", models=["m"], bundle="default", machine_profile="cpu", pool="default",
                     host="echo-0")
    assert not source.admits(beat)  # no EndpointSlice seen yet: not ready, so not live
    source._ready = {"echo-0"}  # what _recompute_ready() leaves once the slice lists it ready
    assert source.admits(beat)
