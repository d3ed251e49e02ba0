"""The two translators against their golden files (how they are made: translate_golden.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from translate_golden import OUTPUT_SUFFIXES, TESTDATA, UPDATE_COMMAND, cases, existing, expected, outputs

STALE = f"regenerate the golden files with `{UPDATE_COMMAND}` and review the diff"


@pytest.mark.parametrize("case", sorted(cases()))
def test_outputs_match_the_golden_files(case: str) -> None:
    for suffix, content in outputs(cases()[case]).items():
        path = TESTDATA / f"{case}{suffix}"
        assert path.exists(), f"{path.name} is missing: {STALE}"
        assert path.read_text() == content, f"{path.name} is stale (the translator's output changed): {STALE}"


def test_no_golden_file_is_left_over() -> None:
    left = sorted(p.name for p in existing() - set(expected()))
    assert not left, f"golden files no case makes any more: {left}: {STALE}"


def test_every_kind_of_outcome_has_a_case() -> None:
    made = {s for p in expected() for s in OUTPUT_SUFFIXES if p.name.endswith(s)}
    assert made == set(OUTPUT_SUFFIXES)
    assert (TESTDATA / "examples.table.json") in expected()  # examples/ itself compiles, strictly
    assert {TESTDATA / "gateways.alpha.table.json", TESTDATA / "gateways.beta.table.json"} <= set(expected())


def _routing_configmap(children: Path, gateway: str) -> dict:
    docs = [d for d in yaml.safe_load_all(children.read_text()) if d]
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-routing")
                and (not gateway or d["metadata"]["name"] == f"{gateway}-routing"))


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".table.json") for p in expected()
                                        if p.name.endswith(".table.json")))
def test_the_operator_stores_the_table_standalone_mode_compiles(case: str) -> None:
    """One compile for both modes: the routing ConfigMap holds the very table of <case>.table.json
    (<case>.<gateway>.table.json: that Gateway's, where a case has several)."""
    table = json.loads((TESTDATA / f"{case}.table.json").read_text())
    name, _, gateway = case.partition(".")
    cm = _routing_configmap(TESTDATA / f"{name}.children.yaml", gateway)
    assert cm["metadata"]["annotations"]["switchyard.dev/hash"] == table["hash"]
    if "routing.json" in cm.get("data", {}):  # inline (a small table); a large one is sharded
        assert json.loads(cm["data"]["routing.json"]) == table
