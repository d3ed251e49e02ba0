"""GET /openapi.json (OpenAPI 3.1) and GET /docs: the HTTP API described from the models it validates with.

Request schemas come from the pydantic models the gateway parses bodies with (OpenAI's in
openai_api/bodies.py, /v1/configs/resolve's ResolveBody). The native inference body and the
pool body are checked by hand on the hot path (inference._body, pools._validate); their
models here only describe them, and tests/unit/test_openapi_document.py proves each agrees with its
hand check on good and bad bodies. The document names no model, key or tenant, so it is
served without a key; it is the same for every request, so it is built once per process.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..api.meta import DNS_LABEL
from ..errors import STATUS
from .configs import ResolveBody
from .openai_api.bodies import ChatBody, CompletionBody, EmbeddingBody, ImageBody, SpeechBody
from .openai_api.errors import error_type
from .pools import DEFAULT_TTL_S, MAX_MODELS, MAX_NAME
from .submit import MAX_ITEMS, OPERATIONS

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"

# -- models: bodies checked by hand elsewhere, and the answers ----------------------------


class InferenceBody(BaseModel):
    """POST /v1/{op}/{model}: the items the worker gets, and its params. (Checked by inference._body.)"""

    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)
    params: dict[str, Any] = Field(default_factory=dict)


class PoolBody(BaseModel):
    """POST /v1/pools (checked by pools._validate, which also checks models and profiles against the table)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=DNS_LABEL)
    gpus: dict[str, Annotated[int, Field(ge=0)]] = Field(min_length=1,
                                                         description="workers per machine profile, e.g. {\"l4\": 1}")
    models: list[str] = Field(default_factory=list, max_length=MAX_MODELS, json_schema_extra={"uniqueItems": True})
    ttl_seconds: int = Field(default=DEFAULT_TTL_S, ge=1,
                             description="at most spec.poolApi.maxTtlSeconds (the default, when that is lower)")
    tenant: str | None = Field(default=None, max_length=MAX_NAME, pattern=DNS_LABEL,
                               description="admin keys only; others create for their own tenant")

    @field_validator("models")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("models names a model twice")
        return v


class ErrorDetail(BaseModel):
    code: str
    message: str
    error_id: str | None = Field(default=None, description="names the gateway log line with the detail")


class Error(BaseModel):
    error: ErrorDetail


class OpenAiErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str
    error_id: str | None = None


class OpenAiError(BaseModel):
    error: OpenAiErrorDetail


class InferenceResult(BaseModel):
    id: str
    model: str
    items: list[Any]
    worker: str
    timing: dict[str, Any]


class Provisioning(BaseModel):
    """202: no live worker (`provisioning`), or `Prefer: respond-async` (`queued`): the item is a job
    (Location: /v1/jobs/{id}, Retry-After)."""

    status: Literal["provisioning", "queued"]
    job_id: str
    machine_profile: str
    bundle: str
    pool: str
    estimated_wait_s: float | None
    queue_position: int | None = Field(default=None, description="after a `Prefer: wait` hold ran out: waiting "
                                                                  "items ahead of it on its lane")
    events: str = Field(description="GET /v1/events: this job's job.progress and job.status, live")
    message: str


class Job(BaseModel):
    id: str
    kind: Literal["item", "plan"]
    state: Literal["queued", "running", "succeeded", "failed", "expired", "cancelled"]
    result: InferenceResult | Error | None
    model: str
    op: str | None
    pool: str
    machine_profile: str
    bundle: str
    attempts: int
    created_at: float | None
    started_at: float | None
    updated_at: float
    deadline: float | None
    history: list[dict[str, Any]] | None = Field(default=None,
                                                 description="earlier outcomes of a re-queued dead letter")
    estimated_wait_s: float | None = Field(default=None, description="while queued")
    queue_position: int | None = Field(default=None, description="while queued: waiting items ahead of it on its "
                                                                  "lane (null: further back than 50, see queue_note)")
    queue_note: str | None = Field(default=None, description="while queued and further back than 50")
    steps: list[dict[str, Any]] | None = Field(default=None, description="a Planner run's steps")


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None


