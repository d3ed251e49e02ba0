"""contracts.py: the one definition components share, and the layering it makes possible."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from switchyard.contracts import endpoint_ready

PKG = Path(__file__).resolve().parents[2] / "switchyard"


@pytest.mark.parametrize("endpoint, ready", [
    ({"addresses": ["10.0.0.1"]}, True),  # no conditions: ready, as the EndpointSlice API says
    ({"conditions": {"ready": True}}, True),
    ({"conditions": {"ready": None}}, True),  # unknown counts as ready (the API's rule)
    ({"conditions": {"ready": False}}, False),
    ({"conditions": {"ready": True, "terminating": True}}, False),  # being stopped: no new work
    ({"conditions": {"terminating": True}}, False),
])
def test_which_endpoint_is_ready(endpoint: dict, ready: bool) -> None:
    assert endpoint_ready(endpoint) is ready


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_contracts_import_only_the_standard_library() -> None:
    third_party = {m.split(".")[0] for m in _imports(PKG / "contracts.py")} - set(sys.stdlib_module_names)
    assert not third_party, third_party


@pytest.mark.parametrize("component, forbidden", [
    ("operator", "switchyard.gateway"),  # what both must agree on lives in contracts.py
    ("api", "switchyard.gateway"),
    ("api", "switchyard.operator"),
    ("worker", "switchyard.gateway"),
    ("client", "switchyard.gateway"),
])
def test_a_component_does_not_import_another(component: str, forbidden: str) -> None:
    offenders = {str(f.relative_to(PKG)): sorted(m for m in _imports(f) if m == forbidden or
                                                  m.startswith(forbidden + "."))
                 for f in (PKG / component).rglob("*.py")}
    assert not {f: m for f, m in offenders.items() if m}
