"""Generate the CustomResourceDefinitions from the models: the CRDs never drift from the code.

    python -m switchyard.api.crd                 # writes crds/, manifests/crds/, charts/switchyard/crds/
    python -m switchyard.api.crd OUT [OUT...]    # writes into the given directories instead

Pydantic's JSON schema becomes a *structural* OpenAPI v3 schema, as the API server
requires of apiextensions.k8s.io/v1 CRDs:

- every `$ref` inlined, no `anyOf`/`oneOf`/`allOf`, a `type` on every node;
- `Optional[X]` is X, not required and `nullable`, so `field: null` is accepted as the
  models accept it (without `nullable`, server-side apply and create refuse a null);
  CEL's `has()` is false for a null field, so the rules treat it as absent;
- `dict[str, Any]` (free-form params) as `x-kubernetes-preserve-unknown-fields`,
  `dict[str, int]` as `additionalProperties`, key patterns as a CEL rule (schemas
  cannot constrain map keys);
- lists whose items the models require to have unique names as `x-kubernetes-list-type:
  map` (objects, keyed by name) or `set` (strings): the API server refuses duplicates;
- the cross-field rules the models check in Python as CEL (`x-kubernetes-validations`),
  with maxItems/maxLength/maxProperties on everything a rule iterates, so the API
  server's cost estimate stays within its per-rule and per-CRD budgets.

What CEL cannot say is left to the operator, which reports it in the Ready condition:
Planner cycles longer than one step, references to other objects (a step's model, a
Gateway's defaultPool, an API key's Secret).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from .loader import KINDS as LOADER_KINDS
from .meta import DNS_LABEL, GROUP, VERSION

KINDS = tuple(LOADER_KINDS.values())  # one list of kinds: loader.KINDS
ROOT = Path(__file__).resolve().parents[2]
# manifests/ and the Helm chart hold copies: kustomize refuses files outside its root, and
# Helm installs only what its chart's crds/ holds.
OUT_DIRS = (ROOT / "crds", ROOT / "manifests" / "crds", ROOT / "charts" / "switchyard" / "crds")
COMMAND = "python -m switchyard.api.crd"
HEADER = f"# Generated from the models in switchyard/api by `{COMMAND}`. Do not edit.\n"

READY = '.status.conditions[?(@.type=="Ready")]'
COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Gateway": [
        {"name": "Epoch", "type": "integer", "jsonPath": ".status.configEpoch",
         "description": "Epoch of the routing table the operator last wrote."},
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas", "priority": 1},
    ],
    "Upstream": [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Workers", "type": "string", "jsonPath": ".status.liveWorkers",
         "description": "Ready workers per machine profile."},
        {"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minReplicas"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxReplicas"},
    ],
    "Pool": [
        {"name": "GPUs", "type": "string", "jsonPath": ".spec.gpus", "priority": 1},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
    ],
    "Planner": [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
         "description": "Valid or Invalid."},
    ],
}
COMMON_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string", "jsonPath": f"{READY}.status"},
    {"name": "Reason", "type": "string", "jsonPath": f"{READY}.reason", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": f"{READY}.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# Lists whose items must be unique, by schema path. The models check exactly these
# (Upstream._consistent, PlannerSpec._is_dag); conditions follow metav1 (one per type).
LIST_MAPS: dict[str, str] = {
    "spec.bundles": "name",
    "spec.profiles": "name",
    "spec.steps": "name",
    "spec.machineProfiles": "name",  # Gateway; Upstream's is a set of strings
    "status.conditions": "type",
}
LIST_SETS = {"spec.machineProfiles"}

# Bounds the models do not state, for the CEL cost estimate only (see _with_rules).
BOUNDS: dict[str, dict[str, int]] = {
    "Upstream": {"spec.defaultMachineProfile": 63},
    "Planner": {"spec.output": 63},
    "Pool": {"spec.gpus": 64},
}

# Cross-field rules, by kind and schema path. The models enforce the same in Python
# (standalone mode); in a cluster the API server refuses such objects at apply time.
Rule = dict[str, str]
RULES: dict[str, dict[str, list[Rule]]] = {
    "Upstream": {
        "spec": [
            {"rule": "!has(self.defaultMachineProfile) || self.defaultMachineProfile in self.machineProfiles",
             "message": "defaultMachineProfile must be one of machineProfiles",
             "fieldPath": ".defaultMachineProfile"},
            {"rule": "!has(self.bundles) || self.bundles.all(b, !has(b.profiles) || b.profiles.all(p, "
                     "has(self.profiles) && self.profiles.exists(q, q.name == p)))",
             "message": "every profile a bundle names must be defined in spec.profiles",
             "fieldPath": ".bundles"},
        ],
        "spec.scaling": [
            {"rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
             "message": "minReplicas must be <= maxReplicas"},
        ],
    },
    "Planner": {
        "spec": [
            {"rule": "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.steps.exists(t, t.name == d)))",
             "message": "dependsOn must name steps of this planner",
             "fieldPath": ".steps"},
            {"rule": "!has(self.output) || self.steps.exists(s, s.name == self.output)",
             "message": "output must name a step of this planner",
             "fieldPath": ".output"},
        ],
        "spec.steps[]": [
            # Longer cycles need a graph walk CEL cannot do: the operator reports them (Ready=False).
            {"rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
             "message": "a step cannot depend on itself",
             "fieldPath": ".dependsOn"},
        ],
    },
}


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Resolve $ref and Optional (anyOf with null) into one plain node; True if it was Optional."""
    optional = False
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"a union of several types cannot be structural: {node['anyOf']}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            node, optional = {**options[0], **rest}, True
        else:
            return node, optional