class JobCancelled(Job):
    cancelled: bool = Field(description="false: the job had already ended, and stays as it was")
    message: str


class JobDeleted(BaseModel):
    id: str
    deleted: bool


class Fleet(BaseModel):
    pool: str
    machine_profile: str
    bundle: str
    models: list[str]
    workers: int
    capacity: int = Field(description="live workers x their concurrency")
    used: int
    available: int
    queued: int
    scaling: Literal["scaled_to_zero", "scaling_up", "idle", "serving", "saturated"]
    holders: dict[str, int] | None = Field(default=None, description="admin keys: tenant -> items in flight")


class Capacity(BaseModel):
    fleets: list[Fleet]


class DeadLetter(BaseModel):
    id: int
    job_id: str
    tenant: str
    model: str
    op: str
    pool: str
    machine_profile: str
    bundle: str
    error: ErrorDetail | None
    attempts: int
    max_attempts: int
    worker: str
    failed_at: float
    enqueued_at: float
    items: list[Any] | None = None
    params: dict[str, Any] | None = None


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetter]
    next_after: int | None


class RequeueBody(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=100)


class Requeued(BaseModel):
    requeued: list[dict[str, Any]]


class UsageRow(BaseModel):
    """One group: its columns (those of group_by, in the order tenant, key, model, machine_profile, pool,
    bundle, op), then the counts (docs/usage.md)."""

    tenant: str | None = None
    key: str | None = None
    model: str | None = None
    machine_profile: str | None = None
    pool: str | None = None
    bundle: str | None = None
    op: str | None = None
    requests: int
    items: int
    attempts: int
    input_tokens: int
    output_tokens: int
    compute_seconds: float
    gpu_seconds: float


class UsageReport(BaseModel):
    from_: str = Field(alias="from")
    to: str
    group_by: list[str]
    tenant: str | None
    records: int
    usage: list[UsageRow]


class PoolWorkers(BaseModel):
    reserved: int
    ready: int


class Pool(BaseModel):
    name: str
    tenant: str | None
    models: list[str]
    gpus: dict[str, int]
    ttl_seconds: int | None
    expires_at: str | None
    state: Literal["active", "expired"]
    workers: dict[str, PoolWorkers]


class PoolList(BaseModel):
    pools: list[Pool]


class PoolDeleted(BaseModel):
    name: str
    deleted: bool


class Status(BaseModel):
    status: str


class Ready(BaseModel):
    status: Literal["ready"]
    config_epoch: int


class Health(BaseModel):
    """Anyone gets `status`; an admin key also gets the fleet (workers, pending items, config)."""

    model_config = ConfigDict(extra="allow")
    status: Literal["healthy", "degraded"]


class Version(BaseModel):
    status: str
    name: str
    version: str
    api_versions: list[str]


