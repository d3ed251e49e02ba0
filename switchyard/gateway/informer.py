"""List-then-watch of one kind of Kubernetes object, the way client-go's informers do.

Lists, hands the full state over, then watches from the list's resourceVersion.
A 410 Gone (the watch fell out of etcd's window) means relist; any other failure
(API server restart, a connection an idle load balancer dropped) means reconnect
with backoff. Server-side watch timeouts plus a client read timeout make sure a
silently dead connection is noticed within about a minute.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("switchyard.gateway.informer")

Obj = dict[str, Any]
WATCH_TIMEOUT_S = 50  # the server ends each watch after this; we start another
READ_TIMEOUT_S = 75  # no byte for this long: the connection is dead


class Informer:
    def __init__(self, name: str, list_fn: Callable[..., Awaitable[Any]], *,
                 on_sync: Callable[[list[Obj]], None], on_event: Callable[[str, Obj], None],
                 namespace: str | None = None, **selectors: str) -> None:
        self.name = name
        self._list = list_fn
        self._args = (namespace,) if namespace else ()
        self._selectors = {k: v for k, v in selectors.items() if v}
        self._on_sync, self._on_event = on_sync, on_event
        self.relists = 0
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                rv = await self._relist()
                backoff = 0.5
                await self._watch(rv)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired; relisting", extra={"informer": self.name})
                    continue
                log.warning("API error", extra={"informer": self.name, "status": exc.status,
                                                "reason": str(exc.reason)})
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("API server unreachable", extra={"informer": self.name, "error": repr(exc)})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _relist(self) -> str:
        resp = await self._list(*self._args, **self._selectors, _preload_content=False,
                                _request_timeout=READ_TIMEOUT_S)
        body = await resp.json()
        self._on_sync(body.get("items") or [])
        self.relists += 1
        self.synced.set()
        return body["metadata"]["resourceVersion"]

    async def _watch(self, rv: str) -> None:
        while True:  # one server-side watch after another, resuming from the last version
            async with watch.Watch() as w:
                stream = w.stream(self._list, *self._args, **self._selectors, resource_version=rv,
                                  timeout_seconds=WATCH_TIMEOUT_S, allow_watch_bookmarks=True,
                                  _request_timeout=READ_TIMEOUT_S)
                async for event in stream:
                    raw = event["raw_object"]
                    rv = raw.get("metadata", {}).get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        self._on_event(event["type"], raw)
