"""A small Kubernetes REST layer for the operator: server-side apply, get, list, delete.

Server-side apply makes every write idempotent: the operator sends the whole
desired object each time, the API server merges it and writes nothing when
nothing changed. Objects are plain dicts, as on the wire.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..contracts import Obj
from .ratelimit import TokenBucket

FIELD_MANAGER = "switchyard-operator"


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        group_version = self.api_version
        base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        if namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
SERVICE = Kind("v1", "Service", "services")
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
EVENT = Kind("v1", "Event", "events")
POD = Kind("v1", "Pod", "pods")
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
ROLE = Kind("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
ENDPOINT_SLICE = Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
SCALED_OBJECT = Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects")

SY = "switchyard.dev/v1alpha1"
GATEWAY = Kind(SY, "Gateway", "gateways")
UPSTREAM = Kind(SY, "Upstream", "upstreams")
POOL = Kind(SY, "Pool", "pools")
PLANNER = Kind(SY, "Planner", "planners")
RESOURCE_KINDS = (GATEWAY, UPSTREAM, POOL, PLANNER)

BY_KIND = {k.kind: k for k in (CONFIGMAP, SECRET, SERVICE, SERVICE_ACCOUNT, EVENT, POD, DEPLOYMENT, ROLE,
                               ROLE_BINDING, LEASE, ENDPOINT_SLICE, SCALED_OBJECT, *RESOURCE_KINDS)}


def api_error(exc: ApiException) -> str:
    """The API server's own words (its Status message), not just the HTTP reason."""
    try:
        return f"{exc.status} {json.loads(exc.body or b'').get('message', exc.reason)}"
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


class Observer(Protocol):
    """Told of every write's answer (operator/cache.py keeps it, so a pass sees its own writes)."""

    def observe(self, obj: Obj) -> None: ...

    def forget(self, kind: Kind, namespace: str | None, name: str) -> None: ...


class Kube:
    def __init__(self, api: client.ApiClient, writes: TokenBucket | None = None) -> None:
        self.api = api
        self.writes = writes  # bounds the write rate (ratelimit.py); None: unbounded
        self.requests: Counter[str] = Counter()  # method (LIST apart from GET) -> requests sent, for bench/scale.py
        self.observer: Observer | None = None

    async def _call(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
                    content_type: str = "application/json", timeout: float = 30, counted_as: str | None = None) -> Obj:
        self.requests[counted_as or method] += 1
        if method != "GET" and self.writes is not None:
            await self.writes.take()
        data = await self.api.call_api(
            path, method, query_params=query or [], header_params={"Content-Type": content_type,
                                                                  "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], response_types_map={200: "object", 201: "object"},
            _return_http_data_only=True, _request_timeout=timeout,
        )
        data = data if isinstance(data, dict) else {}
        if method in ("PATCH", "POST", "PUT") and self.observer is not None and "metadata" in data:
            self.observer.observe(data)
        return data

    async def apply(self, obj: Obj, *, status: bool = False) -> Obj:
        """Server-side apply of the whole object (or of its status)."""
        kind = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"], "status" if status else None)
        return await self._call("PATCH", path, body=json.loads(json.dumps(obj)),
                                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                                content_type="application/apply-patch+yaml")

    async def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self._call("GET", kind.path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None) -> list[Obj]:
        query = [("labelSelector", labels)] if labels else []
        return (await self._call("GET", kind.path(namespace), query=query, counted_as="LIST")).get("items") or []

    async def create(self, obj: Obj, *, field_manager: str | None = None) -> Obj:
        kind = BY_KIND[obj["kind"]]
        query = [("fieldManager", field_manager)] if field_manager else []
        return await self._call("POST", kind.path(obj["metadata"].get("namespace")), body=obj, query=query)

    async def replace(self, obj: Obj) -> Obj:
        kind = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        return await self._call("PUT", kind.path(meta.get("namespace"), meta["name"]), body=obj)

    async def merge_patch(self, kind: Kind, namespace: str | None, name: str, patch: Obj) -> Obj | None:
        """A JSON merge patch (e.g. only spec.replicas); None when the object is gone."""
        try:
            return await self._call("PATCH", kind.path(namespace, name), body=patch,
                                    query=[("fieldManager", FIELD_MANAGER)],
                                    content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> None:
        try:
            await self._call("DELETE", kind.path(namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self.observer is not None:
            self.observer.forget(kind, namespace, name)
