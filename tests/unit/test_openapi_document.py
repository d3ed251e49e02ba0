"""The OpenAPI document: valid OpenAPI 3.1, every route documented, and the described bodies agree with the hand
checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from pydantic import ValidationError

from switchyard.api import compile_table, load_dir
from switchyard.api.table import KeyRoute, RoutingTable
from switchyard.errors import STATUS, ApiError
from switchyard.gateway import openapi
from switchyard.gateway.app import build_app, new_state
from switchyard.gateway.auth import find_key
from switchyard.gateway.inference import parse_body
from switchyard.gateway.pools import MAX_MODELS, _validate
from switchyard.gateway.submit import MAX_ITEMS

MANIFESTS = Path(__file__).parents[1] / "integration" / "manifests"


def _doc() -> dict[str, Any]:
    return orjson.loads(openapi.document())


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = _doc()
    assert doc["openapi"].startswith("3.1")
    validate(doc, cls=OpenAPIV31SpecValidator)  # raises on any violation


def test_every_route_of_the_app_is_documented_and_nothing_else() -> None:
    app = build_app(new_state("nats://127.0.0.1:1"), access_log=False)  # never connects: routes only
    served = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()  # type: ignore[union-attr]
              if r.method != "HEAD"}
    doc = _doc()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served - documented == set(), "routes without documentation"
    assert documented - served == set(), "documented routes the gateway does not serve"


def test_every_error_code_and_status_is_described() -> None:
    doc = _doc()
    assert doc["x-error-codes"] == dict(STATUS)
    responses = doc["components"]["responses"]
    for code, status in STATUS.items():
        for shape in ("E", "OpenAiE"):
            enum = responses[f"{shape}{status}"]["content"]["application/json"]["schema"]["allOf"][1]
            assert code in enum["properties"]["error"]["properties"]["code"]["enum"]
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["400"]["$ref"]
    assert chat.endswith("/OpenAiE400")
    native = doc["paths"]["/v1/{op}/{model}"]["post"]
    assert native["responses"]["400"]["$ref"].endswith("/E400")
    assert set(native["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}


def test_keyed_and_public_operations() -> None:
    doc = _doc()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API key of the Gateway's spec.keys"}
    assert doc["paths"]["/openapi.json"]["get"]["security"] == []
    assert doc["paths"]["/v1/pools"]["post"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    assert "429" in doc["paths"]["/v1/pools"]["post"]["responses"]  # too_many_auth_failures, on every keyed call


def test_request_schemas_are_the_models_json_schema() -> None:
    schemas = _doc()["components"]["schemas"]
    from switchyard.gateway.openai_api.bodies import ChatBody
    assert schemas["ChatBody"]["properties"].keys() == ChatBody.model_json_schema()["properties"].keys()
    assert schemas["InferenceBody"]["properties"]["items"]["maxItems"] == MAX_ITEMS


GOOD_BODIES: list[Any] = [{"items": [1]}, {"items": [{"text": "a"}], "params": {}},
                          {"items": [None, "x"], "params": {"k": [1]}}, {"items": [0] * MAX_ITEMS}]
BAD_BODIES: list[Any] = [None, [], "x", 1, {}, {"params": {}}, {"items": []}, {"items": None}, {"items": "ab"},
                         {"items": {"a": 1}}, {"items": [1], "params": []}, {"items": [1], "params": None},
                         {"items": [1], "params": "x"}, {"items": [1], "extra": 1}, {"messages": [], "model": "m"},
                         {"items": [0] * (MAX_ITEMS + 1)}]


@pytest.mark.parametrize("body", GOOD_BODIES, ids=range(len(GOOD_BODIES)))
def test_inference_model_accepts_what_the_hand_check_accepts(body: Any) -> None:
    items, params = parse_body(body)
    parsed = openapi.InferenceBody.model_validate(body)
    assert (parsed.items, parsed.params) == (items, params)


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_inference_model_refuses_what_the_hand_check_refuses(body: Any) -> None:
    with pytest.raises(ApiError) as exc:
        parse_body(body)
    assert exc.value.code == "bad_request"
    with pytest.raises(ValidationError):
        openapi.InferenceBody.model_validate(body)


@pytest.fixture(scope="module")
def pool_table() -> RoutingTable:
    rs, _ = load_dir(MANIFESTS)
    return compile_table(rs).raise_for_issues()


GOOD_POOLS: list[Any] = [{"name": "p1", "gpus": {"cpu": 1}},
                         {"name": "a-b-9", "gpus": {"cpu": 0}, "models": [], "ttl_seconds": 60, "tenant": "t-1"},
                         {"name": "p", "gpus": {"cpu": 2}, "tenant": None}]
BAD_POOLS: list[Any] = [None, [], "p1", {"gpus": {"cpu": 1}}, {"name": "", "gpus": {"cpu": 1}},
                        {"name": "Big_Name", "gpus": {"cpu": 1}}, {"name": "-p", "gpus": {"cpu": 1}},
                        {"name": "p" * 64, "gpus": {"cpu": 1}}, {"name": 7, "gpus": {"cpu": 1}}, {"name": "p1"},
                        {"name": "p1", "gpus": {}}, {"name": "p1", "gpus": [1]}, {"name": "p1", "gpus": {"cpu": -1}},
                        {"name": "p1", "gpus": {"cpu": "1"}}, {"name": "p1", "gpus": {"cpu": True}},
                        {"name": "p1", "gpus": {"cpu": 1.5}}, {"name": "p1", "gpus": {"cpu": 1}, "ttl_seconds": 0},
                        {"name": "p1", "gpus": {"cpu": 1}, "ttl_seconds": "60"},
                        {"name": "p1", "gpus": {"cpu": 1}, "ttl_seconds": True},
                        {"name": "p1", "gpus": {"cpu": 1}, "ttl_seconds": None},
                        {"name": "p1", "gpus": {"cpu": 1}, "tenant": "Bad"},
                        {"name": "p1", "gpus": {"cpu": 1}, "tenant": 3},
                        {"name": "p1", "gpus": {"cpu": 1}, "models": "test/echo"},
                        {"name": "p1", "gpus": {"cpu": 1}, "models": [1]},
                        {"name": "p1", "gpus": {"cpu": 1}, "models": ["test/echo", "test/echo"]},
                        {"name": "p1", "gpus": {"cpu": 1}, "models": [f"m{i}" for i in range(MAX_MODELS + 1)]},
                        {"name": "p1", "gpus": {"cpu": 1}, "size": 3}]


def _admin(table: RoutingTable) -> KeyRoute:
    key = find_key(table, "admin-key-0123456789abcdef")
    assert key is not None and key.admin
    return key


@pytest.mark.parametrize("body", GOOD_POOLS, ids=range(len(GOOD_POOLS)))
def test_pool_model_accepts_what_the_hand_check_accepts(pool_table: RoutingTable, body: Any) -> None:
    record = _validate(pool_table, _admin(pool_table), body)
    parsed = openapi.PoolBody.model_validate(body)
    assert (parsed.name, dict(parsed.gpus), tuple(parsed.models)) == (record.name, dict(record.gpus), record.models)


@pytest.mark.parametrize("body", BAD_POOLS, ids=range(len(BAD_POOLS)))
def test_pool_model_refuses_what_the_hand_check_refuses(pool_table: RoutingTable, body: Any) -> None:
    with pytest.raises(ApiError) as exc:
        _validate(pool_table, _admin(pool_table), body)
    assert exc.value.code == "bad_request", exc.value
    with pytest.raises(ValidationError):
        openapi.PoolBody.model_validate(body)


def test_built_once_per_process() -> None:
    assert openapi.document() is openapi.document()
