"""The jobs API over gRPC (respond_async, ListJobs, CancelJob, DeleteJob), tried as a hostile tenant.

Real nats-server, the production gateway (HTTP and gRPC listeners) and the worker runtime.
Tenants: echo-only and other (tests/integration/manifests/gateway.yaml), admin names either.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
from dataplane import ECHO, blocking_handler, until, worker
from test_grpc import ADMIN, ECHO_ONLY, OTHER, GrpcGateway, _plain, _value, grpc_gateway

from switchyard.gateway.grpc import inference_pb2 as pb
from switchyard.natsserver import NatsServer

FINAL = ("succeeded", "failed", "expired", "cancelled")


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def final(g: GrpcGateway, job_id: str, metadata: Any, timeout: float = 20) -> pb.Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await g.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata)
        if job.state in FINAL:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s: {job}")
        await asyncio.sleep(0.1)


async def ids(g: GrpcGateway, metadata: Any, **fields: Any) -> list[str]:
    return [j.id for j in (await g.stub.ListJobs(pb.ListJobsRequest(**fields), metadata=metadata)).jobs]


async def test_respond_async_with_a_live_worker_answers_a_job_the_worker_runs(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, echo):
        await g.gw.wait_for_workers(ECHO)
        resp = await g.infer(ECHO_ONLY, items=["later"], request_id="ra-1", respond_async=True)
        assert resp.WhichOneof("outcome") == "accepted", resp
        assert resp.accepted.job_id == "ra-1" and resp.accepted.status == "queued"
        assert resp.preference_applied == "respond-async"
        job = await final(g, "ra-1", ECHO_ONLY)
        assert job.state == "succeeded" and [_plain(v) for v in job.result.items] == ["later"]
        assert job.kind == "item" and job.op == "encode" and job.attempts == 1
        assert job.created_at > 0 and job.started_at >= job.created_at and job.deadline > job.created_at
        # The same job over HTTP: one record, whichever protocol made it.
        assert (await g.gw.call("GET", "/v1/jobs/ra-1", headers={"Authorization": ECHO_ONLY[0][1]})
                ).body["state"] == "succeeded"
        # With wait_seconds as well (Prefer: respond-async, wait=N): the result when it comes in time.
        held = await g.infer(ECHO_ONLY, items=["now"], request_id="ra-2", respond_async=True, wait_seconds=10)
        assert held.WhichOneof("outcome") == "result" and held.preference_applied == "wait=10"
        assert (await final(g, "ra-2", ECHO_ONLY)).state == "succeeded"  # a job all the same
        # A job does not stream: InferStream refuses the flag rather than ignore it, and queues nothing.
        code, details, trailers = await g.refused(g.stub.InferStream(
            pb.InferRequest(op="encode", model="test/echo", items=[_value("x")],
                            request_id="ra-3", respond_async=True), metadata=ECHO_ONLY).read())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and trailers["switchyard-error-code"] == "bad_request"
        assert "respond_async" in details
        assert "ra-3" not in await ids(g, ECHO_ONLY)


async def test_list_jobs_shows_the_keys_tenant_only_with_the_http_filters_and_cursor(nats_server: NatsServer) -> None:
    async with grpc_gateway(nats_server.url) as g:  # no worker: every job stays queued
        for i in range(3):
            await g.infer(ECHO_ONLY, items=[i], request_id=f"j-{i}")
            await asyncio.sleep(0.01)  # distinct creation times: "newest first" is well defined
        await g.infer(OTHER, request_id="j-0")  # the same id in another tenant: another job
        await g.infer(OTHER, request_id="o-1")
        assert await ids(g, ECHO_ONLY) == ["j-2", "j-1", "j-0"]
        assert await ids(g, OTHER) == ["o-1", "j-0"]
        mine = (await g.stub.ListJobs(pb.ListJobsRequest(), metadata=ECHO_ONLY)).jobs
        assert all(j.state == "queued" and j.model == "test/echo" and not j.HasField("queue_position")
                   for j in mine)

        page1 = await g.stub.ListJobs(pb.ListJobsRequest(limit=2), metadata=ECHO_ONLY)
        assert [j.id for j in page1.jobs] == ["j-2", "j-1"] and page1.next_cursor
        page2 = await g.stub.ListJobs(pb.ListJobsRequest(limit=2, cursor=page1.next_cursor), metadata=ECHO_ONLY)
        assert [j.id for j in page2.jobs] == ["j-0"] and page2.next_cursor == ""
        # Another tenant's cursor reads that tenant's jobs only: a cursor is a position, not a grant.
        assert await ids(g, OTHER, cursor=page1.next_cursor) == []

        assert await ids(g, ECHO_ONLY, state=["succeeded"]) == []
        assert await ids(g, ECHO_ONLY, state=["queued", "running"]) == ["j-2", "j-1", "j-0"]
        assert await ids(g, ECHO_ONLY, model="test/gpu") == []
        assert await ids(g, ECHO_ONLY, kind="plan") == [] and len(await ids(g, ECHO_ONLY, kind="item")) == 3
        assert await ids(g, ECHO_ONLY, since=9999999999) == []
        assert await ids(g, ECHO_ONLY, until=9999999999) == ["j-2", "j-1", "j-0"]
        assert await ids(g, ECHO_ONLY, since=0) == ["j-2", "j-1", "j-0"]  # set (optional), not left out

        # `tenant`: an admin's; from any other key it is refused, never silently narrowed.
        assert await ids(g, ADMIN, tenant="echo-only") == ["j-2", "j-1", "j-0"]
        assert await ids(g, ADMIN) == []
        code, _, trailers = await g.refused(g.stub.ListJobs(pb.ListJobsRequest(tenant="echo-only"), metadata=OTHER))
        assert code == grpc.StatusCode.PERMISSION_DENIED and trailers["switchyard-error-code"] == "forbidden"

        assert len(await ids(g, ECHO_ONLY, limit=500)) == 3  # the largest page
        for bad in ({"state": ["done"]}, {"limit": 501}, {"limit": 2**32 - 1}, {"kind": "batch"}, {"since": -1},
                    {"until": math.nan}, {"since": math.inf}, {"cursor": "zz"}, {"cursor": "x" * 600}):
            code, _, trailers = await g.refused(g.stub.ListJobs(pb.ListJobsRequest(**bad), metadata=ECHO_ONLY))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and trailers["switchyard-error-code"] == "bad_request", bad
        code, _, _ = await g.refused(g.stub.ListJobs(pb.ListJobsRequest(tenant="a.b"), metadata=ADMIN))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code, _, _ = await g.refused(g.stub.ListJobs(pb.ListJobsRequest(), metadata=()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Past the Gateway's message limit (maxRequestBodyBytes 4096 here), as for Infer.
        code, _, trailers = await g.refused(g.stub.ListJobs(pb.ListJobsRequest(model="m" * 4100), metadata=ECHO_ONLY))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and trailers["switchyard-error-code"] == "payload_too_large"


async def test_a_cancelled_queued_job_never_runs_and_another_tenant_cannot_touch_it(nats_server: NatsServer) -> None:
    ran: list[str] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        ran.append(ctx.request_id)
        return items

    async with grpc_gateway(nats_server.url) as g:
        calls = {"get": lambda m: g.stub.GetJob(pb.GetJobRequest(job_id="q-1"), metadata=m),
                 "cancel": lambda m: g.stub.CancelJob(pb.CancelJobRequest(job_id="q-1"), metadata=m),
                 "delete": lambda m: g.stub.DeleteJob(pb.DeleteJobRequest(job_id="q-1"), metadata=m)}
        before = {name: await g.refused(call(OTHER)) for name, call in calls.items()}  # q-1 does not exist yet
        assert all(code == grpc.StatusCode.NOT_FOUND and t["switchyard-error-code"] == "unknown_job"
                   for code, _, t in before.values())
        assert (await g.infer(ECHO_ONLY, request_id="q-1")).WhichOneof("outcome") == "accepted"
        # Another tenant gets exactly what it got before the job existed, for reading, cancelling and deleting;
        # naming the owner in `tenant` changes nothing for a key that is not an admin's.
        for name, call in calls.items():
            assert await g.refused(call(OTHER)) == before[name], name
        code, _, _ = await g.refused(g.stub.CancelJob(pb.CancelJobRequest(job_id="q-1", tenant="echo-only"),
                                                      metadata=OTHER))
        assert code == grpc.StatusCode.NOT_FOUND
        # An open job cannot be deleted: cancel it first.
        code, details, trailers = await g.refused(calls["delete"](ECHO_ONLY))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and trailers["switchyard-error-code"] == "job_not_finished"
        assert "queued" in details
        assert (await g.stub.GetJob(pb.GetJobRequest(job_id="q-1"), metadata=ECHO_ONLY)).state == "queued"

        out = await calls["cancel"](ECHO_ONLY)
        assert out.cancelled and out.job.state == "cancelled" and out.job.error.code == "cancelled"
        assert out.message == "the job will not run"
        assert (await g.infer(ECHO_ONLY, request_id="q-2")).WhichOneof("outcome") == "accepted"
        async with worker(nats_server.url, record):
            assert (await final(g, "q-2", ECHO_ONLY)).state == "succeeded"  # queued behind q-1 on the lane
            await until(lambda: g.gw.state.demand.by_lane.get(ECHO, 0) == 0, 10, "the lane is empty")
        assert ran == ["q-2"]  # q-1 was pulled and skipped, never run
        assert (await g.stub.GetJob(pb.GetJobRequest(job_id="q-1"), metadata=ECHO_ONLY)).state == "cancelled"

        again = await calls["cancel"](ECHO_ONLY)
        assert not again.cancelled and again.job.state == "cancelled" and "already ended" in again.message
        assert await g.refused(calls["delete"](OTHER)) == before["delete"]  # still not theirs, final or not
        gone = await calls["delete"](ECHO_ONLY)
        assert gone.job_id == "q-1" and gone.deleted
        code, _, _ = await g.refused(calls["get"](ECHO_ONLY))
        assert code == grpc.StatusCode.NOT_FOUND
        # An admin acts on another tenant's job by naming the tenant.
        admin = await g.stub.CancelJob(pb.CancelJobRequest(job_id="q-2", tenant="echo-only"), metadata=ADMIN)
        assert not admin.cancelled and admin.job.state == "succeeded"
        assert (await g.stub.DeleteJob(pb.DeleteJobRequest(job_id="q-2", tenant="echo-only"), metadata=ADMIN)).deleted
        for bad in ("", "a/b", "x" * 200):
            code, _, _ = await g.refused(g.stub.CancelJob(pb.CancelJobRequest(job_id=bad), metadata=ECHO_ONLY))
            assert code == grpc.StatusCode.NOT_FOUND, bad
        # Counted like HTTP requests, under the RPC's path.
        m = g.gw.state.metrics
        assert m.requests.labels("/switchyard.v1.Inference/CancelJob", "200", "")._value.get() == 3
        assert m.errors.labels("/switchyard.v1.Inference/CancelJob", "unknown_job")._value.get() == 6
        assert m.errors.labels("/switchyard.v1.Inference/DeleteJob", "job_not_finished")._value.get() == 1


async def test_cancelling_a_running_job_stops_its_handler_on_the_worker(nats_server: NatsServer) -> None:
    forever, started, stopped = blocking_handler()  # stopped: the cancel reached the handler on the worker

    async with grpc_gateway(nats_server.url) as g, worker(nats_server.url, forever) as w:
        await g.gw.wait_for_workers(ECHO)
        assert (await g.infer(ECHO_ONLY, request_id="run-1", respond_async=True)).accepted.status == "queued"
        await asyncio.wait_for(started.wait(), 10)
        assert (await g.stub.GetJob(pb.GetJobRequest(job_id="run-1"), metadata=ECHO_ONLY)).state == "running"
        code, _, _ = await g.refused(g.stub.CancelJob(pb.CancelJobRequest(job_id="run-1"), metadata=OTHER))
        assert code == grpc.StatusCode.NOT_FOUND and not stopped.is_set()
        out = await g.stub.CancelJob(pb.CancelJobRequest(job_id="run-1"), metadata=ECHO_ONLY)
        assert out.cancelled and "told to stop" in out.message
        await asyncio.wait_for(stopped.wait(), 10)
        await until(lambda: w.in_flight == 0, 10, "the worker let the item go")
        job = await final(g, "run-1", ECHO_ONLY)
        assert job.state == "cancelled" and job.attempts == 1
        assert [j.id for j in (await g.stub.ListJobs(pb.ListJobsRequest(state=["cancelled"]), metadata=ECHO_ONLY)
                               ).jobs] == ["run-1"]
