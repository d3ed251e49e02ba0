"""Standalone mode from a compiled catalog: the operator's storage format, as files.

`switchyard gateway --catalog-dir DIR` serves the table stored in DIR by
switchyard.api.catalog.write_dir (routing.json, or catalog.json and its shards), so
a catalog of 10,000 models loads without compiling 10,000 manifests at start. The
directory is polled; an index whose shards are not all written yet is skipped until
they are (the writer writes shards first, the index last).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..api import catalog
from ..api.table import RoutingTable
from .config import TableHolder
from .configsource import ConfigSource, SourceFactory

log = logging.getLogger("switchyard.gateway.catalogdir")


def catalog_dir(path: str | Path, interval_s: float = 1.0) -> SourceFactory:
    """This source for `new_state()`."""
    return lambda parts: CatalogDirConfig(path, parts.holder, interval_s)


class CatalogDirConfig(ConfigSource):
    """No /v1/pools here: the catalog is a compiled table, with no place to compile pools into."""

    def __init__(self, path: str | Path, holder: TableHolder, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.holder = holder
        self.interval_s = interval_s
        self._signature: tuple[float, ...] = ()

    def _scan(self) -> tuple[float, ...]:
        return tuple(p.stat().st_mtime_ns for p in (self.path / catalog.INDEX_KEY, self.path / catalog.INLINE_FILE)
                     if p.exists())

    def load(self) -> RoutingTable:
        """Strict: raises (FileNotFoundError, ValueError) when the directory holds no complete catalog."""
        signature = self._scan()
        table = catalog.read_dir(self.path)
        self.holder.swap(table)
        self._signature = signature
        return table

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if self._scan() != self._signature:
                    self.load()
            except (OSError, ValueError, KeyError) as exc:
                log.error("catalog directory unreadable or incomplete; still serving the last table",
                          extra={"error": str(exc)})
