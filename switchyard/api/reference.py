"""Generate docs/resources.md, the field reference, from the CRD schemas (so from the models).

    python -m switchyard.api.reference > docs/resources.md
"""

from __future__ import annotations

import sys
from typing import Any

from .crd import KINDS, crd

LIMITS = (("minimum", "≥"), ("maximum", "≤"), ("minLength", "min length"), ("maxLength", "max length"),
          ("minItems", "min items"), ("maxItems", "max items"), ("maxProperties", "max entries"))
COMMON_STATUS = ("observedGeneration", "conditions")


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if node["type"] == "array":
        return f"list of {_type(node['items'])}"
    if node["type"] == "object" and "additionalProperties" in node:
        return f"map of {_type(node['additionalProperties'])}"
    return str(node["type"])


def _limits(node: dict[str, Any]) -> str:
    out = [f"{label} {node[key]}" for key, label in LIMITS if key in node]
    if node.get("exclusiveMinimum"):
        out = [s.replace("≥", ">") for s in out]
    if "pattern" in node:
        out.append(f"pattern `{node['pattern']}`")
    return ", ".join(out)


def _rows(node: dict[str, Any], path: str, out: list[str], rules: list[tuple[str, str]]) -> None:
    required = set(node.get("required", []))
    for name, prop in node.get("properties", {}).items():
        field = f"{path}.{name}"
        default = f"`{prop['default']}`" if "default" in prop else ""
        desc = prop.get("description", "").replace("\n", " ")
        out.append(f"| `{field}` | {_type(prop)} | {'yes' if name in required else ''} | {default} | "
                   f"{_limits(prop)} | {desc} |")
        target = prop["items"] if prop["type"] == "array" else prop
        rules += [(field, r["message"]) for r in prop.get("x-kubernetes-validations", [])]
        if target is not prop:
            rules += [(f"{field}[]", r["message"]) for r in target.get("x-kubernetes-validations", [])]
        _rows(target, field + ("[]" if target is not prop else ""), out, rules)


def render() -> str:
    out = ["# Resource reference", "",
           "Generated from `switchyard.api` by `python -m switchyard.api.reference`; "
           "the CRDs come from the same models. apiVersion `switchyard.dev/v1alpha1`, all namespaced.", ""]
    for kind in KINDS:
        version = crd(kind)["spec"]["versions"][0]
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        doc = (sys.modules[kind.__module__].__doc__ or "").strip()
        out += [f"## {kind.KIND}", "", doc, "",
                f"Short names: {', '.join(kind.SHORT_NAMES)}.", "",
                "| field | type | required | default | limits | description |",
                "|---|---|---|---|---|---|"]
        rules: list[tuple[str, str]] = [("spec", r["message"]) for r in spec.get("x-kubernetes-validations", [])]
        _rows(spec, "spec", out, rules)
        if rules:
            out += ["", "Checked by the API server (CEL):", ""]
            out += [f"- `{field}`: {message}" for field, message in rules]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        own = {k: v for k, v in status.get("properties", {}).items() if k not in COMMON_STATUS}
        if own:  # observedGeneration and the Ready condition are every kind's: said once, not per kind
            out += ["", "Status, besides `observedGeneration` and `conditions` (Ready):", "",
                    "| field | type | required | default | limits | description |", "|---|---|---|---|---|---|"]
            _rows({**status, "properties": own}, "status", out, [])
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
