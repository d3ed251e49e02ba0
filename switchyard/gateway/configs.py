"""Read-side config endpoints, served from the routing table in memory."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..api.table import ModelRoute, bundles_of
from ..errors import ApiError
from ..subjects import ANONYMOUS_TENANT
from .auth import authenticate_request
from .http import RID, check_request_id, json_response, read_json
from .resolve import resolve
from .state import GatewayState, state_of


def _describe(route: ModelRoute, st: GatewayState) -> dict[str, Any]:
    live = [b for b in st.registry.live() if route.model in b.models]
    return {
        "id": route.model,
        "upstream": route.upstream,
        "operations": list(route.operations),
        "machine_profiles": list(route.machine_profiles),
        "default_machine_profile": route.default_machine_profile,
        "bundles": [{"name": b.name, "priority": b.priority, "profiles": list(b.profiles),
                     **({"weight": b.weight} if b.weight is not None else {})} for b in route.bundles],
        "aliases": list(route.aliases),
        **({"fallback": {"model": route.fallback.model, "after_s": route.fallback.after_s}}
           if route.fallback else {}),
        **({"circuit_breaker": {"consecutive_failures": route.breaker.consecutive_failures,
                                "cool_off_s": route.breaker.cool_off_s,
                                "half_open_probes": route.breaker.half_open_probes}} if route.breaker else {}),
        "profiles": {k: dict(v) for k, v in route.profiles.items()},
        "timeout_s": route.timeout_s,
        "max_attempts": route.max_attempts,
        "worker_service": route.worker_service,
        "live_workers": len(live),
    }


def _visible(request: web.Request) -> tuple[GatewayState, dict[str, ModelRoute]]:
    """The models this request's key may call: the only ones it is shown."""
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    routes = {m: r for m, r in table.models.items() if key is None or key.allows_model(m)}
    return st, routes


async def list_models(request: web.Request) -> web.Response:
    """Switchyard's view of the models the key may call: ids, and each described in `details`.

    (GET /v1/models is OpenAI's list: openai_api/discovery.py.)
    """
    st, routes = _visible(request)
    table = st.table()
    return json_response({"models": sorted(routes), "epoch": table.epoch, "hash": table.hash,
                          "details": [_describe(r, st) for _, r in sorted(routes.items())]})


async def get_model(request: web.Request) -> web.Response:
    st, routes = _visible(request)
    model = request.match_info["id"]
    route = routes.get(st.table().model_of(model))  # an alias names its model
    if route is None:
        raise ApiError("unknown_model", f"model {model!r} is not served by this gateway")
    return json_response(_describe(route, st))


async def list_bundles(request: web.Request) -> web.Response:
    st, routes = _visible(request)
    live = st.registry.live()
    return json_response({"bundles": [
        {"name": name, "models": models, "live_workers": sum(1 for b in live if b.bundle == name)}
        for name, models in bundles_of(routes.values()).items()
    ]})


async def get_bundle(request: web.Request) -> web.Response:
    st, routes = _visible(request)
    name = request.match_info["id"]
    bundles = bundles_of(routes.values())
    if name not in bundles:
        raise ApiError("not_found", f"no bundle {name!r}")
    live = [b for b in st.registry.live() if b.bundle == name]
    return json_response({"name": name, "models": bundles[name], "live_workers": len(live)})


async def dry_run(request: web.Request) -> web.Response:
    """Resolve like a request would, queue nothing, say what would happen.

    The weighted split picks by tenant and request id: `request_id` in the body (else this request's
    X-Request-ID) names the id whose bundle is shown. The fallback is not tried (its ETA read is a guess
    at a moment); `fallback` in the model's details says whether one exists."""
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    body = _resolve_body(await read_json(request, table.max_request_body_bytes))
    rid = check_request_id(body.request_id, "request_id") if body.request_id is not None else request[RID]
    res = resolve(table, body.op, body.model, machine_profile=body.machine_profile,
                  pool=body.pool, bundle=body.bundle, key=key, request_id=rid)
    st.check_pool(res.lane.pool)
    live = st.registry.serving(res.lane)
    circuit = st.breakers.state(res.lane)
    if circuit == "closed":
        circuit = st.breakers.state(res.lane, key.owner if key is not None else ANONYMOUS_TENANT)
    outcome = ("reject_503" if circuit == "open" else "queue" if live else
               "reject_503" if res.pinned else "provision_202")
    return json_response({**res.describe(), "request_id": rid, "live_workers": live, "circuit": circuit,
                          "outcome": outcome, "epoch": table.epoch})


class ResolveBody(BaseModel):
    """The body of POST /v1/configs/resolve: strings only (a number or a list is refused, not coerced)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    op: str | None = None
    machine_profile: str | None = None
    pool: str | None = None
    bundle: str | None = None
    request_id: str | None = None  # whose bundle the weighted split shows; default this request's X-Request-ID


_RESOLVE_SHAPE = '{"model": "...", "op"?, "machine_profile"?, "pool"?, "bundle"?, "request_id"?}'


def _resolve_body(body: Any) -> ResolveBody:
    try:
        return ResolveBody.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            if not field:
                problems.append("body must be a JSON object")
            elif err["type"] == "extra_forbidden":
                problems.append(f"unknown field {field!r}")
            elif err["type"] == "missing":
                problems.append(f"{field!r} is required")
            elif err["type"] == "string_too_short":
                problems.append(f"{field!r} must be a non-empty string")
            else:
                problems.append(f"{field!r} must be a string, not {type(err['input']).__name__}")
        raise ApiError("bad_request", f"{'; '.join(problems)}; send {_RESOLVE_SHAPE}") from None
