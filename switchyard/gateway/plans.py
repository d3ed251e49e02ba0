"""POST /v1/plans/{planner} runs a Planner; GET /v1/plans lists those a key may run (planrun.py runs them).

A run answers 202 with its job at once (`Location: /v1/jobs/{id}`); with `Prefer: wait=N` the
request is held up to N seconds (at most MAX_HOLD_S) and answers the output step's result (200),
or the failed step's error, when the run ends within it. Every step is resolved when the run is
accepted, so an unknown model, a model the key may not use or a pinned pool without a worker
refuses the run before anything is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from aiohttp import web

from ..api.table import DEFAULT_COLD_START_S, KeyRoute, PlannerRoute
from ..errors import ApiError
from ..subjects import Lane, job_key
from ..tasks import cancel_all
from . import jobs
from .auth import authenticate_request, request_client_ip, tenant_of
from .hold import wait_preference
from .http import RID, json_response, read_json
from .inference import parse_body
from .planrun import PlanRuns, RunRecord, new_run, step_job_id
from .resolve import resolve
from .state import STATE, GatewayState, state_of
from .submit import NO_CAPACITY_RETRY_AFTER_S

MAX_HOLD_S = 600  # Prefer: wait on a plan run is capped here (each step has its own Upstream timeout)
STATS_WAIT_S = 2.0  # GET /v1/plans on a gateway just started waits this long for the run counts


def setup(app: web.Application) -> None:
    """Routes (before /v1/{op}/{model}, which would match them too) and the run sweep's lifetime."""
    st = app[STATE]
    runs = st.plan_runs = PlanRuns(st)
    jobs.run_steps_hook = run_steps  # GET /v1/jobs/{id} of a run shows its steps
    app.router.add_get("/v1/plans", list_plans)
    app.router.add_post("/v1/plans/{planner}", run_plan)

    async def sweep(_: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(runs.sweep_forever()), asyncio.create_task(runs.stats.watch_forever())]
        yield
        await cancel_all(tasks)  # a cancel swallowed by a NATS request must not hang the stop
        await runs.stop()

    app.cleanup_ctx.append(sweep)


def _runs(st: GatewayState) -> PlanRuns:
    runs = st.plan_runs
    if runs is None:
        raise ApiError("not_ready", "plan runs are not set up on this gateway", headers={"Retry-After": "1"})
    return runs  # type: ignore[no-any-return]


def may_run(key: KeyRoute | None, planner: PlannerRoute) -> bool:
    return key is None or all(key.allows_model(s.model.partition(":")[0]) and key.allows_operation(s.operation)
                              for s in planner.steps)


async def list_plans(request: web.Request) -> web.Response:
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    stats = _runs(st).stats
    if not stats.synced.is_set():  # counts not read from NATS yet: zeros would be a wrong answer
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stats.synced.wait(), STATS_WAIT_S)
        if not stats.synced.is_set():
            raise ApiError("not_ready", "the Planners' run counts are not loaded from NATS yet",
                           headers={"Retry-After": "1"})
    # Run counts (planstats.py): the key's own tenant's runs; every tenant's for an admin key.
    tenant = None if key is not None and key.can("readAllJobs") else tenant_of(key)
    return json_response({"planners": [
        {"name": p.name, "output": p.output,
         "steps": [{"name": s.name, "model": s.model, "operation": s.operation, "depends_on": list(s.depends_on)}
                   for s in p.steps],
         "runs": stats.of(p.name, tenant).view()}
        for name, p in sorted(table.planners.items()) if may_run(key, p)]})


