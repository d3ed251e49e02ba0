"""The routing table as stored objects: inline when small, sharded past the object size wall.

A Kubernetes object (a ConfigMap) holds at most 1 MiB and etcd refuses requests over
1.5 MiB, so one ConfigMap stops a Gateway at about 2,200 models. Past `inline_bytes`
the table is stored as a *catalog*:

- an index (`catalog.json`): the table without its models, its epoch and hash, and
  for each shard its name, model count and content digest;
- shards: the models, split by a stable hash of the model name into a power of two
  of buckets, each gzip-compressed JSON (`models.json.gz`).

Shards are content-addressed through the index: a reader assembles a table only
when every shard it holds has the digest the index names, and then checks the
whole table's hash, so it never sees half of two epochs. A writer writes changed
shards first and the index last; a change to one model rewrites one shard and the
index, nothing else. The JSON of the table stays the one source for both modes:
standalone mode reads the same files from a directory (`write_dir`/`read_dir`).
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .table import RoutingTable

INDEX_KEY = "catalog.json"
SHARD_KEY = "models.json.gz"
CATALOG_FORMAT = 1
MODELS_PER_SHARD = 1024  # first guess of the bucket count; doubled while a shard is over budget
INLINE_BYTES = 256 * 1024  # below this the table stays one readable routing.json
# Shards are stored base64-encoded (binaryData): 4/3 of this, ~683 KiB, well inside the 1 MiB
# object limit and etcd's 1.5 MiB request limit, with room for metadata and managedFields.
SHARD_BYTES = 512 * 1024
MAX_SHARDS = 64  # the gateway's Role names each shard: bounded, so it is known in advance
MAX_BYTES = 16 * 1024 * 1024  # all shards together, compressed: what a catalog may cost etcd


@dataclass(frozen=True)
class Limits:
    """What the operator may store per Gateway (`switchyard operator --catalog-*`)."""

    inline_bytes: int = INLINE_BYTES
    shard_bytes: int = SHARD_BYTES
    max_shards: int = MAX_SHARDS
    max_bytes: int = MAX_BYTES


class CatalogTooLarge(ValueError):
    """The table does not fit the limits; the message says by how much and which limit."""


@dataclass(frozen=True)
class Shard:
    index: int
    payload: bytes  # gzip-compressed JSON of {model: route}
    digest: str  # SHA-256 of the uncompressed JSON: stable across gzip versions
    models: int


@dataclass(frozen=True)
class Catalog:
    """How one table is stored: `inline` (routing.json) when small, else an index and shards."""

    table: RoutingTable
    inline: bytes | None
    index: dict[str, Any] | None
    shards: tuple[Shard, ...]

    @property
    def stored_bytes(self) -> int:
        if self.inline is not None:
            return len(self.inline)
        return len(orjson.dumps(self.index)) + sum(len(s.payload) for s in self.shards)


def shard_object(index_name: str, i: int) -> str:
    """The ConfigMap holding shard i of the catalog whose index is ConfigMap `index_name`."""
    return f"{index_name}-{i}"


def bucket(model: str, n: int) -> int:
    """Which of n shards holds `model`: stable across processes and versions (not Python's hash)."""
    return zlib.crc32(model.encode()) % n


def split(table: RoutingTable, limits: Limits = Limits()) -> Catalog:
    """Store `table`: inline if its JSON fits `inline_bytes`, else as an index and shards.

    Raises CatalogTooLarge when it would need more than `max_shards` shards or `max_bytes`."""
    inline_bytes, shard_bytes = limits.inline_bytes, limits.shard_bytes
    max_shards, max_bytes = min(limits.max_shards, MAX_SHARDS), limits.max_bytes
    d = table.to_dict()
    raw = orjson.dumps(d, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)  # table.to_json(), once
    if len(raw) <= inline_bytes:
        return Catalog(table, raw, None, ())
    models: dict[str, Any] = d.pop("models")
    n = _pow2(max(1, -(-len(models) // MODELS_PER_SHARD)))
    while True:
        if n > max_shards:
            raise CatalogTooLarge(f"{len(models)} models need more than {max_shards} shards of "
                                  f"{shard_bytes} bytes (compressed)")
        shards = _shards(models, n)
        if all(len(s.payload) <= shard_bytes for s in shards):
            break
        n *= 2
    index = {"formatVersion": CATALOG_FORMAT, "epoch": table.epoch, "hash": table.hash, "table": d,
             "shards": [{"index": s.index, "digest": s.digest, "models": s.models} for s in shards]}
    catalog = Catalog(table, None, index, tuple(shards))
    if catalog.stored_bytes > max_bytes:
        raise CatalogTooLarge(f"{len(models)} models take {catalog.stored_bytes} bytes compressed, more "
                              f"than the limit of {max_bytes}")
    if len(orjson.dumps(index)) > shard_bytes:
        raise CatalogTooLarge(f"the index without models takes {len(orjson.dumps(index))} bytes, more than "
                              f"{shard_bytes}")
    return catalog


def _shards(models: Mapping[str, Any], n: int) -> list[Shard]:
    buckets: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, route in models.items():
        buckets[bucket(name, n)][name] = route
    out = []
    for i, b in enumerate(buckets):
        body = orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
        digest = _digest(body)
        # mtime=0: the same models give the same bytes, so an unchanged shard is never rewritten;
        # and an unchanged shard is not compressed again (the operator splits on every pass)
        payload = _compressed.get(digest)
        if payload is None:
            payload = gzip.compress(body, compresslevel=6, mtime=0)
            if len(_compressed) >= 4 * MAX_SHARDS:
                _compressed.clear()
            _compressed[digest] = payload
        out.append(Shard(i, payload, digest, len(b)))
    return out


_compressed: dict[str, bytes] = {}  # digest of a shard's JSON -> its gzip bytes


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def decode_shard(payload: bytes) -> tuple[str, dict[str, Any]]:
    """A shard's digest and models, from its stored bytes."""
    body = gzip.decompress(payload)
    return _digest(body), orjson.loads(body)


def assemble(index: Mapping[str, Any], shards: Mapping[int, tuple[str, Mapping[str, Any]]]) -> RoutingTable:
    """The table an index names, from decoded shards (index -> (digest, models)).

    Raises ValueError unless every shard the index names is present with its digest
    and the assembled table has the index's hash: never half of two epochs."""
    if index.get("formatVersion") != CATALOG_FORMAT:
        raise ValueError(f"unsupported catalog formatVersion {index.get('formatVersion')!r}")
    models: dict[str, Any] = {}
    for ref in index["shards"]:
        got = shards.get(int(ref["index"]))
        if got is None or got[0] != ref["digest"]:
            raise ValueError(f"shard {ref['index']} is missing or not the one epoch {index['epoch']} names")
        models.update(got[1])
    d = {**index["table"], "models": models, "epoch": index["epoch"], "hash": ""}
    table = RoutingTable.from_dict(d)  # hash recomputed from the content
    if table.hash != index["hash"]:
        raise ValueError(f"assembled table hash {table.hash[:12]} is not the index's {str(index['hash'])[:12]}")
    return table


# -- standalone: the same catalog in a directory ------------------------------------------

INLINE_FILE = "routing.json"


def shard_file(i: int) -> str:
    return f"shard-{i:03d}.json.gz"


def write_dir(catalog: Catalog, path: str | Path) -> None:
    """Write a catalog as files: shards first, then the index (or routing.json), each atomically."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if catalog.inline is not None:
        _atomic(root / INLINE_FILE, catalog.inline)
        (root / INDEX_KEY).unlink(missing_ok=True)
        return
    for s in catalog.shards:
        _atomic(root / shard_file(s.index), s.payload)
    _atomic(root / INDEX_KEY, orjson.dumps(catalog.index))
    (root / INLINE_FILE).unlink(missing_ok=True)


def read_dir(path: str | Path) -> RoutingTable:
    """The table stored in a directory by write_dir (or a hand-written routing.json)."""
    root = Path(path)
    if (root / INDEX_KEY).exists():
        index = orjson.loads((root / INDEX_KEY).read_bytes())
        shards = {int(r["index"]): decode_shard((root / shard_file(int(r["index"]))).read_bytes())
                  for r in index["shards"]}
        return assemble(index, shards)
    return RoutingTable.from_json((root / INLINE_FILE).read_bytes())


def _atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
