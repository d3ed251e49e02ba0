"""GET /openapi.json and /docs on a running gateway, and real answers checked against the document's schemas."""

from __future__ import annotations

import re
from typing import Any

import pytest
from dataplane import ADMIN, ECHO, GatewayUnderTest, Reply, gateway, worker
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from switchyard.natsserver import NatsServer

pytestmark = pytest.mark.timeout(60)


def answer(items: list[Any], ctx: Any) -> list[Any]:
    """A completion for each prompt, a vector for each text: what OpenAI's shapes need."""
    return [f"re: {i['prompt']}" if "prompt" in i else [float(len(i["text"])), 1.0] for i in items]


def check(doc: dict[str, Any], reply: Reply, path: str, method: str = "get") -> None:
    """The reply's body matches the schema the document gives for its path, method and status."""
    responses = doc["paths"][path][method]["responses"]
    assert str(reply.status) in responses, f"{method.upper()} {path} answered {reply.status}, not documented"
    response = responses[str(reply.status)]
    if "$ref" in response:
        response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    # The refs point into the document's components: validate with them at the root.
    Draft202012Validator({**schema, "components": doc["components"]}).validate(reply.body)


async def _doc(gw: GatewayUnderTest) -> dict[str, Any]:
    r = await gw.call("GET", "/openapi.json")  # no key: the document describes, it reveals nothing
    assert r.status == 200, r.body
    assert r.headers["Content-Type"].startswith("application/json")
    return r.body  # type: ignore[no-any-return]


async def test_served_without_a_key_and_valid(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        doc = await _doc(gw)
        validate(doc, cls=OpenAPIV31SpecValidator)
        assert "test/echo" not in str(doc)  # no model, tenant or key of this gateway's config
        page = await gw.call("GET", "/docs")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        html = page.body
        assert 'fetch("/openapi.json")' in html
        # Offline: no script, style or font from anywhere else.
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "the page needs the internet"


async def test_real_answers_match_their_schemas(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        doc = await _doc(gw)
        for path in ("/healthz", "/readyz", "/status", "/health"):
            check(doc, await gw.call("GET", path), path)
        check(doc, await gw.call("GET", "/health", headers=ADMIN), "/health")
        check(doc, await gw.call("GET", "/v1/models", headers=ADMIN), "/v1/models")
        check(doc, await gw.call("GET", "/v1/models/test/echo", headers=ADMIN), "/v1/models/{id}")
        # No worker yet: 202, then the job.
        queued = await gw.infer(items=[{"text": "later"}], headers={"X-Request-ID": "oa-1"})
        assert queued.status == 202, queued.body
        check(doc, queued, "/v1/{op}/{model}", "post")
        check(doc, await gw.call("GET", "/v1/jobs/oa-1", headers=ADMIN), "/v1/jobs/{id}")
        # Errors, native and OpenAI-shaped.
        bad = await gw.call("POST", "/v1/encode/test/echo", headers=ADMIN, json={"items": []})
        assert bad.status == 400
        check(doc, bad, "/v1/{op}/{model}", "post")
        unauthorized = await gw.infer(headers={"Authorization": "Bearer nope-0123456789abcdef0123"})
        assert unauthorized.status == 401
        check(doc, unauthorized, "/v1/{op}/{model}", "post")
        openai_bad = await gw.call("POST", "/v1/chat/completions", headers=ADMIN, json={"model": "test/echo"})
        assert openai_bad.status == 400 and "type" in openai_bad.body["error"]
        check(doc, openai_bad, "/v1/chat/completions", "post")
        missing = await gw.call("GET", "/v1/jobs/never-made", headers=ADMIN)
        assert missing.status == 404
        check(doc, missing, "/v1/jobs/{id}")
        # Pools: create, read, list, delete.
        created = await gw.call("POST", "/v1/pools", headers=ADMIN, json={"name": "oa", "gpus": {"cpu": 1}})
        assert created.status == 201, created.body
        check(doc, created, "/v1/pools", "post")
        check(doc, await gw.call("GET", "/v1/pools", headers=ADMIN), "/v1/pools")
        check(doc, await gw.call("GET", "/v1/pools/oa", headers=ADMIN), "/v1/pools/{name}")
        check(doc, await gw.call("DELETE", "/v1/pools/oa", headers=ADMIN), "/v1/pools/{name}", "delete")
        # A worker: the 200 result, and the job finished.
        # Config views and discovery.
        check(doc, await gw.call("GET", "/v1/configs/models", headers=ADMIN), "/v1/configs/models")
        check(doc, await gw.call("GET", "/v1/configs/models/test/gpu", headers=ADMIN), "/v1/configs/models/{id}")
        check(doc, await gw.call("GET", "/v1/configs/bundles", headers=ADMIN), "/v1/configs/bundles")
        check(doc, await gw.call("GET", "/v1/configs/bundles/special", headers=ADMIN), "/v1/configs/bundles/{id}")
        resolved = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN,
                                 json={"model": "test/gpu:sparse", "op": "encode"})
        assert resolved.status == 200, resolved.body
        check(doc, resolved, "/v1/configs/resolve", "post")
        check(doc, await gw.call("GET", "/v1/metadata", headers=ADMIN), "/v1/metadata")
        # A worker: the 200 results, native and OpenAI's.
        async with worker(nats_server.url, answer):
            await gw.wait_for_workers(ECHO)
            ok = await gw.infer(items=[{"text": "a"}])
            assert ok.status == 200, ok.body
            check(doc, ok, "/v1/{op}/{model}", "post")
            done = await gw.call("POST", "/v1/completions", headers=ADMIN,
                                 json={"model": "test/echo", "prompt": ["a", "b"]})
            assert done.status == 200, done.body
            check(doc, done, "/v1/completions", "post")
            vectors = await gw.call("POST", "/v1/embeddings", headers=ADMIN,
                                    json={"model": "test/echo", "input": ["x", "yz"]})
            assert vectors.status == 200, vectors.body
            check(doc, vectors, "/v1/embeddings", "post")
