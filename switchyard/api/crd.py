"""Generate the CustomResourceDefinitions from the models: the CRDs never drift from the code.

    python -m switchyard.api.crd            # writes crds/ and manifests/crds/

Pydantic's JSON schema becomes a *structural* OpenAPI v3 schema: every $ref inlined,
`Optional` as `nullable`, free-form maps as `x-kubernetes-preserve-unknown-fields`,
lists of named things as `x-kubernetes-list-type: map` (so the API server refuses
duplicate names), and cross-field rules the models check in Python as CEL rules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .gateway import Gateway
from .meta import GROUP, VERSION
from .planner import Planner
from .pool import Pool
from .upstream import Upstream

KINDS = (Gateway, Upstream, Pool, Planner)
ROOT = Path(__file__).resolve().parents[2]
OUT_DIRS = (ROOT / "crds", ROOT / "manifests" / "crds")

READY = '.status.conditions[?(@.type=="Ready")].status'
COLUMNS: dict[str, list[dict[str, str]]] = {
    "Gateway": [{"name": "Epoch", "type": "integer", "jsonPath": ".status.configEpoch"}],
    "Upstream": [{"name": "Model", "type": "string", "jsonPath": ".spec.model"},
                 {"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minReplicas"},
                 {"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxReplicas"}],
    "Pool": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
             {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"}],
    "Planner": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
}

# Cross-field rules, by kind and path inside the schema ("" = spec). The models enforce
# the same in Python; the API server now refuses such objects at `kubectl apply`.
RULES: dict[str, dict[str, list[dict[str, str]]]] = {
    "Upstream": {
        "": [
            {"rule": "!has(self.defaultMachineProfile) || self.defaultMachineProfile in self.machineProfiles",
             "message": "defaultMachineProfile must be one of machineProfiles"},
            {"rule": "!has(self.bundles) || self.bundles.all(b, !has(b.profiles) || b.profiles.all(p, "
                     "has(self.profiles) && self.profiles.exists(q, q.name == p)))",
             "message": "a bundle names a profile that spec.profiles does not define"},
        ],
        "scaling": [{"rule": "self.minReplicas <= self.maxReplicas",
                     "message": "minReplicas must be <= maxReplicas"}],
    },
    "Planner": {
        "": [
            {"rule": "self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, self.steps.exists(t, t.name == d)))",
             "message": "dependsOn must name steps of this planner"},
            {"rule": "!has(self.output) || self.steps.exists(s, s.name == self.output)",
             "message": "output must name a step of this planner"},
        ],
    },
}
NAMED_LISTS = {"bundles", "profiles", "steps", "apiKeys", "conditions"}
SETS = {"machineProfiles", "operations", "dependsOn"}


def structural(node: Any, defs: dict[str, Any], name: str = "") -> dict[str, Any]:
    """One pydantic JSON-schema node -> one structural schema node."""
    if "$ref" in node:
        return structural({**defs[node["$ref"].rsplit("/", 1)[1]],
                           **{k: v for k, v in node.items() if k != "$ref"}}, defs, name)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        out = structural({**options[0], **{k: v for k, v in node.items() if k not in ("anyOf", "default")}},
                         defs, name)
        if len(options) < len(node["anyOf"]):
            out["nullable"] = True
        return out
    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = node["description"]
    kind = node.get("type", "object")
    out["type"] = kind
    for key in ("enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "default" in node and not isinstance(node["default"], (dict, list)) and node["default"] is not None:
        out["default"] = node["default"]
    if kind == "array":
        out["items"] = structural(node.get("items", {}), defs)
        if name in NAMED_LISTS:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = ["type" if name == "conditions" else "name"]
        elif name in SETS:
            out["x-kubernetes-list-type"] = "set"
    if kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props:
            out["properties"] = {k: structural(v, defs, k) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
            if extra is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "propertyNames" in node:  # map keys: CEL checks them, schemas cannot
            pattern = node["propertyNames"].get("pattern")
            if pattern:
                out.setdefault("x-kubernetes-validations", []).append(
                    {"rule": f"self.all(k, k.matches('{pattern}'))", "message": "keys must be DNS labels"})
    return out


def _with_rules(schema: dict[str, Any], rules: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    for path, rs in rules.items():
        node = schema
        for part in filter(None, path.split(".")):
            node = node["properties"][part]
        node.setdefault("x-kubernetes-validations", []).extend(rs)
    return schema


def crd(kind: Any) -> dict[str, Any]:
    schema = kind.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    spec = _with_rules(structural(schema["properties"]["spec"], defs), RULES.get(kind.KIND, {}))
    status = structural(schema["properties"]["status"], defs)
    doc = (sys.modules[kind.__module__].__doc__ or "").strip().splitlines()[0]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.PLURAL}.{GROUP}",
            "annotations": {"switchyard.dev/generated-by": "python -m switchyard.api.crd",
                            "argocd.argoproj.io/sync-wave": "-1"},
            "labels": {"app.kubernetes.io/part-of": "switchyard"},
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
                "additionalPrinterColumns": [
                    *COLUMNS[kind.KIND],
                    {"name": "Ready", "type": "string", "jsonPath": READY},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": doc,
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    }


def render(kind: Any) -> str:
    header = "# Generated from switchyard.api by `python -m switchyard.api.crd`. Do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def write(out_dirs: tuple[Path, ...] = OUT_DIRS) -> list[Path]:
    written = []
    for out in out_dirs:
        out.mkdir(parents=True, exist_ok=True)
        for kind in KINDS:
            path = out / f"{kind.PLURAL}.{GROUP}.yaml"
            path.write_text(render(kind))
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write():
        print(p.relative_to(ROOT))
