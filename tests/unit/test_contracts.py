"""contracts.py: the one definition components share, and the layering it makes possible."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.api import Pool
from switchyard.contracts import ObjectKey, endpoint_ready

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "switchyard"


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


def test_an_object_key_prints_as_refs_always_did() -> None:
    pool = Pool.model_validate({"apiVersion": "switchyard.dev/v1alpha1", "kind": "Pool",
                                "metadata": {"name": "batch", "namespace": "team-a"}, "spec": {"ttlSeconds": 0}})
    assert pool.key == ObjectKey("Pool", "batch", "team-a") and pool.ref == "Pool/team-a/batch"
    assert str(ObjectKey("Pool", "batch")) == "Pool/batch"  # within one namespace's operator pass
    assert ObjectKey("Pool", "a") != ObjectKey("Pool", "a", "ns") and ObjectKey("Pool", "a") < ObjectKey("Pool", "b")


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


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the package under `root`, with the repository's .importlinter."""
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--config",
                           str(REPO / ".importlinter")], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_catch_a_breach(tmp_path: Path) -> None:
    """Each contract in .importlinter fails on a module that breaks it: the operator importing the gateway, the SDK
    importing nats. (That the tree keeps them is `make lint`'s check, run by `make test`.)"""
    shutil.copytree(PKG, tmp_path / "switchyard", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "switchyard" / "operator" / "probe.py").write_text("from switchyard.gateway import http\n")
    (tmp_path / "switchyard" / "client" / "probe.py").write_text("import nats\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "switchyard.operator.probe -> switchyard.gateway.http" in done.stdout, done.stdout
    assert "switchyard.client.probe -> nats" in done.stdout, done.stdout
    assert "0 kept, 2 broken" in done.stdout, done.stdout
