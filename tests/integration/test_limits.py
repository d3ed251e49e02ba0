"""Bounded input: decoded body size, nesting depth, NATS max_payload, the resolve endpoint's body,
client disconnects and the work stream's limits. Real nats-server, real gateway, real workers."""

from __future__ import annotations

import asyncio
import logging
import resource
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from dataplane import ADMIN, ECHO, gateway, job_final, until, worker
from limits_manifests import manifests_with

from switchyard.jsondepth import MAX_JSON_DEPTH
from switchyard.natsserver import NatsServer
from switchyard.subjects import WORK_STREAM

ZEROS_MIB = 256


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


def bomb(wbits: int, mib: int = ZEROS_MIB) -> bytes:
    """A JSON-looking body of `mib` MiB of zeros, compressed (gzip: wbits=31, zlib deflate: 15) without
    ever holding the inflated body in memory."""
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [z.compress(b'{"items": ["')]
    block = b"0" * (1024 * 1024)
    for _ in range(mib):
        out.append(z.compress(block))
    out.append(z.compress(b'"]}'))
    out.append(z.flush())
    return b"".join(out)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def raw_request(url: str, head: str, body: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (a Content-Length that lies included); the status line and the body back."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        headers = b""
        while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n", b""):
            headers += line
        length = next(int(h.split(b":")[1]) for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length"))
        return int(status_line.split()[1]), await asyncio.wait_for(reader.readexactly(length), 30)
    finally:
        writer.close()


# -- 1. compressed bodies: the limit applies to the decoded size ----------------------------------------------


@pytest.mark.parametrize("encoding,wbits", [("gzip", 31), ("deflate", 15)])
async def test_compressed_body_over_the_decoded_limit_is_413_without_inflating_it(
        nats_server: NatsServer, tmp_path: Path, encoding: str, wbits: int) -> None:
    body = bomb(wbits)
    assert len(body) < 300 * 1024  # ~261 KB on the wire (under the 1 MiB limit), 256 MiB inflated
    config = manifests_with(tmp_path, gateway={"maxRequestBodyBytes": 1024 * 1024})
    async with gateway(nats_server.url, config) as gw:
        before = peak_rss_mib()
        r = await gw.call("POST", "/v1/encode/test/echo", data=body,
                          headers={**ADMIN, "Content-Type": "application/json", "Content-Encoding": encoding})
        assert r.status == 413, r.body
        assert r.body["error"]["code"] == "payload_too_large"
        assert "1048576 bytes" in r.body["error"]["message"]
        grown = peak_rss_mib() - before
        # Inflating the body whole would have taken at least 256 MiB more.
        assert grown < 64, f"peak RSS grew by {grown:.0f} MiB"
        info = await gw.state.dispatcher.js.stream_info(WORK_STREAM)
        assert info.state.messages == 0


async def test_chunked_gzip_body_over_the_decoded_limit_is_413(nats_server: NatsServer) -> None:
    body = bomb(31, mib=8)

    async def chunks() -> Any:
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    async with gateway(nats_server.url) as gw:
        r = await gw.call("POST", "/v1/encode/test/echo", data=chunks(),
                          headers={**ADMIN, "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status == 413 and r.body["error"]["code"] == "payload_too_large"


async def test_content_length_that_lies_about_the_decoded_size_is_413(nats_server: NatsServer) -> None:
    body = bomb(31)[:1000]  # 1000 bytes on the wire, under the 4096-byte limit; about 1 MB once inflated
    async with gateway(nats_server.url) as gw:
        status, raw = await raw_request(gw.url, (
            "POST /v1/encode/test/echo HTTP/1.1\nHost: gw\nAuthorization: " + ADMIN["Authorization"] + "\n"
            "Content-Type: application/json\nContent-Encoding: gzip\nContent-Length: 1000\n"), body)
        assert status == 413, raw
        assert b'"payload_too_large"' in raw


async def test_small_compressed_body_still_works(nats_server: NatsServer) -> None:
    body = zlib.compress(b'{"items": [{"text": "packed"}]}')
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        r = await gw.call("POST", "/v1/encode/test/echo", data=body,
                          headers={**ADMIN, "Content-Type": "application/json", "Content-Encoding": "deflate"})
        assert r.status == 200, r.body
        assert r.body["items"] == [{"text": "packed"}]


async def test_client_max_size_follows_the_gateway_limit(nats_server: NatsServer, tmp_path: Path) -> None:
    config = manifests_with(tmp_path, gateway={"maxRequestBodyBytes": 4096})
    async with gateway(nats_server.url, config) as gw:
        app = gw.running._runners[0].app
        assert app._client_max_size == 4096
        manifests_with(tmp_path, gateway={"maxRequestBodyBytes": 2048})  # rewrite in place: a reload
        await until(lambda: app._client_max_size == 2048, 10, "client_max_size follows the reloaded table")


# -- 3. nesting depth: one limit for decoding and encoding --------------------------------------------------


def nested(depth: int) -> bytes:
    """A body {"items": [ [[...]] ]} whose arrays and objects nest `depth` levels in all."""
    inner = depth - 2  # the body object and the items array are two levels
    return b'{"items": [' + b"[" * inner + b"]" * inner + b"]}"


async def test_nesting_at_the_limit_runs_and_deeper_is_400_before_queueing(nats_server: NatsServer) -> None:
    ran: list[str] = []

    def record(items: list[Any], ctx: Any) -> list[Any]:
        ran.append(ctx.request_id)
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, record):
        await gw.wait_for_workers(ECHO)
        post = {"headers": {**ADMIN, "Content-Type": "application/json"}}
        ok = await gw.call("POST", "/v1/encode/test/echo", data=nested(MAX_JSON_DEPTH),
                           headers={**post["headers"], "X-Request-ID": "deep-ok"})
        assert ok.status == 200, ok.body
        deep: Any = ok.body["items"]
        levels = 1
        while isinstance(deep, list) and deep:
            deep, levels = deep[0], levels + 1
        assert levels == MAX_JSON_DEPTH - 1  # the items array and everything in it came back whole
        for depth in (MAX_JSON_DEPTH + 1, 1000):
            r = await gw.call("POST", "/v1/encode/test/echo", data=nested(depth),
                              headers={**post["headers"], "X-Request-ID": f"deep-{depth}"})
            assert r.status == 400, (depth, r.body)
            assert r.body["error"]["code"] == "too_deep"
            assert str(MAX_JSON_DEPTH) in r.body["error"]["message"]
        await asyncio.sleep(0.3)
    assert ran == ["deep-ok"]  # the refused bodies never reached a worker


async def test_nesting_at_the_limit_survives_the_202_job_path(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.call("POST", "/v1/encode/test/echo", data=nested(MAX_JSON_DEPTH),
                          headers={**ADMIN, "Content-Type": "application/json", "X-Request-ID": "deep-job"})
        assert r.status == 202, r.body
        async with worker(nats_server.url, echo):
            done = await job_final(gw, "deep-job")
        assert done.body["state"] == "succeeded", done.body


# -- 4. NATS max_payload -------------------------------------------------------------------------------------


async def test_body_that_packs_past_nats_max_payload_is_413_with_the_real_limit(
        nats_server: NatsServer, tmp_path: Path) -> None:
    # 4 MiB body limit, NATS configured at 8 MiB in the spec; the real server runs with its 1 MB default.
    config = manifests_with(tmp_path, gateway={"maxRequestBodyBytes": 4 * 1024 * 1024,
                                               "nats": {"maxPayloadBytes": 8 * 1024 * 1024}})
    floats = b"[" + b",".join([b"1.0"] * 200_000) + b"]"  # ~800 KB of JSON, 1.8 MB as msgpack float64
    body = b'{"items": [' + floats + b"]}"
    assert len(body) < 1024 * 1024
    async with gateway(nats_server.url, config) as gw:
        for with_worker in (False, True):
            if with_worker:
                async with worker(nats_server.url, echo):
                    await gw.wait_for_workers(ECHO)
                    r = await gw.call("POST", "/v1/encode/test/echo", data=body,
                                      headers={**ADMIN, "Content-Type": "application/json"})
            else:
                r = await gw.call("POST", "/v1/encode/test/echo", data=body,
                                  headers={**ADMIN, "Content-Type": "application/json",
                                           "X-Request-ID": "too-big-202"})
                # Refused before a job record was made (not made, then deleted).
                jobs = await gw.state.dispatcher.js.stream_info("KV_sy_jobs")
                assert jobs.state.last_seq == 0
            assert r.status == 413, r.body
            assert r.body["error"]["code"] == "payload_too_large"
            assert "1048576" in r.body["error"]["message"]
        info = await gw.state.dispatcher.js.stream_info(WORK_STREAM)
        assert info.state.messages == 0
        # Under the limit still works.
        small = b'{"items": [[' + b",".join([b"1.0"] * 1000) + b"]]}"
        async with worker(nats_server.url, echo):
            await gw.wait_for_workers(ECHO)
            r = await gw.call("POST", "/v1/encode/test/echo", data=small,
                              headers={**ADMIN, "Content-Type": "application/json"})
            assert r.status == 200, r.body


async def test_spec_max_payload_smaller_than_the_server_is_the_limit(nats_server: NatsServer, tmp_path: Path) -> None:
    config = manifests_with(tmp_path, gateway={"maxRequestBodyBytes": 65536, "nats": {"maxPayloadBytes": 65536}})
    body = b'{"items": [[' + b",".join([b"1.0"] * 10_000) + b"]]}"  # ~40 KB of JSON, ~90 KB packed
    async with gateway(nats_server.url, config) as gw:
        r = await gw.call("POST", "/v1/encode/test/echo", data=body,
                          headers={**ADMIN, "Content-Type": "application/json"})
        assert r.status == 413, r.body
        assert "65536" in r.body["error"]["message"]


# -- 5. POST /v1/configs/resolve validates its body --------------------------------------------------------


@pytest.mark.parametrize("field", ["model", "op", "machine_profile", "pool", "bundle"])
@pytest.mark.parametrize("value", [5, ["test/echo"], {"a": 1}, True])
async def test_resolve_with_a_non_string_field_is_400(nats_server: NatsServer, field: str, value: Any) -> None:
    async with gateway(nats_server.url) as gw:
        body: dict[str, Any] = {"model": "test/echo", field: value}
        r = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN, json=body)
        assert r.status == 400, r.body
        assert r.body["error"]["code"] == "bad_request"
        assert field in r.body["error"]["message"] and "string" in r.body["error"]["message"]


async def test_resolve_still_resolves(nats_server: NatsServer) -> None:
    async with gateway(nats_server.url) as gw:
        r = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN,
                          json={"model": "test/echo", "op": "encode", "machine_profile": "cpu", "pool": None})
        assert r.status == 200, r.body
        assert r.body["outcome"] == "provision_202"
        r = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN, json={"model": "test/echo", "nope": 1})
        assert r.status == 400 and "nope" in r.body["error"]["message"]
        r = await gw.call("POST", "/v1/configs/resolve", headers=ADMIN, json=["test/echo"])
        assert r.status == 400 and r.body["error"]["code"] == "bad_request"


# -- 7. client disconnects ----------------------------------------------------------------------------------


async def test_client_disconnect_is_one_info_line_and_a_metric(nats_server: NatsServer,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    async def slow(items: list[Any], ctx: Any) -> list[Any]:
        await asyncio.sleep(1.5)
        done.append(ctx.request_id)
        return items

    caplog.set_level(logging.INFO, logger="switchyard")
    async with gateway(nats_server.url) as gw, worker(nats_server.url, slow):
        await gw.wait_for_workers(ECHO)
        async with aiohttp.ClientSession() as s:
            call = asyncio.create_task(s.post(gw.url + "/v1/encode/test/echo", json={"items": [1]},
                                              headers={**ADMIN, "X-Request-ID": "gone-1"}))
            await asyncio.sleep(0.5)
            call.cancel()  # the client goes away while the gateway waits for the worker
            with pytest.raises(asyncio.CancelledError):
                await call
        await until(lambda: "gone-1" in done, 15, "the item ran to its end")
        await until(lambda: gw.state.demand.by_lane.get(ECHO, 0) == 0, 15, "the item left the stream")
        # And one that goes away halfway through sending its body.
        host, port = gw.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(("POST /v1/encode/test/echo HTTP/1.1\r\nHost: gw\r\nX-Request-ID: gone-2\r\n"
                      f"Authorization: {ADMIN['Authorization']}\r\nContent-Length: 100\r\n\r\n"
                      '{"items": [').encode())
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

        def logged() -> set[str]:
            return {getattr(r, "request_id", "") for r in caplog.records if r.getMessage() == "client disconnected"}

        await until(lambda: logged() == {"gone-1", "gone-2"}, 10, "both disconnects logged")
        assert "switchyard_gateway_client_disconnects_total 2.0" in await gw.metrics()
    unhandled = [r for r in caplog.records if "unhandled" in r.getMessage().lower() or r.exc_info]
    assert not unhandled, [r.getMessage() for r in unhandled]
    lines = [r for r in caplog.records if r.getMessage() == "client disconnected"]
    assert len(lines) == 2 and all(r.levelno == logging.INFO for r in lines)


# -- 8. work stream limits ----------------------------------------------------------------------------------


async def test_full_lane_answers_503_queue_full_and_keeps_what_it_accepted(
        nats_server: NatsServer, tmp_path: Path) -> None:
    config = manifests_with(tmp_path, gateway={"queue": {"maxMessagesPerLane": 3}})
    async with gateway(nats_server.url, config) as gw:
        for i in range(3):
            r = await gw.infer(headers={"X-Request-ID": f"full-{i}"}, items=[i])
            assert r.status == 202, r.body
        r = await gw.infer(headers={"X-Request-ID": "full-3"}, items=[3])
        assert r.status == 503, r.body
        assert r.body["error"]["code"] == "queue_full"
        assert int(r.headers["Retry-After"]) > 0
        assert (await gw.call("GET", "/v1/jobs/full-3", headers=ADMIN)).status == 404
        async with worker(nats_server.url, echo):
            for i in range(3):
                done = await job_final(gw, f"full-{i}")
                assert done.body["state"] == "succeeded" and done.body["result"]["items"] == [i]


async def test_stream_limits_come_from_the_gateway_and_follow_reloads(
        nats_server: NatsServer, tmp_path: Path) -> None:
    config = manifests_with(tmp_path, gateway={"queue": {"maxMessagesPerLane": 7, "maxBytes": 8 * 1024 * 1024},
                                               "jobs": {"resultTtlSeconds": 600}})
    async with gateway(nats_server.url, config) as gw:
        js = gw.state.dispatcher.js
        cfg = (await js.stream_info(WORK_STREAM)).config
        assert (cfg.max_msgs_per_subject, cfg.max_bytes) == (7, 8 * 1024 * 1024)
        assert cfg.discard == "new" and cfg.discard_new_per_subject
        assert 600 < cfg.max_age <= 600 + 3600
        # A worker starting later creates nothing and changes nothing.
        async with worker(nats_server.url, echo):
            await gw.wait_for_workers(ECHO)
            cfg = (await js.stream_info(WORK_STREAM)).config
            assert (cfg.max_msgs_per_subject, cfg.max_bytes) == (7, 8 * 1024 * 1024)
        manifests_with(tmp_path, gateway={"queue": {"maxMessagesPerLane": 9}})  # rewrite in place: a reload

        async def applied() -> bool:
            return (await js.stream_info(WORK_STREAM)).config.max_msgs_per_subject == 9

        for _ in range(100):
            if await applied():
                break
            await asyncio.sleep(0.1)
        assert await applied()


async def test_worker_alone_creates_a_missing_stream(nats_server: NatsServer, nats_client: Any) -> None:
    async with worker(nats_server.url, echo):
        js = nats_client.jetstream()
        cfg = (await js.stream_info(WORK_STREAM)).config
        assert cfg.discard == "new" and cfg.discard_new_per_subject


@pytest.mark.parametrize("encoding", ["br", "zstd"])
async def test_an_encoding_the_gateway_cannot_decode_is_400_in_our_format(nats_server: NatsServer,
                                                                           encoding: str) -> None:
    async with gateway(nats_server.url) as gw:
        status, raw = await raw_request(gw.url, (
            "POST /v1/encode/test/echo HTTP/1.1\nHost: gw\nAuthorization: " + ADMIN["Authorization"] + "\n"
            f"Content-Type: application/json\nContent-Encoding: {encoding}\nContent-Length: 8\n"), b"\x00" * 8)
        assert status == 400, raw
        assert b'"bad_request"' in raw
