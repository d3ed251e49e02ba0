"""Read Switchyard resources and Secrets from YAML documents or a directory.

Standalone mode loads the very files users `kubectl apply`; any other kind in them
(Deployments, Services, ...) is ignored here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .gateway import Gateway
from .issues import ConfigIssue, issues_from_validation
from .meta import API_VERSION
from .planner import Planner
from .pool import Pool
from .secret import Secret
from .upstream import Upstream

KINDS: dict[str, type[Gateway] | type[Upstream] | type[Pool] | type[Planner]] = {
    "Gateway": Gateway,
    "Upstream": Upstream,
    "Pool": Pool,
    "Planner": Planner,
}


@dataclass
class ResourceSet:
    gateways: list[Gateway] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    planners: list[Planner] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)

    def add(self, obj: Gateway | Upstream | Pool | Planner | Secret) -> None:
        match obj:
            case Gateway():
                self.gateways.append(obj)
            case Upstream():
                self.upstreams.append(obj)
            case Pool():
                self.pools.append(obj)
            case Planner():
                self.planners.append(obj)
            case Secret():
                self.secrets.append(obj)


def parse_objects(objs: Iterable[dict[str, Any]], source: str = "<input>") -> tuple[ResourceSet, list[ConfigIssue]]:
    """Validate raw objects into models; invalid ones become issues, not exceptions."""
    out, issues = ResourceSet(), []
    for obj in objs:
        if not isinstance(obj, dict):
            issues.append(ConfigIssue(source, "", "document is not a mapping"))
            continue
        kind, api = obj.get("kind"), obj.get("apiVersion")
        name = (obj.get("metadata") or {}).get("name", "?")
        if api == API_VERSION and kind in KINDS:
            model: Any = KINDS[kind]
        elif api == "v1" and kind == "Secret":
            model = Secret
        elif api == API_VERSION:
            issues.append(ConfigIssue(f"{kind}/{name}", "kind", f"unknown kind {kind!r}"))
            continue
        else:
            continue
        try:
            out.add(model.model_validate(obj))
        except ValidationError as exc:
            issues.extend(issues_from_validation(f"{kind}/{name}", exc))
    return out, issues


def load_dir(path: str | Path) -> tuple[ResourceSet, list[ConfigIssue]]:
    """Every *.yaml, *.yml and *.json file under `path`, in sorted order."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"config directory {root} does not exist")
    objs: list[dict[str, Any]] = []
    issues: list[ConfigIssue] = []
    for file in sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"}):
        try:
            objs.extend(d for d in yaml.safe_load_all(file.read_text()) if d is not None)
        except yaml.YAMLError as exc:
            issues.append(ConfigIssue(str(file), "", f"invalid YAML: {exc}"))
    resources, more = parse_objects(objs, source=str(root))
    return resources, issues + more
