"""The committed CRDs are exactly what the models generate, structural, and accept the examples.

The CEL rules themselves are evaluated only by a real API server (tests/k8s applies these
CRDs); here a small OpenAPI walker checks everything else the API server checks.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from switchyard.api import crd as gen
from switchyard.api.loader import KINDS as MODELS

ROOT = Path(__file__).resolve().parents[2]
CRDS = {kind.KIND: gen.crd(kind) for kind in gen.KINDS}
REGENERATE = f"run `{gen.COMMAND}` and commit the result"

# Keywords a structural schema may use (apiextensions.k8s.io/v1 JSONSchemaProps, the subset we emit).
ALLOWED = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum", "pattern",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems",
    "maxItems", "maxProperties", "default", "nullable", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-validations",
}
SCALARS = {"string", "integer", "number", "boolean"}


def schema_of(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}.*")


# -- the files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dir", gen.OUT_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crds_are_generated(out_dir: Path) -> None:
    expected = gen.rendered()
    present = {p.name for p in out_dir.glob("*.yaml")} if out_dir.is_dir() else set()
    stale = sorted(n for n, text in expected.items()
                   if not (out_dir / n).is_file() or (out_dir / n).read_text() != text)
    extra = sorted(present - set(expected))
    rel = out_dir.relative_to(ROOT)
    assert not stale, f"{rel}/ differs from the models ({', '.join(stale)}): {REGENERATE}"
    assert not extra, f"{rel}/ has files the models do not generate ({', '.join(extra)}): delete them, or {REGENERATE}"


def test_kustomization_lists_every_crd() -> None:
    resources = yaml.safe_load((ROOT / "manifests/kustomization.yaml").read_text())["resources"]
    assert {f"crds/{gen.filename(k)}" for k in gen.KINDS} <= set(resources)


# -- the CRD objects ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", gen.KINDS, ids=lambda k: k.KIND)
def test_crd_names_scope_versions(kind: Any) -> None:
    c = CRDS[kind.KIND]
    assert c["metadata"]["name"] == f"{kind.PLURAL}.switchyard.dev"
    assert c["metadata"]["annotations"]["switchyard.dev/generated-by"] == gen.COMMAND
    assert c["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    names = c["spec"]["names"]
    assert names["kind"] == kind.KIND and names["plural"] == kind.PLURAL
    assert names["shortNames"] == list(kind.SHORT_NAMES)
    assert names["categories"] == ["switchyard"]
    assert c["spec"]["scope"] == "Namespaced"
    (version,) = c["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {col["name"]: col for col in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    for col in columns.values():
        assert col["type"] in {"string", "integer", "number", "boolean", "date"} and col["jsonPath"].startswith(".")


@pytest.mark.parametrize("kind", gen.KINDS, ids=lambda k: k.KIND)
def test_schema_is_structural(kind: Any) -> None:
    root = schema_of(kind.KIND)
    assert root["properties"]["metadata"] == {"type": "object"}  # the API server owns metadata's schema
    assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    for path, node in nodes(root):
        where = f"{kind.KIND}{path or ' (root)'}"
        assert set(node) <= ALLOWED, f"{where}: not structural: {sorted(set(node) - ALLOWED)}"
        assert node.get("type") in SCALARS | {"object", "array"}, f"{where}: needs a type"
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), f"{where}: arrays need items"
        if node["type"] == "object":
            assert not ("properties" in node and "additionalProperties" in node), f"{where}: both kinds of object"
            if "properties" not in node and "additionalProperties" not in node and path != ".metadata":
                assert node.get("x-kubernetes-preserve-unknown-fields") is True, f"{where}: object with no schema"
        else:
            assert "x-kubernetes-preserve-unknown-fields" not in node, where
        if "default" in node:
            assert not validate(node, node["default"]), f"{where}: default does not validate"
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = node["x-kubernetes-list-map-keys"]
            item = node["items"]
            assert item["type"] == "object" and set(keys) <= set(item.get("required", [])), f"{where}: keys required"
            assert all(item["properties"][k]["type"] in SCALARS for k in keys), where
        elif list_type == "set":
            assert node["items"]["type"] in SCALARS, f"{where}: sets need scalar items"
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) <= {"rule", "message", "fieldPath"} and rule["rule"] and rule["message"], where


@pytest.mark.parametrize("kind", gen.KINDS, ids=lambda k: k.KIND)
def test_what_cel_iterates_is_bounded(kind: Any) -> None:
    """The API server refuses rules whose estimated cost is too high: bound every list and map they walk."""
    for path, node in nodes(schema_of(kind.KIND)):
        if "x-kubernetes-validations" not in node:
            continue
        for sub, inner in nodes(node, path):
            if inner["type"] == "array":
                assert "maxItems" in inner, f"{kind.KIND}{sub}: a CEL rule at {path} walks this list; set maxItems"
            if inner["type"] == "object" and "additionalProperties" in inner:
                assert "maxProperties" in inner, f"{kind.KIND}{sub}: a CEL rule walks this map; set maxProperties"
            if inner["type"] == "string" and "enum" not in inner and \
                    sub.endswith((".name", "[]", "Profile", ".output")):
                assert "maxLength" in inner, f"{kind.KIND}{sub}: compared by a CEL rule; set maxLength"


def test_descriptions_reach_kubectl_explain() -> None:
    up = schema_of("Upstream")
    assert up["description"].startswith("Upstream:")
    assert up["properties"]["spec"]["properties"]["scaling"]["properties"]["minReplicas"]["description"]
    # Every field the models describe keeps its description.
    for kind in gen.KINDS:
        model_schema = kind.model_json_schema(by_alias=True)
        described = {name for d in model_schema.get("$defs", {}).values()
                     for name, p in (d.get("properties") or {}).items() if p.get("description")}
        emitted = {path.rsplit(".", 1)[-1] for path, n in nodes(schema_of(kind.KIND)) if n.get("description")}
        assert described <= emitted, f"{kind.KIND}: descriptions lost: {sorted(described - emitted)}"


def test_uniqueness_and_cross_field_rules_are_where_the_models_have_them() -> None:
    up, planner, pool = (schema_of(k)["properties"]["spec"] for k in ("Upstream", "Planner", "Pool"))
    for name in ("bundles", "profiles"):
        assert up["properties"][name]["x-kubernetes-list-type"] == "map"
        assert up["properties"][name]["x-kubernetes-list-map-keys"] == ["name"]
    assert up["properties"]["machineProfiles"]["x-kubernetes-list-type"] == "set"
    assert planner["properties"]["steps"]["x-kubernetes-list-map-keys"] == ["name"]
    rules = [r["rule"] for r in up["x-kubernetes-validations"]]
    assert any("defaultMachineProfile in self.machineProfiles" in r for r in rules)
    assert "self.minReplicas <= self.maxReplicas" in up["properties"]["scaling"]["x-kubernetes-validations"][0]["rule"]
    assert any("dependsOn" in r["rule"] for r in planner["x-kubernetes-validations"])
    assert pool["properties"]["gpus"]["additionalProperties"]["type"] == "integer"
    assert "k.matches(" in pool["properties"]["gpus"]["x-kubernetes-validations"][0]["rule"]
    status = schema_of("Upstream")["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True  # Status allows extra fields
    assert status["properties"]["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["properties"]["liveWorkers"]["additionalProperties"] == {"type": "integer"}


# -- the examples against the schema -------------------------------------------------------------


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Errors the API server's OpenAPI validation (not CEL) would report; unknown fields count (strict)."""
    where = path or "<root>"
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null is not allowed"]
    t = schema["type"]
    ok = {"string": isinstance(value, str), "boolean": isinstance(value, bool),
          "integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "object": isinstance(value, dict), "array": isinstance(value, list)}[t]
    if not ok:
        return [f"{where}: expected {t}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if t == "string":
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: length {len(value)} out of bounds")
    if t in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and (value < low or (schema.get("exclusiveMinimum") and value == low)):
            errors.append(f"{where}: {value} below minimum {low}")
        if high is not None and (value > high or (schema.get("exclusiveMaximum") and value == high)):
            errors.append(f"{where}: {value} above maximum {high}")
    if t == "array":
        if len(value) > schema.get("maxItems", len(value)) or len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            errors += validate(schema["items"], item, f"{path}[{i}]")
        list_type = schema.get("x-kubernetes-list-type")
        keys = ([tuple(i.get(k) for k in schema["x-kubernetes-list-map-keys"]) for i in value if isinstance(i, dict)]
                if list_type == "map" else value if list_type == "set" else [])
        dupes = sorted({repr(k) for k in keys if keys.count(k) > 1})
        if dupes:
            errors.append(f"{where}: duplicate entries {', '.join(dupes)}")
    if t == "object":
        if len(value) > schema.get("maxProperties", len(value)):
            errors.append(f"{where}: more than {schema['maxProperties']} entries")
        props = schema.get("properties") or {}
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}.{name}: required")
        for name, item in value.items():
            if name in props:
                errors += validate(props[name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(schema["additionalProperties"], item, f"{path}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errors.append(f"{where}.{name}: unknown field")
    return errors


def example_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("apiVersion") == "switchyard.dev/v1alpha1":
                out.append((f"{f.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


EXAMPLES = example_objects()


def test_every_kind_has_an_example() -> None:
    assert {doc["kind"] for _, doc in EXAMPLES} == set(CRDS)


@pytest.mark.parametrize(("name", "doc"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_validates_against_crd_schema(name: str, doc: dict[str, Any]) -> None:
    assert validate(schema_of(doc["kind"]), doc) == []


def _bge() -> dict[str, Any]:
    return copy.deepcopy(next(d for n, d in EXAMPLES if n.endswith("Upstream/bge-m3")))


# The API server and the models must agree on what is valid (CEL aside), or a file that runs
# in standalone mode would be refused by `kubectl apply`, or the reverse.
MUTATIONS = {
    "duplicate-bundle": (lambda s: s["bundles"].append({"name": "default"}), False),
    "duplicate-profile": (lambda s: s["profiles"].append({"name": "dense"}), False),
    "duplicate-machine-profile": (lambda s: s["machineProfiles"].append("l4"), False),
    "unknown-field": (lambda s: s.update(replicas=3), False),
    "bad-label": (lambda s: s["machineProfiles"].append("L4"), False),
    "too-many-attempts": (lambda s: s.update(maxAttempts=21), False),
    "zero-timeout": (lambda s: s.update(timeoutSeconds=0), False),
    "wrong-type": (lambda s: s["scaling"].update(maxReplicas="many"), False),  # pydantic would coerce "8"
    "missing-workers": (lambda s: s.pop("workers"), False),
    "unknown-operation": (lambda s: s["operations"].append("fly"), False),
    "null-optional": (lambda s: s.update(defaultMachineProfile=None, gatewayRef=None), True),
    "free-form-params": (lambda s: s["profiles"][0]["params"].update(nested={"any": [1, "x"]}), True),
    "no-bundles-key": (lambda s: s.pop("bundles") and s.pop("profiles"), True),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_schema_and_model_agree(case: str) -> None:
    mutate, valid = MUTATIONS[case]
    doc = _bge()
    mutate(doc["spec"])
    schema_errors = validate(schema_of("Upstream"), doc)
    try:
        MODELS["Upstream"].model_validate(doc)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert (not schema_errors, model_ok) == (valid, valid), schema_errors


def test_pool_gpus_map_is_typed() -> None:
    pool = copy.deepcopy(next(d for _, d in EXAMPLES if d["kind"] == "Pool"))
    pool["spec"]["gpus"] = {"l4": "two"}
    assert validate(schema_of("Pool"), pool) == [".spec.gpus.l4: expected integer, got str"]


# -- manifests/ ----------------------------------------------------------------------------------


def manifest_objects(directory: Path) -> list[dict[str, Any]]:
    files = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    return [doc for f in files for doc in yaml.safe_load_all((directory / f).read_text()) if doc]


BASE = manifest_objects(ROOT / "manifests")


def _one(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in BASE if o["kind"] == kind and o["metadata"]["name"] == name)


def _allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
               and (not r.get("resourceNames") or name in r["resourceNames"]) for r in rules)


def test_operator_holds_every_permission_it_grants_gateways() -> None:
    """RBAC escalation prevention: the API server refuses a Role granting more than its creator holds."""
    from switchyard.api.gateway import Gateway
    from switchyard.operator import children

    gw = Gateway.model_validate({"kind": "Gateway", "metadata": {"name": "g", "namespace": "n"}, "spec": {}})
    held = _one("ClusterRole", "switchyard-operator")["rules"]
    for rule in children.gateway_role(gw, ["bge-m3"])["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [None]:
                        assert _allows(held, group, resource, verb, name), \
                            f"manifests/rbac.yaml: the operator grants {verb} {group}/{resource} but lacks it"


def test_operator_may_apply_watch_and_prune_its_children() -> None:
    held = _one("ClusterRole", "switchyard-operator")["rules"]
    kinds = [("", "configmaps"), ("", "services"), ("", "serviceaccounts"), ("apps", "deployments"),
             ("rbac.authorization.k8s.io", "roles"), ("rbac.authorization.k8s.io", "rolebindings"),
             ("keda.sh", "scaledobjects"), ("coordination.k8s.io", "leases")]
    for group, resource in kinds:
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert _allows(held, group, resource, verb), f"operator lacks {verb} {group}/{resource}"
    for plural in ("gateways", "upstreams", "pools", "planners"):
        assert _allows(held, "switchyard.dev", f"{plural}/status", "patch")
    for plural in ("gateways", "upstreams", "pools"):  # owners of children with blockOwnerDeletion
        assert _allows(held, "switchyard.dev", f"{plural}/finalizers", "update")


def test_every_object_has_a_sync_wave() -> None:
    for obj in BASE:
        wave = obj["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
        expected = "-1" if obj["kind"] in ("Namespace", "CustomResourceDefinition") else "0"
        assert wave == expected, f"{obj['kind']}/{obj['metadata']['name']}: sync-wave {wave!r}, want {expected!r}"
    nats = yaml.safe_load((ROOT / "manifests/nats/kustomization.yaml").read_text())
    assert nats["commonAnnotations"]["argocd.argoproj.io/sync-wave"] == "0"


def test_pods_meet_pod_security_restricted() -> None:
    ns = _one("Namespace", "switchyard-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    nats = [o for o in manifest_objects(ROOT / "manifests/nats") if o["kind"] == "StatefulSet"]
    for workload in [_one("Deployment", "switchyard-operator"), *nats]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
