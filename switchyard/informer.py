"""List-then-watch of one kind of Kubernetes object, the way client-go's informers do.

Lists, hands the full state over, then watches from the list's resourceVersion.
A 410 Gone (the watch fell out of etcd's window) means relist; any other failure
(API server restart, a connection an idle load balancer dropped) means reconnect
with backoff. Server-side watch timeouts plus a client read timeout make sure a
silently dead connection is noticed within about a minute. With `relist_s`, the
watch also ends after that long and the informer lists afresh: a cache that an
event somehow missed is repaired within that bound (level-triggered, as a list was).

Shared by the gateway (cluster mode) and the operator's cache (operator/cache.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .contracts import Obj
from .runtime import Backoff

log = logging.getLogger("switchyard.informer")

ListFn = Callable[..., Awaitable[Any]]
WATCH_TIMEOUT_S = 50  # the server ends each watch after this; we start another
READ_TIMEOUT_S = 75  # no byte for this long: the connection is dead


class Informer:
    def __init__(self, name: str, list_fn: ListFn, *,
                 on_sync: Callable[[list[Obj]], None], on_event: Callable[[str, Obj], None],
                 namespace: str | None = None, relist_s: float | None = None,
                 on_relist: Callable[[], None] = lambda: None, **selectors: str) -> None:
        self.name = name
        self._list = list_fn
        self._args = (namespace,) if namespace else ()
        self._selectors = {k: v for k, v in selectors.items() if v}
        self._on_sync, self._on_event = on_sync, on_event
        self.relist_s = relist_s
        self._on_relist = on_relist  # each full list (the operator exports them as a metric)
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                rv = await self._relist()
                backoff.reset()
                await self._watch(rv)
                continue  # relist_s is up: list afresh
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired; relisting", extra={"informer": self.name})
                    continue
                log.warning("API error", extra={"informer": self.name, "status": exc.status,
                                                "reason": str(exc.reason)})
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("API server unreachable", extra={"informer": self.name, "error": repr(exc)})
            await backoff.sleep()

    async def _relist(self) -> str:
        resp = await self._list(*self._args, **self._selectors, _preload_content=False,
                                _request_timeout=READ_TIMEOUT_S)
        body = await resp.json()
        if not 200 <= resp.status <= 299:  # unread content is not checked by the client: a Status
            raise ApiException(status=resp.status, reason=str(body.get("message") or body.get("reason")))
        self._on_sync(body.get("items") or [])
        self._on_relist()
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    async def _watch(self, rv: str) -> None:
        until = None if self.relist_s is None else time.monotonic() + self.relist_s
        while until is None or time.monotonic() < until:  # one server-side watch after another
            left = WATCH_TIMEOUT_S if until is None else max(1, min(WATCH_TIMEOUT_S, int(until - time.monotonic())))
            async with watch.Watch() as w:
                stream = w.stream(self._list, *self._args, **self._selectors, resource_version=rv,
                                  timeout_seconds=left, allow_watch_bookmarks=True,
                                  _request_timeout=READ_TIMEOUT_S)
                async for event in stream:
                    raw = event["raw_object"]
                    rv = raw.get("metadata", {}).get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        self._on_event(event["type"], raw)


def path_lister(api: client.ApiClient, path: str) -> ListFn:
    """A list-or-watch function for any collection path (e.g. /apis/keda.sh/v1alpha1/scaledobjects),
    shaped like the generated clients' list_* so an Informer takes it. Objects stay plain dicts:
    it names no return type, so a watch does not build client models of them."""
    names = {"label_selector": "labelSelector", "field_selector": "fieldSelector", "watch": "watch",
             "resource_version": "resourceVersion", "timeout_seconds": "timeoutSeconds",
             "allow_watch_bookmarks": "allowWatchBookmarks"}

    async def list_fn(_preload_content: bool = False, _request_timeout: float | None = None, **kw: Any) -> Any:
        query = [(names[k], str(v).lower() if isinstance(v, bool) else str(v)) for k, v in kw.items()
                 if v is not None]
        return await api.call_api(path, "GET", query_params=query, header_params={"Accept": "application/json"},
                                  auth_settings=["BearerToken"], _preload_content=False,
                                  _request_timeout=_request_timeout)

    return list_fn
