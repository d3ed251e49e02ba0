"""The wheel as a user gets it: built from the tree, installed into a fresh venv, run outside the tree.

Dependencies come from the package index through pip's cache. The wheel is built from
a copy of the working tree (tracked and untracked files git does not ignore) so the
build leaves nothing in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=env)


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{' '.join(done.args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    files = _ok(_run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT)).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _ok(_run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, ".", cwd=src))
    [built] = out.glob("switchyard-*.whl")
    return built


def _venv(path: Path, requirement: str) -> Path:
    """A fresh venv without pip of its own: this interpreter's pip installs into it."""
    _ok(_run(sys.executable, "-m", "venv", "--without-pip", path))
    python = path / "bin" / "python"
    _ok(_run(sys.executable, "-m", "pip", "--python", python, "install", "-q", requirement))
    return path / "bin"


@pytest.fixture(scope="module")
def core_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _venv(tmp_path_factory.mktemp("core") / "venv", str(wheel))


@pytest.fixture(scope="module")
def with_dev(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _venv(tmp_path_factory.mktemp("dev") / "venv", f"{wheel}[dev]")


def test_dev_check_from_an_installed_wheel(with_dev: Path, tmp_path: Path) -> None:
    done = _run(with_dev / "switchyard", "dev", "--check", cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "POST /v1/encode/switchyard/echo -> 200" in done.stdout


@pytest.mark.parametrize("command, extra", [
    (["gateway", "--config-dir", "."], "gateway"),
    (["worker", "--model", "m", "--handler", "switchyard.worker.handlers:echo"], "worker"),
    (["operator"], "operator"),
    (["dev", "--check"], "dev"),
])
def test_a_missing_component_names_its_extra(core_only: Path, tmp_path: Path, command: list[str],
                                             extra: str) -> None:
    done = _run(core_only / "switchyard", *command, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"pip install 'switchyard[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_client_needs_only_the_core(core_only: Path, tmp_path: Path) -> None:
    code = "from switchyard.client import Client, AsyncClient; print('ok')"
    assert _ok(_run(core_only / "python", "-c", code, cwd=tmp_path)).stdout.strip() == "ok"
    assert "{gateway,worker,operator,dev}" in _ok(_run(core_only / "switchyard", "--help", cwd=tmp_path)).stdout


# What each component imports when it runs (its command's modules and their lazy parts).
COMPONENT_MODULES = {
    "gateway": ["switchyard.cli.gateway", "switchyard.gateway.cluster"],
    "worker": ["switchyard.worker.cli", "switchyard.worker.health", "switchyard.worker.handlers"],
    "operator": ["switchyard.operator.main"],
}


@pytest.mark.parametrize("extra", sorted(COMPONENT_MODULES))
def test_each_extra_alone_runs_its_component(wheel: Path, tmp_path: Path, extra: str) -> None:
    bin_dir = _venv(tmp_path / "venv", f"{wheel}[{extra}]")
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\nprint('ok')"
    done = _ok(_run(bin_dir / "python", "-c", code, *COMPONENT_MODULES[extra], cwd=tmp_path))
    assert done.stdout.strip() == "ok"



def test_the_wheel_ships_no_test_code(wheel: Path) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "switchyard/gateway/app.py" in names and "switchyard/examples/gateway.yaml" in names
    assert not [n for n in names if n.startswith("switchyard/testing/")]
