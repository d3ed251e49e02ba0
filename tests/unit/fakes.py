"""In-memory fakes of the Kubernetes API, for unit tests that run in milliseconds.

FakeApiServer answers `call_api` as kubernetes_asyncio's ApiClient does, so the operator's real
`Kube` (and everything above it: the reconciler, status writes, leader election) runs against it
unchanged. It keeps objects in a dict, and does what the operator relies on a real API server for:
resourceVersions that move only when an object changes, 404 and 409 as `ApiException`, a PUT
refused when its resourceVersion is stale, generateName, label selectors, the status
subresource, server-side apply (with force: the applied object wins; status kept) and JSON merge
patches. It is a fake, not the API server: no admission, no defaulting, no validation, no field
ownership and no garbage collector. The real-API-server tests (tests/k8s) stay the outer ring.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from switchyard.operator.kube import BY_KIND

Obj = dict[str, Any]
# What a pass can never change on its own: the server's bookkeeping.
SERVER_FIELDS = ("resourceVersion", "uid", "generation", "creationTimestamp")


@dataclass(frozen=True)
class Call:
    method: str  # GET, LIST, POST, PUT, PATCH, DELETE
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None = None  # "status" for the status subresource


@dataclass
class Route:
    """One parsed API path: /api/v1/... or /apis/<group>/<version>/..."""
    api_version: str
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None


def parse_path(path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        api_version, rest = parts[1], parts[2:]
    elif parts[0] == "apis":
        api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        raise ValueError(f"not an API path: {path}")
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    tail: list[str | None] = [*rest[1:], None, None]
    name, sub = tail[0], tail[1]
    return Route(api_version, rest[0], namespace, name, sub)


def matches(labels: Mapping[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated."""
    for term in (t.strip() for t in (selector or "").split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "reason": reason,
                           "code": status}).encode()  # the response's bytes, as the real client keeps them
    return exc