def structural(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    """One pydantic JSON-schema node -> one structural schema node at `path` (e.g. spec.steps[])."""
    node, optional = _inline(node, defs)
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = node["description"]
    kind = node.get("type", "object")
    out["type"] = kind
    for key in ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "exclusiveMinimum" in node:  # JSON Schema's number -> OpenAPI 3.0's boolean
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    default = node.get("default")
    if default is not None and not isinstance(default, (dict, list)):
        out["default"] = default  # scalars only: the models fill in lists and objects themselves
    if kind == "array":
        out["items"] = structural(node.get("items", {}), defs, f"{path}[]")
        objects = out["items"]["type"] == "object"  # paths are shared across kinds (machineProfiles)
        if path in LIST_MAPS and objects:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = [LIST_MAPS[path]]
        elif path in LIST_SETS and not objects:
            out["x-kubernetes-list-type"] = "set"
    elif kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        patterns = node.get("patternProperties")
        if props:
            out["properties"] = {k: structural(v, defs, f"{path}.{k}") for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
            if extra is True:  # extra="allow": kept as is
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif patterns:  # dict[Label, X]: the values' schema, keys checked by CEL
            (pattern, values), = patterns.items()
            if "'" in pattern or "\\" in pattern:
                raise ValueError(f"pattern needs CEL escaping: {pattern}")
            out["additionalProperties"] = structural(values, defs, f"{path}.*")
            max_key = node.get("propertyNames", {}).get("maxLength")
            check = f"k.matches('{pattern}')" + (f" && k.size() <= {max_key}" if max_key else "")
            out["x-kubernetes-validations"] = [{"rule": f"self.all(k, {check})", "message": _key_message(pattern)}]
        elif isinstance(extra, dict) and extra:  # dict[str, X]
            out["additionalProperties"] = structural(extra, defs, f"{path}.*")
        else:  # dict[str, Any]: free-form
            out["x-kubernetes-preserve-unknown-fields"] = True
    if optional:
        out["nullable"] = True
    return out


def _key_message(pattern: str) -> str:
    if pattern == DNS_LABEL:
        return "keys must be DNS labels (lowercase letters, digits and '-', at most 63)"
    return f"keys must match {pattern}"


def _at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The node at a schema path like spec.steps[] (relative to the root's properties)."""
    node = {"properties": schema}
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _with_rules(kind: str, props: dict[str, Any]) -> dict[str, Any]:
    for path, limit in BOUNDS.get(kind, {}).items():
        node = _at(props, path)
        node["maxProperties" if node["type"] == "object" else "maxLength"] = limit
    for path, rules in RULES.get(kind, {}).items():
        _at(props, path).setdefault("x-kubernetes-validations", []).extend(rules)
    return props


def crd(kind: Any) -> dict[str, Any]:
    schema = kind.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    spec = structural(schema["properties"]["spec"], defs, "spec")
    status = structural(schema["properties"]["status"], defs, "status")
    spec["description"] = f"Desired state of the {kind.KIND}."
    status["description"] = f"Observed state of the {kind.KIND}, written by the operator."
    props = _with_rules(kind.KIND, {
        "apiVersion": {"type": "string", "description": "switchyard.dev/v1alpha1"},
        "kind": {"type": "string", "description": kind.KIND},
        "metadata": {"type": "object"},
        "spec": spec,
        "status": status,
    })
    doc = (sys.modules[kind.__module__].__doc__ or "").strip().splitlines()[0]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.PLURAL}.{GROUP}",
            "annotations": {
                "switchyard.dev/generated-by": COMMAND,
                # Argo CD: CRDs before the operator (wave 0) and the resources (wave 1).
                "argocd.argoproj.io/sync-wave": "-1",
            },
            "labels": {"app.kubernetes.io/name": "switchyard", "app.kubernetes.io/part-of": "switchyard"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind.KIND, "listKind": f"{kind.KIND}List", "plural": kind.PLURAL,
                      "singular": kind.KIND.lower(), "shortNames": list(kind.SHORT_NAMES),
                      "categories": ["switchyard"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [*COLUMNS[kind.KIND], *COMMON_COLUMNS],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": doc,
                    "required": ["spec"],
                    "properties": props,
                }},
            }],
        },
    }


def render(kind: Any) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def filename(kind: Any) -> str:
    return f"{kind.PLURAL}.{GROUP}.yaml"


def rendered() -> dict[str, str]:
    """File name -> content, for every kind."""
    return {filename(k): render(k) for k in KINDS}


def write(out_dirs: tuple[Path, ...] = OUT_DIRS) -> list[Path]:
    written = []
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered().items():
            path = out / name
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str]) -> int:
    dirs = tuple(Path(a) for a in argv) or OUT_DIRS
    for p in write(dirs):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
