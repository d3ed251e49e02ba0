"""The operator's view of the cluster, kept current by watches instead of lists per pass.

One informer (switchyard/informer.py) per kind the pass reads, cluster-wide or per
watched namespace: a pass reads from memory and sends no LIST request. Every event
is also the hint that its namespace needs a pass (the queue collapses bursts).

Correctness stays level-triggered: a pass still derives everything from the whole
state it reads, the informers relist every `relist_s` (so an event a watch somehow
lost is repaired within that bound, as the per-pass lists did), and the operator's
own writes go into the cache as they are answered, so a pass right after a write
sees it even before its watch event arrives (as client-go's mutation cache does).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubernetes_asyncio import client

from ..contracts import Obj
from ..informer import Informer, path_lister
from .kube import Kind

log = logging.getLogger("switchyard.operator.cache")


@dataclass(frozen=True)
class Watched:
    kind: Kind
    labels: str | None = None  # a label selector: "key=value" or "key" (present)
    hint: bool = True  # whether a change to one asks for a pass of its namespace


class Cache:
    def __init__(self, api: client.ApiClient, watched: Sequence[Watched], *, namespaces: Sequence[str] = (),
                 on_change: Callable[[str], None] | None = None, relist_s: float | None = None,
                 on_relist: Callable[[str], None] = lambda plural: None) -> None:
        self.watched = {w.kind.kind: w for w in watched}
        self.on_change = on_change or (lambda ns: None)
        # kind -> namespace -> name -> object as last seen (listed, watched, or answered to our write)
        self._objs: dict[str, dict[str, dict[str, Obj]]] = {k: {} for k in self.watched}
        self.informers = [
            Informer(f"{w.kind.plural}{'@' + ns if ns else ''}", path_lister(api, w.kind.path(ns)),
                     on_sync=self._synced(w, ns), on_event=self._event(w), relist_s=relist_s,
                     on_relist=functools.partial(on_relist, w.kind.plural), label_selector=w.labels or "")
            for w in watched for ns in ([*namespaces] if namespaces else [None])
        ]

    async def run(self) -> None:
        await asyncio.gather(*(i.run() for i in self.informers))

    async def wait_synced(self) -> None:
        for i in self.informers:
            await i.synced.wait()

    async def list(self, kind: Kind, namespace: str | None, *, labels: str | None = None) -> list[Obj]:
        """What Kube.list would answer, from memory (once every informer has listed)."""
        w = self.watched.get(kind.kind)
        if w is None or w.labels != labels or namespace is None:
            raise ValueError(f"the cache holds no {kind.kind} list for labels {labels!r} in {namespace!r}")
        await self.wait_synced()
        return list(self._objs[kind.kind].get(namespace, {}).values())

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        return self._objs.get(kind.kind, {}).get(namespace, {}).get(name)

    def namespaces(self, kinds: Sequence[Kind]) -> set[str]:
        """Namespaces holding at least one object of these kinds."""
        return {ns for k in kinds for ns, objs in self._objs.get(k.kind, {}).items() if objs}

    # -- the operator's own writes ------------------------------------------------------

    def observe(self, obj: Obj) -> None:
        """The API server's answer to a write: the object as stored, kept unless already newer."""
        w = self.watched.get(obj.get("kind", ""))
        meta = obj.get("metadata") or {}
        if w is None or "namespace" not in meta or not _matches(w.labels, meta.get("labels") or {}):
            return
        self._put(w.kind.kind, obj)

    def forget(self, kind: Kind, namespace: str | None, name: str) -> None:
        """An object we deleted: gone from the cache now (its watch event follows)."""
        self._objs.get(kind.kind, {}).get(namespace or "", {}).pop(name, None)

    # -- informer callbacks ---------------------------------------------------------------

    # builtins.list: `list` here is the method above.
    def _synced(self, w: Watched, scope: str | None) -> Callable[[builtins.list[Obj]], None]:
        def sync(items: builtins.list[Obj]) -> None:
            by_ns = self._objs[w.kind.kind]
            old = {ns: objs for ns, objs in by_ns.items() if scope is None or ns == scope}
            new: dict[str, dict[str, Obj]] = {}
            for obj in items:
                meta = _slim(obj)["metadata"]
                new.setdefault(meta["namespace"], {})[meta["name"]] = obj
            for ns in old.keys() - new.keys():
                del by_ns[ns]
            by_ns.update(new)
            settle(len(items))
            if w.hint:  # a relist after missed events: a pass for every namespace that differs
                for ns in sorted(old.keys() | new.keys()):
                    if _versions(old.get(ns, {})) != _versions(new.get(ns, {})):
                        self.on_change(ns)
        return sync

    def _event(self, w: Watched) -> Callable[[str, Obj], None]:
        def event(kind: str, obj: Obj) -> None:
            meta = obj["metadata"]
            if kind == "DELETED":
                self._objs[w.kind.kind].get(meta["namespace"], {}).pop(meta["name"], None)
            else:
                self._put(w.kind.kind, obj)
            if w.hint:
                self.on_change(meta["namespace"])
        return event

    def _put(self, kind: str, obj: Obj) -> None:
        meta = _slim(obj)["metadata"]
        objs = self._objs[kind].setdefault(meta["namespace"], {})
        held = objs.get(meta["name"])
        if held is None or _newer(meta.get("resourceVersion", ""), held["metadata"].get("resourceVersion", "")):
            objs[meta["name"]] = obj


BULK = 1000  # objects made at once past which they are moved out of the cyclic GC's sight


def settle(made: int) -> None:
    """After a bulk of long-lived objects (a relist, a burst validated): freeze what exists now.

    At 10,000 Upstreams the process holds about a million objects; a full collection walks
    them all (0.7 s on the bench machine), and the bulk is what triggers one, inside the next
    pass. Frozen objects are still freed by reference counting (these are acyclic JSON dicts and
    models); only a reference cycle alive at this moment and dropped later is never collected,
    and this runs at relists and bursts, not at every pass."""
    if made >= BULK:
        gc.freeze()


def _slim(obj: Obj) -> Obj:
    """Without managedFields, which no pass reads: often the largest part of an applied object
    (client-go's informers drop them the same way)."""
    obj["metadata"].pop("managedFields", None)
    return obj


def _versions(objs: dict[str, Obj]) -> dict[str, str]:
    return {name: o["metadata"].get("resourceVersion", "") for name, o in objs.items()}


def _newer(rv: str, than: str) -> bool:
    """resourceVersions are opaque, but etcd's are increasing integers: an older answer never
    replaces a newer event (a write's answer and its own watch event arrive in either order)."""
    try:
        return int(rv) >= int(than)
    except ValueError:
        return True


def _matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, eq, value = term.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True
