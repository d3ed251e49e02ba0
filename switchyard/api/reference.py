"""Generate docs/resources.md, the field reference, from the models themselves.

    python -m switchyard.api.reference > docs/resources.md
"""

from __future__ import annotations

import sys
from typing import Any

from .gateway import Gateway
from .planner import Planner
from .pool import Pool
from .upstream import Upstream

KINDS = (Gateway, Upstream, Pool, Planner)


def _type(prop: dict[str, Any] | bool, defs: dict[str, Any]) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "$ref" in prop:
        return "object"
    if "anyOf" in prop:
        kinds = [_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(kinds)
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if t == "object" and "additionalProperties" in prop:
        return f"map of {_type(prop['additionalProperties'], defs)}"
    return str(t)


def _limits(prop: dict[str, Any]) -> str:
    out = []
    for key, label in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                       ("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"),
                       ("pattern", "pattern")):
        if key in prop:
            value = f"`{prop[key]}`" if key == "pattern" else prop[key]
            out.append(f"{label} {value}")
    return ", ".join(out)


def _rows(schema: dict[str, Any], defs: dict[str, Any], prefix: str, out: list[str]) -> None:
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        target = _deref(prop, defs)
        default = prop.get("default")
        default_s = "" if default is None or isinstance(default, (dict, list)) and not default else f"`{default}`"
        desc = (prop.get("description") or target.get("description") or "").replace("\n", " ")
        out.append(f"| `{path}` | {_type(prop, defs)} | {'yes' if name in required else ''} | "
                   f"{default_s} | {_limits(_inner(prop))} | {desc} |")
        if target.get("properties"):
            _rows(target, defs, path + ("[]" if prop.get("type") == "array" else ""), out)


def _inner(prop: dict[str, Any]) -> dict[str, Any]:
    if "anyOf" in prop:
        return next((p for p in prop["anyOf"] if p.get("type") != "null"), prop)
    return prop


def _deref(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    prop = _inner(prop)
    if prop.get("type") == "array":
        prop = prop.get("items", {})
    if "$ref" in prop:
        return defs[prop["$ref"].rsplit("/", 1)[1]]
    return prop


def render() -> str:
    out = ["# Resource reference", "",
           "Generated from `switchyard.api` by `python -m switchyard.api.reference`; "
           "the CRDs come from the same models. apiVersion `switchyard.dev/v1alpha1`, all namespaced.", ""]
    for kind in KINDS:
        schema = kind.model_json_schema(by_alias=True)
        defs = schema.get("$defs", {})
        spec = _deref(schema["properties"]["spec"], defs)
        doc = (kind.__module__ and sys.modules[kind.__module__].__doc__ or "").strip()
        out += [f"## {kind.KIND}", "", doc, "",
                f"Short names: {', '.join(kind.SHORT_NAMES)}.", "",
                "| field | type | required | default | limits | description |",
                "|---|---|---|---|---|---|"]
        _rows(spec, defs, "spec", out)
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
