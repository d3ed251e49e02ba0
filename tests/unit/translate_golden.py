"""Golden files for Switchyard's two translators, like Envoy Gateway's testdata in/out pairs.

- resources -> the routing table (`compile_table`, as standalone mode loads them) in canonical
  JSON: `<case>.table.json` (`<case>.<gateway>.table.json` each, for a namespace with several Gateways);
- resources -> every child object the operator renders for them, in YAML: `<case>.children.yaml`. They
  come from the operator's own reconciler, run on an in-memory API server (fakes.py), so nothing here
  repeats how it decides what to render;
- an input that does not compile -> its issues, one a line: `<case>.errors.txt` (and nothing else:
  standalone mode refuses such a config).

Inputs are `tests/unit/testdata/translate/<case>.in.yaml`, plus `examples/` itself (case
`examples`, so a change to the examples shows up here too). Regenerate every output with

    make golden        # = .venv/bin/python tests/unit/translate_golden.py --update

test_translate_golden.py fails, naming that command, when an output is stale, missing or left over.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from fakes import SERVER_FIELDS, FakeApiServer, matches  # noqa: E402  # tests/unit, beside this file

from switchyard.api import compile_table  # noqa: E402
from switchyard.api.issues import ConfigIssue  # noqa: E402
from switchyard.api.loader import ResourceSet, load_dir, parse_objects  # noqa: E402
from switchyard.contracts import MANAGED_SELECTOR  # noqa: E402
from switchyard.operator.kube import Kube  # noqa: E402
from switchyard.operator.reconcile import CHILD_KINDS, Reconciler  # noqa: E402

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
    """Output suffix -> content, for one case's input. Several Gateways (a cluster's namespace; standalone
    mode serves one) give one table each, `<case>.<gateway>.table.json`."""
    rs, issues = load(path)
    names = sorted(g.name for g in rs.gateways)
    results = {name: compile_table(rs, gateway=name) for name in names} if len(names) > 1 else \
        {"": compile_table(rs)}
    problems = [*issues, *(i for r in results.values() for i in r.issues)]
    if problems:
        return {".errors.txt": "".join(f"{p}\n" for p in problems)}
    out = {f"{'.' if name else ''}{name}.table.json": r.table.to_json().decode() + "\n"
           for name, r in results.items()}
    return {**out, ".children.yaml": dump_yaml(render_children(rs))}


def as_stored(rs: ResourceSet) -> list[Obj]:
    """The resources as the operator reads them from the API server: in a namespace, with uids."""
    out = []
    for obj in [*rs.gateways, *rs.upstreams, *rs.pools, *rs.planners, *rs.secrets]:
        raw = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        raw["metadata"]["namespace"] = raw["metadata"].get("namespace") or NAMESPACE
        raw["metadata"]["uid"] = f"uid-{raw['kind'].lower()}-{raw['metadata']['name']}"
        out.append(raw)
    return out


def render_children(rs: ResourceSet) -> list[Obj]:
    """Every object the operator applies for these resources: its own reconciler (operator/reconcile.py),
    run on an in-memory API server (fakes.py) until a pass writes nothing more, and the children it
    left there, by kind (in the order a pass writes them) and name. What the API server adds
    (resourceVersion, uid, generation) is left out, and a Lease's times read NOW."""
    api = FakeApiServer()
    for raw in as_stored(rs):
        api.put(raw)
    asyncio.run(_settle(Reconciler(Kube(api), IMAGE), api))  # type: ignore[arg-type]  # the fake is the ApiClient
    return [_as_rendered(obj) for kind in CHILD_KINDS for obj in api.all(kind.plural, NAMESPACE)
            if matches(obj["metadata"].get("labels") or {}, MANAGED_SELECTOR)]


async def _settle(reconciler: Reconciler, api: FakeApiServer, passes: int = 5) -> None:
    for _ in range(passes):
        api.calls.clear()
        await reconciler.reconcile(NAMESPACE)
        if not [c for c in api.writes() if c.sub != "status" and c.plural != "events"]:
            return  # a pass with nothing left to apply
    raise AssertionError(f"the operator still writes children after {passes} passes over the same resources")


def _as_rendered(obj: Obj) -> Obj:
    for field in SERVER_FIELDS:
        obj["metadata"].pop(field, None)
    if obj["kind"] == "Lease":
        obj["spec"].update({k: NOW for k in ("acquireTime", "renewTime") if k in obj["spec"]})
    return obj


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
