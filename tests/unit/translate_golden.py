"""Golden files for Switchyard's two translators, like Envoy Gateway's testdata in/out pairs.

- resources -> the routing table (`compile_table`, as standalone mode loads them) in canonical
  JSON: `<case>.table.json`;
- resources -> every child object the operator renders for them, in YAML: `<case>.children.yaml`;
- an input that does not compile -> its issues, one a line: `<case>.errors.txt` (and nothing else:
  standalone mode refuses such a config).

Inputs are `tests/unit/testdata/translate/<case>.in.yaml`, plus `examples/` itself (case
`examples`, so a change to the examples shows up here too). Regenerate every output with

    make golden        # = .venv/bin/python tests/unit/translate_golden.py --update

test_translate_golden.py fails, naming that command, when an output is stale, missing or left over.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from switchyard.api import compile_table  # noqa: E402
from switchyard.api.gateway import Gateway  # noqa: E402
from switchyard.api.issues import ConfigIssue  # noqa: E402
from switchyard.api.loader import ResourceSet, load_dir, parse_objects  # noqa: E402
from switchyard.api.pool import DEFAULT_POOL, Pool  # noqa: E402
from switchyard.api.upstream import Upstream  # noqa: E402
from switchyard.operator import children, fleets  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata" / "translate"
EXAMPLES = ROOT / "examples"
UPDATE_COMMAND = "make golden"
SUFFIX_IN = ".in.yaml"
OUTPUT_SUFFIXES = (".table.json", ".children.yaml", ".errors.txt")

# What the operator would see from the API server: a namespace, uids, an image and a clock.
NAMESPACE = "golden"
IMAGE = "ghcr.io/switchyard-dev/switchyard:golden"
NOW = "2026-01-01T00:00:00.000000Z"

Obj = dict[str, Any]


def cases() -> dict[str, Path]:
    """Case name -> its input: examples/ (a directory) and every *.in.yaml file."""
    out = {"examples": EXAMPLES}
    out.update({p.name.removesuffix(SUFFIX_IN): p for p in sorted(TESTDATA.glob(f"*{SUFFIX_IN}"))})
    return out


def load(path: Path) -> tuple[ResourceSet, list[ConfigIssue]]:
    """As standalone mode reads a config: a directory through load_dir, one file the same way."""
    if path.is_dir():
        return load_dir(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        return ResourceSet(), [ConfigIssue(path.name, "", f"invalid YAML: {exc}")]
    return parse_objects(docs, source=path.name)


def outputs(path: Path) -> dict[str, str]:
    """Output suffix -> content, for one case's input."""
    rs, issues = load(path)
    result = compile_table(rs)
    problems = [*issues, *result.issues]
    if problems:
        return {".errors.txt": "".join(f"{p}\n" for p in problems)}
    return {".table.json": result.table.to_json().decode() + "\n",
            ".children.yaml": dump_yaml(render_children(as_observed(rs)))}


def as_observed(rs: ResourceSet) -> ResourceSet:
    """The resources as the operator reads them: in a namespace, with uids, and the default pool
    (which the operator creates wherever there is a Gateway)."""
    out = ResourceSet(secrets=list(rs.secrets))
    for obj in [*rs.gateways, *rs.upstreams, *rs.pools, *rs.planners]:
        copy = obj.model_copy(deep=True)
        copy.metadata.namespace = copy.metadata.namespace or NAMESPACE
        copy.metadata.uid = f"uid-{copy.kind.lower()}-{copy.name}"
        out.add(copy)
    if rs.gateways and DEFAULT_POOL not in {p.name for p in out.pools}:
        out.add(Pool.model_validate({"kind": "Pool", "metadata": {
            "name": DEFAULT_POOL, "namespace": NAMESPACE, "uid": f"uid-pool-{DEFAULT_POOL}",
            "labels": {"switchyard.dev/protected": "true"}}, "spec": {"ttlSeconds": 0}}))
    return out


def render_children(rs: ResourceSet) -> list[Obj]:
    """Every object the operator applies for these resources, in the order it applies them
    (operator/reconcile.py: gateways, then each Upstream's fleets, then pools' Leases and fleets)."""
    gateways = sorted(rs.gateways, key=lambda g: g.name)
    by_name = {g.name: g for g in gateways}
    ups = sorted(rs.upstreams, key=lambda u: u.name)
    scaled_on: list[tuple[Upstream, Gateway]] = [
        (u, by_name[u.spec.gateway_ref or gateways[0].name]) for u in ups
        if gateways and (u.spec.gateway_ref or gateways[0].name) in by_name]
    out: list[Obj] = []
    for gw in gateways:
        table = compile_table(rs, gateway=gw.name).table
        names = [f.name for up, g in scaled_on if g is gw for f in children.fleets(up)]
        out += children.gateway_children(gw, table, IMAGE, names)
    for up, gw in scaled_on:
        profiles = {p.name: p for p in gw.spec.machine_profiles}
        for fleet in children.fleets(up):
            if fleet.rendered:
                if fleets.problem(up, gw, fleet) is not None:
                    continue  # the operator reports it on the Upstream and renders nothing for the fleet
                out.append(fleets.fleet_deployment(up, gw, fleet, profiles[fleet.machine_profile or ""]))
            out.append(children.scaled_object(up, gw, fleet))
        if any(f.rendered for f in children.fleets(up)):
            out.append(fleets.worker_service(up))
    for pool in sorted(rs.pools, key=lambda p: p.name):
        out.append(children.pool_lease(pool, NOW))
        gw = by_name.get(pool.spec.gateway_ref or (gateways[0].name if gateways else ""))
        if gw is None or not pool.spec.models:
            continue
        profiles = {p.name: p for p in gw.spec.machine_profiles}
        for model in pool.spec.models:
            up = next((u for u in ups if u.spec.model == model and u.spec.gateway_ref in (None, gw.name)), None)
            if up is None:
                continue
            for pf in fleets.pool_fleets(pool, up, gw)[0]:
                out.append(fleets.pool_deployment(pf, gw, profiles[pf.fleet.machine_profile or ""]))
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the routing table in its ConfigMap) as literal blocks, so diffs read line by line."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(objs: list[Obj]) -> str:
    return yaml.dump_all(objs, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120,
                         explicit_start=True)


def expected() -> dict[Path, str]:
    """Every golden file that should exist, with its content."""
    out = {}
    for name, path in cases().items():
        for suffix, content in outputs(path).items():
            out[TESTDATA / f"{name}{suffix}"] = content
    return out


def existing() -> set[Path]:
    return {p for s in OUTPUT_SUFFIXES for p in TESTDATA.glob(f"*{s}")}


def update() -> list[Path]:
    """Write every golden file and remove outputs no case makes; return the paths changed."""
    changed = []
    want = expected()
    for path, content in want.items():
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(path)
    for path in sorted(existing() - set(want)):
        path.unlink()
        changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {sys.argv[0]} --update   (rewrites the golden files under {TESTDATA.relative_to(ROOT)})")
    for p in update():
        print(f"updated {p.relative_to(ROOT)}")
