"""Copies of the test manifests with some Gateway or Upstream fields changed (the shared directory stays as is)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dataplane import copy_manifests


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def patch_kind(directory: Path, kind: str, name: str | None, spec: dict[str, Any]) -> None:
    """Merge `spec` (camelCase, as in the YAML) into the spec of every `kind` (named `name`, if given)."""
    for path in directory.glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        hit = False
        for doc in docs:
            if doc and doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
                _merge(doc.setdefault("spec", {}), spec)
                hit = True
        if hit:
            path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def manifests_with(dest: Path, gateway: dict[str, Any] | None = None,
                   upstreams: dict[str, dict[str, Any]] | None = None) -> Path:
    """The test manifests copied under `dest`, with Gateway spec and per-Upstream spec fields merged in."""
    directory = copy_manifests(dest / "manifests")
    if gateway:
        patch_kind(directory, "Gateway", None, gateway)
    for name, spec in (upstreams or {}).items():
        patch_kind(directory, "Upstream", name, spec)
    return directory
