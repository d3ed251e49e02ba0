"""The gRPC listener with grpcurl, a client no one here wrote (built from its Go module, build-tool.sh grpcurl).

grpcurl knows nothing of our proto: it reads every type from server reflection.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from dataplane import until, worker
from test_grpc import ECHO_ONLY, _echo_lane, echo, grpc_gateway, words

from switchyard.natsserver import NatsServer
from switchyard.testing.gotools import GoToolBuildError, ensure_built

KEY = f"authorization: {ECHO_ONLY[0][1]}"


@pytest.fixture(scope="module")
def grpcurl() -> Path:
    try:
        return ensure_built("grpcurl") / "grpcurl"
    except (GoToolBuildError, FileNotFoundError) as exc:
        pytest.skip(f"grpcurl could not be built: {exc}")


async def run(grpcurl: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(str(grpcurl), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_health_check_and_reflection(nats_server: NatsServer, grpcurl: Path) -> None:
    async with grpc_gateway(nats_server.url) as g:
        async def serving() -> bool:
            rc, out = await run(grpcurl, "-plaintext", g.target, "grpc.health.v1.Health/Check")
            return rc == 0 and json.loads(out) == {"status": "SERVING"}

        for _ in range(50):
            if await serving():
                break
            await asyncio.sleep(0.1)
        assert await serving()
        rc, out = await run(grpcurl, "-plaintext", g.target, "list")
        assert rc == 0 and set(out.split()) >= {"switchyard.v1.Inference", "grpc.health.v1.Health"}
        rc, out = await run(grpcurl, "-plaintext", g.target, "describe", "switchyard.v1.Inference")
        assert rc == 0 and "rpc InferStream" in out and "rpc GetJob" in out


async def test_infer_getjob_and_stream_from_json(nats_server: NatsServer, grpcurl: Path) -> None:
    async with grpc_gateway(nats_server.url) as g:
        body = json.dumps({"op": "encode", "model": "test/echo", "items": [{"n": 1}], "request_id": "curl-1"})
        rc, out = await run(grpcurl, "-plaintext", "-H", KEY, "-d", body, g.target, "switchyard.v1.Inference/Infer")
        assert rc == 0, out
        accepted = json.loads(out)["accepted"]
        assert accepted["job_id"] == "curl-1" and accepted["status"] == "provisioning"
        async with worker(nats_server.url, echo):
            async def done() -> Any:
                rc, out = await run(grpcurl, "-plaintext", "-H", KEY, "-d", '{"job_id": "curl-1"}', g.target,
                                    "switchyard.v1.Inference/GetJob")
                assert rc == 0, out
                return json.loads(out)
            for _ in range(100):
                job = await done()
                if job["state"] == "succeeded":
                    break
                await asyncio.sleep(0.1)
            assert job["state"] == "succeeded" and job["result"]["items"] == [{"n": 1}]
        async with worker(nats_server.url, words):
            await g.gw.wait_for_workers(_echo_lane())
            body = json.dumps({"op": "generate", "model": "test/echo", "items": ["a b"]})
            rc, out = await run(grpcurl, "-plaintext", "-H", KEY, "-d", body, g.target,
                                "switchyard.v1.Inference/InferStream")
            assert rc == 0, out
            events = [json.loads(part) for part in out.replace("}\n{", "}\x00{").split("\x00")]
            assert [e.get("chunk", {}).get("payload") for e in events[:2]] == [{"i": 0, "text": "a"},
                                                                               {"i": 1, "text": "b"}]
            assert events[-1]["end"]["chunks"] == "2"  # uint64 is a JSON string in protobuf's mapping


async def test_errors_carry_the_switchyard_code(nats_server: NatsServer, grpcurl: Path) -> None:
    async with grpc_gateway(nats_server.url) as g:
        await until(lambda: g.gw.state.holder.table is not None, 5, "table loaded")
        body = '{"op": "encode", "model": "test/echo", "items": ["x"]}'
        rc, out = await run(grpcurl, "-plaintext", "-v", "-d", body, g.target, "switchyard.v1.Inference/Infer")
        assert rc != 0 and "Code: Unauthenticated" in out and "switchyard-error-code: unauthorized" in out
        rc, out = await run(grpcurl, "-plaintext", "-v", "-H", KEY, "-d", '{"job_id": "not-mine"}', g.target,
                            "switchyard.v1.Inference/GetJob")
        assert rc != 0 and "Code: NotFound" in out and "switchyard-error-code: unknown_job" in out