@dataclass
class FakeApiServer:
    """Stands in for `kubernetes_asyncio.client.ApiClient`: pass it to `Kube(...)`."""

    objects: dict[tuple[str, str | None, str], Obj] = field(default_factory=dict)  # (plural, ns, name) -> object
    calls: list[Call] = field(default_factory=list)
    down: bool = False  # True: every call fails as with the API server unreachable
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _generated: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _uids: set[str] = field(default_factory=set)

    # -- what tests read ------------------------------------------------------------------

    def get(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, plural: str, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: kv[0][2])
                if p == plural and (namespace is None or ns == namespace)]

    def writes(self, sub: str | None = None) -> list[Call]:
        """The calls that could change something (every method but GET and LIST)."""
        return [c for c in self.calls if c.method not in ("GET", "LIST") and (sub is None or c.sub == sub)]

    def put(self, obj: Obj) -> Obj:
        """Store `obj` as if a user had applied it (a resourceVersion and a uid), bypassing the calls log."""
        route = _route_of(obj)
        stored = self._stamp(copy.deepcopy(obj))
        self.objects[(route.plural, route.namespace, obj["metadata"]["name"])] = stored
        return copy.deepcopy(stored)

    def update(self, obj: Obj) -> Obj:
        """Change a stored object as a user's `kubectl apply` would (its status kept, generation moved on a
        spec change), bypassing the calls log."""
        route = _route_of(obj)
        key = (route.plural, route.namespace, obj["metadata"]["name"])
        return self._write(key, copy.deepcopy(obj), self.objects[key], keep_status=True)

    # -- the ApiClient surface Kube uses ------------------------------------------------------

    async def call_api(self, resource_path: str, method: str, *, query_params: list[tuple[str, str]] | None = None,
                       header_params: dict[str, str] | None = None, body: Any = None, **_: Any) -> Obj:
        await asyncio.sleep(0)  # a real call yields: concurrent writers interleave as they would
        if self.down:
            raise OSError("connection refused (FakeApiServer.down)")
        r = parse_path(resource_path)
        query = dict(query_params or [])
        content_type = (header_params or {}).get("Content-Type", "application/json")
        key = (r.plural, r.namespace, r.name or "")
        if method == "GET" and r.name is None:
            self.calls.append(Call("LIST", r.plural, r.namespace, None))
            items = [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: kv[0][2])
                     if p == r.plural and (r.namespace is None or ns == r.namespace)
                     and matches(o["metadata"].get("labels") or {}, query.get("labelSelector"))]
            return {"items": items, "metadata": {"resourceVersion": str(next(self._rv))}}
        self.calls.append(Call(method, r.plural, r.namespace, r.name, r.sub))
        current = self.objects.get(key)
        if method == "GET":
            return copy.deepcopy(self._existing(current, r))
        if method == "DELETE":
            self._existing(current, r)
            del self.objects[key]
            return {"kind": "Status", "status": "Success"}
        if method == "POST":
            obj = copy.deepcopy(body)
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._generated):05d}"
            key = (r.plural, r.namespace, meta["name"])
            if key in self.objects:
                raise _error(409, "AlreadyExists", f'{r.plural} "{meta["name"]}" already exists')
            meta.setdefault("namespace", r.namespace)
            self.objects[key] = self._stamp(obj)
            return copy.deepcopy(self.objects[key])
        if method == "PUT":
            existing = self._existing(current, r)
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent and sent != existing["metadata"]["resourceVersion"]:
                raise _error(409, "Conflict", f'Operation cannot be fulfilled on {r.plural} "{r.name}": '
                                              "the object has been modified; please apply your changes to the "
                                              "latest version and try again")
            return self._write(key, copy.deepcopy(body), existing, keep_status=True)
        if method == "PATCH":
            if content_type == "application/apply-patch+yaml":
                return self._apply(key, body, current, r)
            if content_type == "application/merge-patch+json":
                existing = self._existing(current, r)
                return self._write(key, merge_patch(copy.deepcopy(existing), body), existing, keep_status=False)
        raise _error(405, "MethodNotAllowed", f"{method} {content_type} is not faked")

    # -- internals ---------------------------------------------------------------------------

    def _existing(self, current: Obj | None, r: Route) -> Obj:
        if current is None:
            raise _error(404, "NotFound", f'{r.plural} "{r.name}" not found')
        return current

    def _apply(self, key: tuple[str, str | None, str], body: Obj, current: Obj | None, r: Route) -> Obj:
        """Server-side apply with force: the applied fields win (for the status subresource, only status)."""
        if r.sub == "status":
            existing = self._existing(current, r)
            new = copy.deepcopy(existing)
            new["status"] = copy.deepcopy(body.get("status") or {})
            return self._write(key, new, existing, keep_status=False)
        if current is None:
            obj = copy.deepcopy(body)
            obj["metadata"].setdefault("namespace", r.namespace)
            self.objects[key] = self._stamp(obj)
            return copy.deepcopy(self.objects[key])
        return self._write(key, copy.deepcopy(body), current, keep_status=True)

    def _write(self, key: tuple[str, str | None, str], new: Obj, old: Obj, *, keep_status: bool) -> Obj:
        if keep_status and "status" in old:
            new["status"] = old["status"]
        meta = new.setdefault("metadata", {})
        for f in SERVER_FIELDS:
            meta.pop(f, None)
            if f in old["metadata"]:
                meta[f] = old["metadata"][f]
        meta.setdefault("namespace", old["metadata"].get("namespace"))
        if _content(new) == _content(old):
            return copy.deepcopy(old)  # nothing changed: nothing written, the resourceVersion stays
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != \
                {k: v for k, v in old.items() if k not in ("metadata", "status")}:
            meta["generation"] = (old["metadata"].get("generation") or 1) + 1
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[key] = new
        return copy.deepcopy(new)

    def _stamp(self, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        if "uid" not in meta:  # readable and the same every run (golden files show owners' uids); never reused
            uid = f"uid-{obj.get('kind', '').lower()}-{meta['name']}"
            n = 1
            while uid + (f"-{n}" if n > 1 else "") in self._uids:
                n += 1
            meta["uid"] = uid + (f"-{n}" if n > 1 else "")
        self._uids.add(meta["uid"])
        meta.setdefault("generation", 1)
        return obj


def _content(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"] = {k: v for k, v in out.get("metadata", {}).items() if k != "resourceVersion"}
    return out


def _route_of(obj: Obj) -> Route:
    return Route(obj["apiVersion"], BY_KIND[obj["kind"]].plural, obj["metadata"].get("namespace"),
                 obj["metadata"]["name"], None)


class FakeClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