async def run_plan(request: web.Request) -> web.Response:
    st = state_of(request)
    table = st.table()
    key = authenticate_request(request, table)
    name = request.match_info["planner"]
    planner = table.planners.get(name)
    if planner is None:
        raise ApiError("unknown_planner", f"no Planner {name!r} on gateway {table.gateway!r}")
    if not may_run(key, planner):
        raise ApiError("forbidden", f"API key {key.name if key else ''!r} may not use every model and operation "
                                    f"of Planner {name!r}")
    h = request.headers
    if "X-Bundle" in h:
        raise ApiError("bad_request", "X-Bundle does not apply to a plan run: its steps call different models, "
                                      "each on its own bundle")
    items, params = parse_body(await read_json(request, table.max_request_body_bytes))
    machine_profile, pool = h.get("X-Machine-Profile"), h.get("X-Pool")
    for step in planner.steps:  # every refusal before anything is recorded
        res = resolve(table, step.operation, step.model, machine_profile=machine_profile, pool=pool, key=key)
        st.check_pool(res.lane.pool)
        if res.pinned and st.registry.serving(res.lane) == 0:
            raise ApiError("no_capacity", f"pool {res.lane.pool!r} has no live worker for step {step.name!r} "
                                          f"({res.lane.machine_profile}/{res.lane.bundle})",
                           headers={"Retry-After": str(NO_CAPACITY_RETRY_AFTER_S)})
    # spec.policy: a run is one request whose items pass through every step (tokens limits count
    # generate/chat requests only); queued, it holds no concurrency slot, as a 202 job holds none.
    ticket = await st.policy.admit(table, op="plan", model=planner.name, items=items * len(planner.steps),
                                   params=params, key=key, tenant=tenant_of(key),
                                   client_ip=request_client_ip(request), request_id=request[RID])
    ticket.end(None)
    runs = _runs(st)
    run = new_run(planner, request[RID], tenant_of(key), key, items, params, machine_profile, pool)
    record, created = await runs.start(run, table.result_ttl_seconds)
    if not created and (record.kind != "plan" or record.op != planner.name):
        raise ApiError("duplicate_request", f"request id {run.id!r} already names another job; "
                                            "send a new X-Request-ID for a new run")
    wait = wait_preference(h.getall("Prefer", ()))
    applied = None
    if created and wait:
        held = min(wait, MAX_HOLD_S)
        applied = {"Preference-Applied": f"wait={held}"}
        ended = await runs.wait(run.key, held)
        if ended is not None:
            return await _ended(st, ended, applied)
    body = {"status": "running", "job_id": run.id, "planner": planner.name,
            "steps": await run_steps(st, run.key) or []}
    return json_response(body, status=202, headers={"Location": f"/v1/jobs/{run.id}", **(applied or {})})


async def _ended(st: GatewayState, run: RunRecord, applied: dict[str, str]) -> web.Response:
    """The held request's answer, from the run as its driver left it (no reads)."""
    if run.state != "succeeded":
        err = run.error or {"code": "cancelled", "message": "the run was cancelled"}
        raise ApiError(err["code"], err["message"], headers=applied)
    return json_response({"id": run.id, "planner": run.planner, "items": run.output_items,
                          "timing": {"compute_ms": round((run.ended_at - run.created_at) * 1000, 3)},
                          "steps": await steps_view(st, run)}, headers=applied)


async def run_steps(st: GatewayState, key: str) -> list[dict[str, Any]] | None:
    """Each step of the run with job key `key` (job_key(tenant, run id)): name, state, its job id,
    and while queued its ETA; None when there is no such run. GET /v1/jobs/{id} shows these for kind=plan."""
    found = await _runs(st).read(key)
    return None if found is None else await steps_view(st, found[0])


async def steps_view(st: GatewayState, run: RunRecord) -> list[dict[str, Any]]:
    """A step queued by the run is read from its job record (its live state, and the ETA while queued)."""
    table = st.holder.table
    out = []
    for s in run.steps:
        view: dict[str, Any] = {"name": s.name, "state": s.state, "job_id": step_job_id(run.id, s.name),
                                "model": s.model, "operation": s.operation, "depends_on": s.depends_on}
        if s.state == "queued":
            rec = await st.dispatcher.job(job_key(run.tenant, step_job_id(run.id, s.name)))
            if rec is not None:
                view["state"] = rec.state
                if rec.state == "queued":
                    route = table.models.get(rec.model) if table else None
                    view["estimated_wait_s"] = await st.eta.for_job(
                        Lane(rec.model, rec.bundle, rec.machine_profile, rec.pool),
                        route.cold_start_s if route else DEFAULT_COLD_START_S, rec.updated_at)
        if s.error is not None:
            view["error"] = {"code": s.error.get("code"), "message": s.error.get("message")}
        out.append(view)
    return out
