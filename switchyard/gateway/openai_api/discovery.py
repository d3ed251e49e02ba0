"""Discovery: GET /v1/models (OpenAI's list), GET /v1/metadata (Nexus), GET / and GET /status (Marie)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ... import __version__
from ...errors import ApiError
from ..auth import authenticate_request
from ..http import json_response
from ..state import state_of

# (method, path, operation or None): what /v1/metadata announces; app.py serves every one.
OPENAI_ENDPOINTS: tuple[tuple[str, str, str | None], ...] = (
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", "chat"),
    ("POST", "/v1/completions", "generate"),
    ("POST", "/v1/embeddings", "encode"),
    ("POST", "/v1/images/generations", "image"),
    ("POST", "/v1/audio/speech", "speech"),
)
METADATA_PATH = "/v1/metadata"
MODEL_PATH = "/v1/models/{id}"  # OpenAI's models.retrieve


async def list_models(request: web.Request) -> web.Response:
    """The models the key may call, each profile too (`model:profile` is a name the body's `model` takes)."""
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    data: list[dict[str, Any]] = []
    for model, route in sorted(table.models.items()):
        if key is not None and not key.allows_model(model):
            continue
        for name in [model, *(f"{model}:{p}" for p in sorted(route.profiles)), *route.aliases]:
            # created: the routing table keeps no creation time; 0 says "unknown" rather than a made-up date.
            data.append({"id": name, "object": "model", "created": 0, "owned_by": route.upstream})
    return json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """One entry of the list (OpenAI's models.retrieve); 404 for a model the key may not call, as for none."""
    table = state_of(request).table()
    key = authenticate_request(request, table)
    name = request.match_info["id"]
    model, _, profile = name.partition(":")
    model = table.model_of(model)  # an alias is listed, so it can be retrieved
    route = table.models.get(model)
    hidden = key is not None and not key.allows_model(model)
    if route is None or hidden or (profile and profile not in route.profiles):
        raise ApiError("unknown_model", f"model {name!r} is not served by this gateway")
    return json_response({"id": name, "object": "model", "created": 0, "owned_by": route.upstream})


async def metadata(request: web.Request) -> web.Response:
    """What this gateway serves, for service discovery: endpoints and the operations behind them."""
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    operations = sorted({op for m, r in table.models.items() if key is None or key.allows_model(m)
                         for op in r.operations})
    return json_response({
        "name": "switchyard", "version": __version__,
        "capabilities": {"openai": True, "native": True, "streaming": True, "operations": operations},
        "endpoints": {
            "openai": [{"method": m, "path": p, **({"operation": op} if op else {})}
                       for m, p, op in OPENAI_ENDPOINTS],
            "native": [{"method": "POST", "path": "/v1/{operation}/{model}"},
                       {"method": "GET", "path": "/v1/jobs/{id}"},
                       {"method": "GET", "path": "/v1/configs/models"},
                       {"method": "GET", "path": "/v1/pools"},
                       {"method": "GET", "path": "/v1/ws"}],  # the WebSocket upgrade
            "description": [{"method": "GET", "path": p} for p in ("/openapi.json", "/docs")],
            "health": [{"method": "GET", "path": p} for p in ("/healthz", "/readyz", "/health", "/status")],
        },
    })


async def root(request: web.Request) -> web.Response:
    return json_response({})


async def status(request: web.Request) -> web.Response:
    """Version information, for anyone (like /health without a key): nothing about models or workers."""
    st = state_of(request)
    ready = st.dispatcher.connected and st.holder.table is not None
    return json_response({"status": "ok" if ready else "degraded", "name": "switchyard", "version": __version__,
                          "api_versions": ["v1"]})
