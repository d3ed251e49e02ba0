"""charts/switchyard against the kustomize base, with the real Helm (tests/controlplane/build-tool.sh helm).

The chart's default values render exactly the objects of `kubectl kustomize manifests/`,
and nats.enabled=true adds exactly those of `kubectl kustomize manifests/nats-cluster/`:
the base stays the reference, and the chart must follow it. Every value changes what is
rendered (no value that nothing reads), and the schema refuses what it does not know.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchyard.testing import helm as helm_testing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/switchyard"
NAMESPACE = "switchyard-system"
Key = tuple[str, str, str, str]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build helm (tests/controlplane/build-tool.sh helm)")
    try:
        helm_dir = helm_testing.ensure_built()
    except helm_testing.HelmBuildError as exc:
        pytest.skip(f"the Go build of helm failed: {exc}")
    yield helm_dir / "helm", helm_testing.env(tmp_path_factory.mktemp("helm-home"))


def objects(text: str) -> dict[Key, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    out = {(d["apiVersion"], d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    assert len(out) == len(docs), "two objects with the same identity"
    return out


def kustomize(path: str) -> dict[Key, dict[str, Any]]:
    done = subprocess.run(["kubectl", "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60,
                          check=True)
    return objects(done.stdout)


def template(helm: tuple[Path, dict[str, str]], values: dict[str, Any] | None = None,
             tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary, env = helm
    args = [str(binary), "template", "switchyard", str(CHART), "--namespace", NAMESPACE, "--include-crds"]
    if values is not None:
        assert tmp is not None
        (tmp / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp / "values.yaml")]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


def rendered(helm: tuple[Path, dict[str, str]], values: dict[str, Any] | None = None,
             tmp: Path | None = None) -> dict[Key, dict[str, Any]]:
    done = template(helm, values, tmp)
    assert done.returncode == 0, done.stderr
    return objects(done.stdout)


def assert_same(helm_objs: dict[Key, dict[str, Any]], kustomize_objs: dict[Key, dict[str, Any]]) -> None:
    assert sorted(helm_objs) == sorted(kustomize_objs), "the chart and the kustomize base render other objects"
    for key, obj in kustomize_objs.items():
        assert helm_objs[key] == obj, f"{key}: the chart renders it otherwise than the kustomize base"


def test_helm_lint_strict(helm: tuple[Path, dict[str, str]]) -> None:
    binary, env = helm
    done = subprocess.run([str(binary), "lint", "--strict", str(CHART)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_defaults_render_the_kustomize_base(helm: tuple[Path, dict[str, str]]) -> None:
    assert_same(rendered(helm), kustomize("manifests"))


def test_nats_renders_the_nats_cluster_base(helm: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    with_nats = rendered(helm, {"nats": {"enabled": True}}, tmp_path)
    assert_same(with_nats, {**kustomize("manifests"), **kustomize("manifests/nats-cluster")})


def test_chart_nats_conf_is_the_cluster_one() -> None:
    assert (CHART / "files/nats.conf").read_text() == (ROOT / "manifests/nats-cluster/nats.conf").read_text()


def leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, name))
        else:
            yield (*path, name), value


# Another valid value per leaf type, where a simple change does not fit the schema.
OTHER = {("operator", "image", "pullPolicy"): "Always", ("operator", "logLevel"): "DEBUG",
         ("operator", "leaderElection", "leaseSeconds"): 30}
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.mark.parametrize("path", [p for p, _ in leaves(DEFAULTS)], ids=".".join)
def test_every_value_changes_the_render(helm: tuple[Path, dict[str, str]], tmp_path: Path,
                                       path: tuple[str, ...]) -> None:
    values = copy.deepcopy(DEFAULTS)
    values["nats"]["enabled"] = path[0] == "nats" and path != ("nats", "enabled")  # NATS values need NATS on
    base = rendered(helm, copy.deepcopy(values), tmp_path)
    node = values
    for name in path[:-1]:
        node = node[name]
    old = node[path[-1]]
    node[path[-1]] = OTHER.get(path) or (not old if isinstance(old, bool) else
                                         old + 1 if isinstance(old, int) else f"2{old}" if path[-1] in ("cpu", "memory")
                                         else f"{old}-other")
    assert rendered(helm, values, tmp_path) != base, f"{'.'.join(path)}: changing it changes nothing rendered"


@pytest.mark.parametrize("values", [{"operator": {"replica": 3}}, {"nats": {"url": "nats://x:4222"}},
                                    {"operator": {"logLevel": "LOUD"}}, {"operator": {"replicas": 0}}],
                         ids=["typo", "unknown", "enum", "minimum"])
def test_schema_refuses(helm: tuple[Path, dict[str, str]], tmp_path: Path, values: dict[str, Any]) -> None:
    done = template(helm, values, tmp_path)
    assert done.returncode != 0 and "values don't meet the specifications of the schema" in done.stderr
