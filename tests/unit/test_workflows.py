"""The CI workflows lint clean with the real actionlint (built from its Go module), and the
e2e workflow runs tests/e2e on kind once per install path (kustomize, helm).

This machine has no Docker engine, so tests/e2e cannot run here: the last test checks that
they are collected and skip with their reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from switchyard.testing import gotools

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yaml"))
E2E = ROOT / ".github/workflows/e2e.yaml"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build actionlint (tests/controlplane/build-tool.sh actionlint)")
    try:
        return gotools.ensure_built("actionlint") / "actionlint"
    except gotools.GoToolBuildError as exc:
        pytest.skip(f"the Go build of actionlint failed: {exc}")


def lint(binary: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), "-no-color", *map(str, files)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_workflows_lint_clean(actionlint: Path) -> None:
    assert WORKFLOWS, "no workflow in .github/workflows"
    done = lint(actionlint, *WORKFLOWS)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_actionlint_finds_a_broken_workflow(actionlint: Path, tmp_path: Path) -> None:
    """The lint is real: a typo in an expression and an unknown key fail it."""
    broken = E2E.read_text().replace("${{ matrix.install }}", "${{ matrix.instal }}", 1)
    broken = broken.replace("timeout-minutes: 45", "timeout-minutes: 45\n    time-out: 1", 1)
    (tmp_path / ".github/workflows").mkdir(parents=True)
    path = tmp_path / ".github/workflows/e2e.yaml"
    path.write_text(broken)
    done = subprocess.run([str(actionlint), "-no-color", str(path)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "instal" in done.stdout and "time-out" in done.stdout, done.stdout


def test_e2e_workflow_runs_tests_e2e_on_kind_for_each_install() -> None:
    workflow = yaml.safe_load(E2E.read_text())
    [job] = workflow["jobs"].values()
    assert job["strategy"]["matrix"]["install"] == ["kustomize", "helm"]
    steps = job["steps"]
    kind = next(s for s in steps if s.get("uses", "").startswith("helm/kind-action@"))
    assert kind["with"]["config"] == "kind-config.yaml" and kind["with"]["cluster_name"] == "${{ env.CLUSTER }}"
    runs = "\n".join(s.get("run", "") for s in steps)
    assert 'docker build -t "$IMAGE" .' in runs and "keda-$keda.yaml" in runs
    test = next(s for s in steps if "tests/e2e" in s.get("run", ""))
    assert test["env"]["SWITCHYARD_E2E_INSTALL"] == "${{ matrix.install }}"
    assert test["env"]["SWITCHYARD_E2E_CLUSTER"] == "${{ env.CLUSTER }}"
    conftest = (ROOT / "tests/e2e/conftest.py").read_text()
    assert '"SWITCHYARD_E2E_INSTALL", "kustomize") == "helm"' in conftest


def test_e2e_tests_are_collected_and_skip_here_with_their_reason() -> None:
    docker = shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    if docker and docker.returncode == 0:
        pytest.skip("a Docker engine is here: tests/e2e really run in this session instead")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/e2e"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped in .*", summary), summary  # collected, none ran, none failed
    assert "kind e2e needs" in done.stdout, done.stdout
