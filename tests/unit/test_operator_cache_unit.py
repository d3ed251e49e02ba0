"""The operator cache's bookkeeping: newer wins, only what it watches, hints per namespace."""

from __future__ import annotations

from typing import Any

from switchyard.operator.cache import Cache, Watched
from switchyard.operator.kube import CONFIGMAP, SECRET, UPSTREAM

MANAGED = "app.kubernetes.io/managed-by=switchyard-operator"


def obj(kind: str, ns: str, name: str, rv: str, **labels: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": ns, "name": name, "resourceVersion": rv, "labels": labels}}


def cache(hints: list[str]) -> Cache:
    return Cache(None, [Watched(UPSTREAM), Watched(CONFIGMAP, MANAGED)], on_change=hints.append)  # type: ignore[arg-type]


def test_an_older_answer_never_replaces_a_newer_event() -> None:
    hints: list[str] = []
    c = cache(hints)
    upstreams = c.informers[0]
    upstreams._on_sync([obj("Upstream", "a", "u", "10")])
    c.observe(obj("Upstream", "a", "u", "12"))  # our write's answer
    upstreams._on_event("MODIFIED", obj("Upstream", "a", "u", "11"))  # an event from before it
    assert c.get(UPSTREAM, "a", "u")["metadata"]["resourceVersion"] == "12"
    upstreams._on_event("MODIFIED", obj("Upstream", "a", "u", "13"))
    assert c.get(UPSTREAM, "a", "u")["metadata"]["resourceVersion"] == "13"
    upstreams._on_event("DELETED", obj("Upstream", "a", "u", "14"))
    assert c.get(UPSTREAM, "a", "u") is None and hints.count("a") == 4


def test_only_what_is_watched_is_kept() -> None:
    c = cache([])
    c.informers[1]._on_sync([])
    c.observe(obj("ConfigMap", "a", "mine", "5", **{"app.kubernetes.io/managed-by": "switchyard-operator"}))
    c.observe(obj("ConfigMap", "a", "theirs", "6"))  # not labelled: a list with the selector would not show it
    c.observe(obj("Secret", "a", "key", "7"))  # a kind it does not watch
    assert c.get(CONFIGMAP, "a", "mine") is not None
    assert c.get(CONFIGMAP, "a", "theirs") is None and c.get(SECRET, "a", "key") is None


def test_a_relist_hints_only_the_namespaces_that_differ() -> None:
    hints: list[str] = []
    c = cache(hints)
    sync = c.informers[0]._on_sync
    sync([obj("Upstream", "a", "u", "1"), obj("Upstream", "b", "v", "2")])
    hints.clear()
    sync([obj("Upstream", "a", "u", "1"), obj("Upstream", "c", "w", "3")])  # b's went, c's came, a's the same
    assert sorted(hints) == ["b", "c"]
    assert c.namespaces([UPSTREAM]) == {"a", "c"}
