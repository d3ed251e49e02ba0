"""Where a gateway's routing table comes from, and what comes with it: one interface, every mode.

- standalone, a directory of manifests: `config.DirectoryConfig` (`config.directory(path)`), its
  /v1/pools pools in the sy_pools KV bucket;
- standalone, a compiled catalog: `catalogdir.CatalogDirConfig` (`catalogdir.catalog_dir(path)`);
- cluster mode: `cluster.ClusterConfig` (`cluster.cluster(namespace, configmap)`): the ConfigMap
  the operator writes, worker EndpointSlices (which heartbeats count) and pool Leases (410s);
- `Manual`: a table installed by hand through `holder.swap()` (embedding, tests).

`app.new_state()` builds the source with the parts it needs and hands it to the GatewayState,
so the state is complete once built: nothing patches the registry or the state afterwards.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.table import RoutingTable
    from ..messages import Heartbeat
    from .config import TableHolder
    from .dispatch import Dispatcher
    from .metrics import Metrics
    from .poolstore import PoolStore


@dataclass(frozen=True)
class SourceParts:
    """What a source may use of the gateway it feeds."""

    holder: TableHolder  # where it installs each table
    dispatcher: Dispatcher  # NATS (standalone pools live in a KV bucket)
    metrics: Metrics


class ConfigSource(abc.ABC):
    """The routing table's origin. The defaults fit a source with no say over workers or pools."""

    # Where /v1/pools keeps the pools made through the API; None: the endpoints answer 404.
    pool_store: PoolStore | None = None

    @abc.abstractmethod
    def load(self) -> RoutingTable | None:
        """Install the first table now, strictly: a config that does not compile raises (standalone).
        A source whose table arrives later (cluster mode) does nothing here, and returns None."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Keep the table current (and the pools, the ready endpoints) until cancelled."""

    def admits(self, beat: Heartbeat) -> bool:
        """Whether a worker's fresh heartbeat counts as live (cluster mode: its pod is a ready endpoint)."""
        return True

    def pool_expired(self, pool: str) -> str | None:
        """When the pool's lease lapsed (ISO 8601), for its 410; None while live or unknown."""
        return None


SourceFactory = Callable[[SourceParts], ConfigSource]


class Manual(ConfigSource):
    """No source: the table is installed by whoever holds `holder` (embedding, tests)."""

    def __init__(self, parts: SourceParts) -> None:
        self.holder = parts.holder

    def load(self) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()  # nothing to watch; ends when the gateway stops