class OpenAiModel(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAiModelList(BaseModel):
    object: Literal["list"]
    data: list[OpenAiModel]


class ConfigBundleRef(BaseModel):
    name: str
    priority: int
    profiles: list[str]
    weight: int | None = None  # its share of the weighted split (docs/routing.md); absent: not in it


class ConfigFallback(BaseModel):
    model: str
    after_s: float


class ConfigBreaker(BaseModel):
    consecutive_failures: int
    cool_off_s: float
    half_open_probes: int


class ConfigModel(BaseModel):
    id: str
    upstream: str
    operations: list[str]
    machine_profiles: list[str]
    default_machine_profile: str
    bundles: list[ConfigBundleRef]
    aliases: list[str]
    fallback: ConfigFallback | None = None
    circuit_breaker: ConfigBreaker | None = None
    profiles: dict[str, dict[str, Any]]
    timeout_s: float
    max_attempts: int
    worker_service: str | None
    live_workers: int


class ConfigModelList(BaseModel):
    models: list[str]
    epoch: int
    hash: str
    details: list[ConfigModel]


class ConfigBundle(BaseModel):
    name: str
    models: list[str]
    live_workers: int


class ConfigBundleList(BaseModel):
    bundles: list[ConfigBundle]


class SplitShare(BaseModel):
    bundle: str
    weight: int


class Resolved(BaseModel):
    """POST /v1/configs/resolve: where the request would go, and what would happen (nothing is queued)."""

    model: str
    profile: str | None
    upstream: str
    bundle: str
    machine_profile: str
    pool: str
    pinned_pool: bool
    subject: str
    alias: str | None = None  # the name asked, when it was an alias of `model`
    split: list[SplitShare] | None = None  # the weighted bundles the request was split among
    request_id: str  # whose place in the split `bundle` is
    live_workers: int
    circuit: Literal["closed", "open", "half_open"]
    outcome: Literal["queue", "reject_503", "provision_202"]
    epoch: int


class Metadata(BaseModel):
    name: Literal["switchyard"]
    version: str
    capabilities: dict[str, Any]
    endpoints: dict[str, list[dict[str, str]]]


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: str
    logprobs: Any


class ChatCompletion(BaseModel):
    """`stream: true` sends chat.completion.chunk objects as Server-Sent Events instead, then `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    system_fingerprint: str | None
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: Any


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: str | None
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 little-endian float32 with "
                                                     "encoding_format=base64")


class Embeddings(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage | None = None


class Image(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class Images(BaseModel):
    created: int
    data: list[Image]
    usage: dict[str, int] | None = None


class PlanStep(BaseModel):
    name: str
    state: str
    job_id: str = Field(description="the step's own job: `<run id>/<step>`")
    model: str
    operation: str
    depends_on: list[str]
    estimated_wait_s: float | None = Field(default=None, description="while its lane is cold")
    error: ErrorDetail | None = None


class PlanRun(BaseModel):
    """202: the run is a job (Location: /v1/jobs/{id})."""

    status: Literal["running"]
    job_id: str
    planner: str
    steps: list[PlanStep]


class PlanResult(BaseModel):
    """200 (Prefer: wait, and the run ended in time): the output step's result."""

    id: str
    planner: str
    items: list[Any]
    timing: dict[str, Any]
    steps: list[PlanStep]


class PlannerStep(BaseModel):
    name: str
    model: str
    operation: str
    depends_on: list[str]


class PlannerFailure(BaseModel):
    at: float
    step: str | None = Field(description="null: the run failed before a step ran")
    code: str


class PlannerRuns(BaseModel):
    """A Planner's runs since the counts began: the key's tenant's, every tenant's for an admin key."""

    started: int
    running: int = Field(description="started, less the runs that ended")
    succeeded: int
    failed: int
    cancelled: int
    last_run_at: float | None = Field(description="when the latest run started")
    last_failure: PlannerFailure | None


class Planner(BaseModel):
    name: str
    output: str
    steps: list[PlannerStep]
    runs: PlannerRuns


class PlannerList(BaseModel):
    planners: list[Planner]


_REQUESTS: list[type[BaseModel]] = [InferenceBody, PoolBody, ResolveBody, ChatBody, CompletionBody, EmbeddingBody,
                                    ImageBody, SpeechBody, RequeueBody]
_JOBS: list[type[BaseModel]] = [JobList, JobCancelled, JobDeleted, Capacity, DeadLetterList, DeadLetter, Requeued,
                                UsageReport]
_ANSWERS: list[type[BaseModel]] = [Error, OpenAiError, InferenceResult, Provisioning, Job, Pool, PoolList,
                                   PoolDeleted, Status, Ready, Health, Version, OpenAiModel, OpenAiModelList,
                                   ConfigModelList, ConfigModel, ConfigBundleList, ConfigBundle, Resolved, Metadata,
                                   ChatCompletion, Completion, Embeddings, Images, PlanRun, PlanResult,
                                   PlannerList]

# -- operations ---------------------------------------------------------------------------

_OBJECT: dict[str, Any] = {"type": "object"}
_PUBLIC: list[dict[str, list[str]]] = []  # no key needed
_KEYED: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]  # either header carries the key
# Errors every keyed call may answer (auth and its failure limit, the middleware's limits, the queue), beyond
# its own.
_COMMON = (400, 401, 403, 405, 408, 413, 429, 500, 503)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str = "OK", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _op(tag: str, summary: str, ok: dict[str, dict[str, Any]], *, errors: tuple[int, ...] = (),
        body: type[BaseModel] | None = None, keyed: bool = True, openai: bool = False,
        params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    prefix = "OpenAi" if openai else ""
    statuses = sorted(set(errors) | (set(_COMMON) if keyed else set()))
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "security": _KEYED if keyed else _PUBLIC,
                          "responses": {**ok, **{str(s): {"$ref": f"#/components/responses/{prefix}E{s}"}
                                                 for s in statuses}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if params:
        op["parameters"] = list(params)
    return op


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


_ROUTING_HEADERS = (
    _header("X-Machine-Profile", "run on this machine profile"),
    _header("X-Pool", "run in this pool"),
    _header("X-Bundle", "run on workers of this bundle (wins over the Upstream's weighted split)"),
    _header("X-Priority", "`high`, `normal` or `low`: the priority class, for keys of a tier in the Gateway's "
                          "`spec.priority.headerTiers` only (403 forbidden for others)"),
    _header("X-Request-ID", "idempotency key and job id; echoed on the answer"),
    _header("Prefer", "`wait=N`: hold up to N seconds through a cold start instead of answering 202; "
                      "`respond-async` (native HTTP): answer 202 with the job at once, even with a live worker"),
    _header("Accept", "`text/event-stream`: stream the result as Server-Sent Events"),
    _header("X-Job-Deadline", "seconds within which the item must start: refused (422 deadline_unreachable) "
                              "when the learned ETA is longer, else it ends `expired` if it has not started"),
)
# spec.policy (docs/policy.md): on every inference answer a limit applied to, admitted or 429.
_RATELIMIT = {
    "RateLimit-Policy": {"schema": {"type": "string"}, "description": "the limits that applied, e.g. "
                         "`\"per-key\";q=600;w=60` (q: the limit, w: its window in seconds)"},
    "RateLimit": {"schema": {"type": "string"}, "description": "what is left of each, e.g. "
                  "`\"per-key\";r=431;t=17` (r: remaining, t: seconds until the window ends)"},
}
_SSE = ("Server-Sent Events: `event: chunk` (data `{seq, payload}`) per chunk, then `event: done` "
        "(data `{id, chunks, usage, timing}`) or `event: error` (data `{error: {code, message}, chunks}`)")
_OPENAI_SSE = "with `\"stream\": true`: OpenAI's chunk objects as Server-Sent Events, ending with `data: [DONE]`"


def _openai_call(summary: str, body: type[BaseModel], ok: dict[str, Any]) -> dict[str, Any]:
    return _op("openai", summary, {"200": ok}, errors=(404, 409, 422, 429, 502, 504), body=body, openai=True,
               params=_ROUTING_HEADERS[:5])


def _paths() -> dict[str, Any]:
    id_ = _path("id", "its id")
    tenant_q = _query("tenant", "admin keys: the job's tenant")
    pool = _path("name", "the pool's name")
    native_ok = {
        "200": {"description": "the result, or the stream with `Accept: text/event-stream`",
                "content": {"application/json": {"schema": _ref(InferenceResult)},
                            "text/event-stream": {"schema": {"type": "string", "description": _SSE}}},
                "headers": _RATELIMIT},
        "202": _json(_ref(Provisioning), "no live worker: queued as a job",
                     headers={"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"},
                              "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"},
                              **_RATELIMIT}),
    }
    def streamed(model: type[BaseModel]) -> dict[str, Any]:
        ok = _json(_ref(model), f"OpenAI's response object; {_OPENAI_SSE}")
        ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
        return ok

    return {
        "/": {"get": _op("discovery", "an empty object (a liveness probe for clients that poll /)",
                         {"200": _json(_OBJECT)}, keyed=False)},
        "/status": {"get": _op("discovery", "version information", {"200": _json(_ref(Version))}, keyed=False)},
        "/healthz": {"get": _op("health", "liveness", {"200": _json(_ref(Status))}, keyed=False)},
        "/readyz": {"get": _op("health", "readiness: NATS connected and a routing table loaded",
                               {"200": _json(_ref(Ready))}, errors=(503,), keyed=False)},
        "/health": {"get": _op("health", "status; the fleet for an admin key", {"200": _json(_ref(Health))},
                               errors=(401,), keyed=False)},
        OPENAPI_PATH: {"get": _op("discovery", "this document", {"200": _json(_OBJECT)}, keyed=False)},
        DOCS_PATH: {"get": _op("discovery", "this document, rendered", {"200": {
            "description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}},
            keyed=False)},
        "/v1/metadata": {"get": _op("openai", "capabilities and endpoints, for service discovery",
                                    {"200": _json(_ref(Metadata))}, openai=True)},
        "/v1/models": {"get": _op("openai", "the models the key may call, in OpenAI's list shape",
                                  {"200": _json(_ref(OpenAiModelList))})},
        "/v1/models/{id}": {"get": _op("openai", "one model the key may call", {"200": _json(_ref(OpenAiModel))},
                                       errors=(404,), openai=True, params=(id_,))},
        "/v1/chat/completions": {"post": _openai_call("chat completion (the model's `chat` operation)", ChatBody,
                                                      streamed(ChatCompletion))},
        "/v1/completions": {"post": _openai_call("completion (`generate`)", CompletionBody, streamed(Completion))},
        "/v1/embeddings": {"post": _openai_call("embeddings (`encode`)", EmbeddingBody, _json(_ref(Embeddings)))},
        "/v1/images/generations": {"post": _openai_call("images (`image`)", ImageBody, _json(_ref(Images)))},
        "/v1/audio/speech": {"post": _openai_call("speech (`speech`): the audio bytes", SpeechBody, {
            "description": "audio", "content": {"application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}})},
        "/v1/configs/models": {"get": _op("configs", "the models the key may call, with their routes",
                                          {"200": _json(_ref(ConfigModelList))})},
        "/v1/configs/models/{id}": {"get": _op("configs", "one model's route", {"200": _json(_ref(ConfigModel))},
                                               errors=(404,), params=(id_,))},
        "/v1/configs/bundles": {"get": _op("configs", "bundles and their models",
                                           {"200": _json(_ref(ConfigBundleList))})},
        "/v1/configs/bundles/{id}": {"get": _op("configs", "one bundle", {"200": _json(_ref(ConfigBundle))},
                                                errors=(404,), params=(id_,))},
        "/v1/configs/resolve": {"post": _op("configs", "dry run: where a request would go",
                                            {"200": _json(_ref(Resolved))}, errors=(404, 409), body=ResolveBody)},
        "/v1/jobs/{id}": {"get": _op("jobs", "a job's state and result", {"200": _json(_ref(Job))}, errors=(404,),
                                     params=(id_, tenant_q)),
                          "delete": _op("jobs", "remove a finished job's record and result",
                                        {"200": _json(_ref(JobDeleted))}, errors=(404, 409), params=(id_, tenant_q))},
        "/v1/jobs/{id}/cancel": {"post": _op("jobs", "cancel a job (a finished one stays as it was)",
                                             {"200": _json(_ref(JobCancelled))}, errors=(404,),
                                             params=(id_, tenant_q))},
        "/v1/jobs": {"get": _op("jobs", "the key's jobs, newest first", {"200": _json(_ref(JobList))},
                                params=(_query("state", "comma-separated states"), _query("model", "model id"),
                                        _query("kind", "item or plan"),
                                        _query("since", "created at or after (unix seconds)"),
                                        _query("until", "created before (unix seconds)"),
                                        _query("limit", "1 to 500 (50)"), _query("cursor", "next_cursor of a page"),
                                        tenant_q))},
        "/v1/capacity": {"get": _op("jobs", "slots per pool, machine profile and bundle",
                                    {"200": _json(_ref(Capacity))})},
        "/v1/deadletters": {"get": _op("deadletters", "items failed after their last attempt (admin keys)",
                                       {"200": _json(_ref(DeadLetterList))},
                                       params=(_query("model", "model id"), _query("after", "list after this id"),
                                               _query("limit", "1 to 200 (50)")))},
        "/v1/deadletters/{seq}": {"get": _op("deadletters", "one dead letter, with its items (admin keys)",
                                             {"200": _json(_ref(DeadLetter))}, errors=(404,),
                                             params=(_path("seq", "its id"),))},
        "/v1/deadletters/requeue": {"post": _op("deadletters", "re-queue dead letters as jobs (admin keys)",
                                                {"200": _json(_ref(Requeued))}, body=RequeueBody)},
        "/v1/usage": {"get": _op(
            "usage", "the usage ledger summed per group over a time range (keys with readUsage; docs/usage.md)",
            {"200": {"description": "JSON, or CSV (`format=csv` or `Accept: text/csv`): a header row, one row "
                                    "per group", "content": {"application/json": {"schema": _ref(UsageReport)},
                                                             "text/csv": {"schema": {"type": "string"}}}}},
            params=(_query("from", "RFC 3339 with an offset (required)"),
                    _query("to", "RFC 3339 with an offset, exclusive (now); at most 31 days after from"),
                    _query("group_by", "comma-separated: tenant, key, model, machine_profile, pool, bundle, op "
                                       "(tenant)"),
                    _query("tenant", "one tenant only"), _query("format", "json or csv"),
                    _header("Accept", "`text/csv`: CSV")))},
        "/v1/pools": {
            "post": _op("pools", "create a pool (idempotent for the same spec)",
                        {"201": _json(_ref(Pool), "created"), "200": _json(_ref(Pool), "exists with this spec")},
                        errors=(404, 409, 422), body=PoolBody),
            "get": _op("pools", "the pools the key may see", {"200": _json(_ref(PoolList))}),
        },
        "/v1/pools/{name}": {
            "get": _op("pools", "one pool", {"200": _json(_ref(Pool))}, errors=(404,), params=(pool,)),
            "delete": _op("pools", "delete a pool made through /v1/pools", {"200": _json(_ref(PoolDeleted))},
                          errors=(404, 409), params=(pool,)),
        },
        "/v1/pools/{name}/renew": {"post": _op("pools", "renew a pool's lease", {"200": _json(_ref(Pool))},
                                               errors=(404, 409, 410), params=(pool,))},
        "/v1/{op}/{model}": {"post": _op(
            "native", "run items on a model's operation", native_ok, errors=(404, 409, 422, 502, 504),
            body=InferenceBody,
            params=(_path("op", f"one of: {', '.join(sorted(OPERATIONS))}") | {
                "schema": {"type": "string", "enum": sorted(OPERATIONS)}},
                    _path("model", "model id, optionally `model:profile`"), *_ROUTING_HEADERS))},
        "/v1/plans": {"get": _op("plans", "the Planners the key may run", {"200": _json(_ref(PlannerList))})},
        "/v1/events": {"get": _op(
            "events", "live events as Server-Sent Events: the key's job.status, job.progress, capacity.update, "
                      "and usage.anomaly for keys with readUsage (docs/jobs.md, docs/usage.md)",
            {"200": {"description": "`id: <seq>`, `event: job.status | capacity.update | usage.anomaly | gap`, "
                                    "`data: {...}`; "
                                    "`event: job.progress` (no id: a queued job's queue_position and "
                                    "estimated_wait_s); `: keepalive` comments; a last `event: error` "
                                    "(no id, data `{error: {code, message}}`) when the key stops being valid",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            errors=(429,), params=(_header("Last-Event-ID", "resume right after this event id"),))},
        "/v1/plans/{planner}": {"post": _op(
            "plans", "run a Planner's DAG; the run is a job (docs/jobs.md)",
            {"200": _json(_ref(PlanResult), "with `Prefer: wait=N`: the run ended within N s"),
             "202": _json(_ref(PlanRun), "the run, as a job",
                          headers={"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}})},
            errors=(404, 409, 422, 502, 504), body=InferenceBody,
            params=(_path("planner", "the Planner's name"), *_ROUTING_HEADERS[:2], _ROUTING_HEADERS[3],
                    _header("Prefer", "`wait=N`: hold up to N seconds (at most 600) for the run to end")))},
        "/v1/ws": {"get": _op(
            "websocket", "WebSocket upgrade: many requests and their results on one connection (docs/api.md)",
            {"101": {"description": "Switching Protocols: the connection is a WebSocket from here on"}},
            params=(
                {"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},))},
    }


def _error_responses(defined: dict[str, Any]) -> dict[str, Any]:
    """One response per status, per shape, each naming the codes it may carry."""
    by_status: dict[int, list[str]] = {}
    for code, status in STATUS.items():
        by_status.setdefault(status, []).append(code)
    out: dict[str, Any] = {}
    for status, codes in sorted(by_status.items()):
        codes = sorted(codes)
        native = {"allOf": [_ref(Error), {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}]}
        openai = {"allOf": [_ref(OpenAiError), {"properties": {"error": {"properties": {
            "code": {"enum": codes}, "type": {"const": error_type(status)}}}}}]}
        out[f"E{status}"] = _json(native, f"codes: {', '.join(codes)}")
        out[f"OpenAiE{status}"] = _json(openai, f"OpenAI's error shape; codes: {', '.join(codes)}")
    return out


def build() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in _REQUESTS + _ANSWERS + _JOBS],
                                 ref_template="#/components/schemas/{model}")
    schemas = defs["$defs"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard gateway", "version": __version__,
            "description": "Every error is `{\"error\": {\"code\", \"message\"}}` (OpenAI's shape on the OpenAI "
                           "paths) with the status of its code (x-error-codes). Prometheus metrics are served on "
                           "the separate metrics port (GET /metrics), not by this listener.",
        },
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "responses": _error_responses(schemas),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key of the Gateway's spec.keys"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                           "description": "the same key in X-API-Key instead of Authorization; "
                                                          "never in the query string (400 api_key_in_url)"}},
        },
        "x-error-codes": dict(STATUS),
    }


@cache
def document() -> bytes:
    return orjson.dumps(build())


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=document(), content_type="application/json")


# Self-contained: servers often have no internet, so no CDN renderer. A few lines of plain JS list
# every operation with its parameters and schemas; the schemas are shown as JSON, resolved by name.
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Switchyard gateway API</title>
<style>body{font-family:sans-serif;max-width:70em;margin:auto}summary{cursor:pointer;padding:.3em}
code.m{display:inline-block;width:4.5em;font-weight:bold}pre{background:#f4f4f4;padding:.5em;overflow:auto}</style>
</head><body><h1>Switchyard gateway API</h1><p id="info">Loading <a href="/openapi.json">/openapi.json</a>…</p>
<div id="ops"></div><h2>Schemas</h2><div id="schemas"></div>
<script>
const el = (tag, text) => { const e = document.createElement(tag); if (text) e.textContent = text; return e; };
const block = (title, value) => { const d = el("details"); d.append(el("summary", title),
  el("pre", JSON.stringify(value, null, 2))); return d; };
fetch("/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("info").textContent = doc.info.title + " " + doc.info.version + ". " + doc.info.description;
  const ops = document.getElementById("ops");
  for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) {
    const d = el("details"), s = el("summary"), m = el("code", method.toUpperCase());
    m.className = "m"; s.append(m, el("code", path), " " + op.summary); d.append(s);
    if (op.parameters) d.append(block("parameters", op.parameters));
    if (op.requestBody) d.append(block("request body", op.requestBody.content));
    d.append(block("responses", op.responses)); ops.append(d);
  }
  const schemas = document.getElementById("schemas");
  for (const [name, s] of Object.entries(doc.components.schemas)) schemas.append(block(name, s));
  schemas.append(block("error responses", doc.components.responses));
});
</script></body></html>
"""


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_PAGE, content_type="text/html")


def setup(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, openapi_json)
    app.router.add_get(DOCS_PATH, docs)
