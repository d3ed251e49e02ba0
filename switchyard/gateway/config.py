"""How the gateway's routing table is swapped, and standalone mode's source: a directory of manifests.

Requests read `holder.table` once when they start, so a reload never changes
the config under a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..api import CompileError, compile_table, load_dir
from ..api.pool import Pool
from ..api.table import RoutingTable
from ..tasks import together
from .configsource import ConfigSource, SourceFactory, SourceParts
from .kvpools import KvPoolStore

log = logging.getLogger("switchyard.gateway.config")


class TableHolder:
    def __init__(self, table: RoutingTable | None = None) -> None:
        self.table = table
        self._listeners: list[Callable[[RoutingTable], None]] = []

    def on_change(self, fn: Callable[[RoutingTable], None]) -> None:
        self._listeners.append(fn)
        if self.table is not None:
            fn(self.table)

    def swap(self, table: RoutingTable) -> bool:
        """Install `table` unless it is what we serve already; True when it changed."""
        if self.table is not None and table.hash == self.table.hash and table.epoch == self.table.epoch:
            return False
        self.table = table
        for fn in self._listeners:
            fn(table)
        log.info("routing table installed", extra={"epoch": table.epoch, "hash": table.hash[:12],
                                                   "models": len(table.models)})
        return True


def directory(path: str | Path, gateway: str | None = None, interval_s: float = 1.0) -> SourceFactory:
    """Standalone mode's source for `new_state()`: the manifests in `path`, polled every `interval_s`,
    with the pools made through /v1/pools in NATS KV and reloads counted in the metrics."""

    def make(parts: SourceParts) -> DirectoryConfig:
        d = parts.dispatcher
        store = KvPoolStore(lambda: (d.nc, d.js) if d.connected and d.nc and d.js else None,
                            replicas=lambda: parts.holder.table.queue.replicas if parts.holder.table else 1)
        source = DirectoryConfig(path, parts.holder, gateway=gateway, pool_store=store, interval_s=interval_s,
                                 on_reload=lambda outcome: parts.metrics.config_reloads.labels(outcome).inc())
        store.on_change(source.refresh)  # a pool made, renewed or deleted: compile it in (or out)
        return source

    return make


class DirectoryConfig(ConfigSource):
    """Standalone mode: compile the YAML manifests in a directory, reload on change.

    The pools of `pool_store` (made through /v1/pools, kept in NATS KV) are compiled in
    with the directory, but a pool the manifests declare themselves wins, and one that no
    longer compiles (its model was removed from the directory) is left out with a log
    line instead of failing the whole config. They expire by their KV records.
    """

    def __init__(self, path: str | Path, holder: TableHolder, gateway: str | None = None,
                 on_reload: Callable[[str], None] = lambda outcome: None,
                 pool_store: KvPoolStore | None = None, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.holder = holder
        self.gateway = gateway
        self.on_reload = on_reload
        self.pool_store = self.pools = pool_store
        self.interval_s = interval_s
        self._signature: tuple[tuple[str, float, int], ...] = ()

    def extra_pools(self) -> list[Pool]:
        return self.pools.resources() if self.pools is not None else []

    def pool_expired(self, pool: str) -> str | None:
        return self.pools.pool_expired(pool) if self.pools is not None else None

    async def run(self) -> None:
        if self.pools is None:
            await self.watch(self.interval_s)
        else:
            await together(self.watch(self.interval_s), self.pools.run())

    def load(self) -> RoutingTable:
        """Compile strictly: any issue raises CompileError naming resource and field."""
        self._signature = self._scan()
        resources, issues = load_dir(self.path)
        if issues:
            raise CompileError(issues)
        current = self.holder.table
        epoch = (current.epoch if current else 0) + 1
        declared = {p.name for p in resources.pools}
        extra = [p for p in self.extra_pools() if p.name not in declared]
        result = compile_table(replace(resources, pools=resources.pools + extra), gateway=self.gateway, epoch=epoch)
        broken = {i.ref for i in result.issues} & {p.ref for p in extra}
        if broken:
            log.warning("pools made through /v1/pools left out of the table: they no longer compile",
                        extra={"issues": [str(i) for i in result.issues if i.ref in broken]})
            extra = [p for p in extra if p.ref not in broken]
            result = compile_table(replace(resources, pools=resources.pools + extra), gateway=self.gateway,
                                   epoch=epoch)
        table = result.raise_for_issues()
        if current is not None and current.hash == table.hash:
            return current
        self.holder.swap(table)
        return table

    def _scan(self) -> tuple[tuple[str, float, int], ...]:
        files = sorted(p for p in self.path.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        return tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in files)

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                changed = self._scan() != self._signature
            except OSError as exc:
                log.error("config directory unreadable", extra={"error": str(exc)})
                continue
            if changed:
                self.refresh()

    def refresh(self) -> None:
        """Recompile now (the directory or the pools changed); a rejected config keeps the table."""
        try:
            before = self.holder.table
            self.load()
            self.on_reload("applied" if self.holder.table is not before else "unchanged")
        except CompileError as exc:
            self.on_reload("rejected")
            log.error("config rejected; still serving the previous table",
                      extra={"issues": [str(i) for i in exc.issues]})
        except OSError as exc:
            log.error("config directory unreadable", extra={"error": str(exc)})
