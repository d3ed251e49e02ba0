"""The OpenAI-compatible API with the official `openai` package, sync and async, against a real gateway,
a real nats-server and real worker processes running the model-free example handler.

The sync client blocks: it runs in a thread, so the gateway (on this test's event loop) keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
import subprocess
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from dataplane import (  # noqa: E402
    ADMIN,
    ECHO_ONLY,
    GatewayUnderTest,
    copy_manifests,
    gateway,
    job_final,
    kill,
    until,
    worker_process,
)

from switchyard.natsserver import NatsServer  # noqa: E402
from switchyard.subjects import Lane  # noqa: E402

MODEL = "demo/toy"
TOY = Lane(MODEL, "default", "cpu", "default")
HANDLER = "switchyard.worker.examples.modelfree:serve"
ADMIN_KEY = ADMIN["Authorization"].split()[1]
ECHO_ONLY_KEY = ECHO_ONLY["Authorization"].split()[1]
TOY_UPSTREAM = """\
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: toy}
spec:
  model: demo/toy
  operations: [chat, generate, encode, image, speech]
  profiles: [{name: short, params: {max_tokens: 2}}]
  machineProfiles: [cpu]
  timeoutSeconds: 20
  workers: {service: toy}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: demo-echo}
spec:
  model: demo/echo
  operations: [chat, generate]
  machineProfiles: [cpu]
  workers: {service: demo-echo}
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: demo-stream}
spec:
  model: demo/stream
  operations: [chat, generate]
  profiles: [{name: slow, params: {delay_s: 0.2}}]
  machineProfiles: [cpu]
  timeoutSeconds: 60
  workers: {service: demo-stream}
"""


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = copy_manifests(tmp_path / "manifests")
    (directory / "toy.yaml").write_text(TOY_UPSTREAM)
    return directory


def toy_worker(nats_url: str) -> subprocess.Popen[bytes]:
    return worker_process(nats_url, HANDLER, MODEL)


def sync_client(gw: GatewayUnderTest, key: str = ADMIN_KEY, **kw: Any) -> Any:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, **kw)


def async_client(gw: GatewayUnderTest, key: str = ADMIN_KEY, **kw: Any) -> Any:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=key, **kw)


@pytest.fixture
async def live(nats_server: NatsServer, manifests: Path) -> AsyncIterator[GatewayUnderTest]:
    """A gateway with one toy worker process live."""
    async with gateway(nats_server.url, manifests) as gw:
        proc = toy_worker(nats_server.url)
        try:
            await gw.wait_for_workers(TOY)
            yield gw
        finally:
            kill(proc)


def _png_size(raw: bytes) -> tuple[int, int]:
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


async def test_sync_client_every_endpoint(live: GatewayUnderTest) -> None:
    def run() -> dict[str, Any]:
        client = sync_client(live)
        out: dict[str, Any] = {"models": [m.id for m in client.models.list()]}
        out["chat"] = client.chat.completions.create(
            model=MODEL, n=2, messages=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "hello there world"}])
        out["short"] = client.chat.completions.create(model=f"{MODEL}:short",
                                                      messages=[{"role": "user", "content": "hello there world"}])
        out["completion"] = client.completions.create(model=MODEL, prompt=["a b c", "d"], max_tokens=2)
        out["emb_b64"] = client.embeddings.create(model=MODEL, input=["x", "y z"])  # the SDK asks for base64
        out["emb_float"] = client.embeddings.create(model=MODEL, input=["x", "y z"], encoding_format="float")
        out["emb_dims"] = client.embeddings.create(model=MODEL, input="x", dimensions=3, encoding_format="float")
        out["images"] = client.images.generate(model=MODEL, prompt="a cat", n=2, size="4x2",
                                               response_format="b64_json")
        raw = client.audio.speech.with_raw_response.create(model=MODEL, voice="alloy", input="hello",
                                                           response_format="wav")
        out["speech_type"], out["speech"] = raw.headers["content-type"], raw.content
        return out

    out = await asyncio.to_thread(run)
    assert {"test/echo", "test/gpu", "test/gpu:sparse", MODEL, f"{MODEL}:short"} <= set(out["models"])

    chat = out["chat"]
    assert [c.message.content for c in chat.choices] == ["hello there world"] * 2
    assert [c.index for c in chat.choices] == [0, 1] and chat.choices[0].finish_reason == "stop"
    assert chat.model == MODEL and chat.object == "chat.completion"
    # the handler counts words: 2 x (2 + 3) read, 2 x 3 written
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (10, 6, 16)
    short = out["short"].choices[0]  # the profile's params: max_tokens 2
    assert (short.message.content, short.finish_reason) == ("hello there", "length")

    comp = out["completion"]
    assert [(c.index, c.text, c.finish_reason) for c in comp.choices] == [(0, "a b", "length"), (1, "d", "stop")]
    assert comp.usage.completion_tokens == 3

    b64, flt = out["emb_b64"], out["emb_float"]
    assert [d.index for d in flt.data] == [0, 1] and len(flt.data[0].embedding) == 8
    assert math.isclose(sum(x * x for x in flt.data[1].embedding), 1.0, rel_tol=1e-6)
    for a, b in zip(b64.data, flt.data, strict=True):  # float32 on the wire: equal to float32 precision
        assert all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6)
                   for x, y in zip(a.embedding, b.embedding, strict=True))
    assert flt.usage.prompt_tokens == 3 and len(out["emb_dims"].data[0].embedding) == 3

    pngs = [base64.b64decode(d.b64_json) for d in out["images"].data]
    assert len(pngs) == 2 and all(_png_size(p) == (4, 2) for p in pngs)

    assert out["speech_type"] == "audio/wav"
    with wave.open(io.BytesIO(out["speech"])) as w:  # 50 ms per character of "hello", 16 kHz mono
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, 16_000, 4000)


async def test_async_client_and_its_exceptions(live: GatewayUnderTest) -> None:
    client = async_client(live, max_retries=0)
    chat = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "hi"
    emb = await client.embeddings.create(model=MODEL, input="hi")
    assert len(emb.data[0].embedding) == 8

    with pytest.raises(openai.AuthenticationError) as e401:
        await async_client(live, "wrong-key-0123456789abcdef", max_retries=0).models.list()
    assert e401.value.body["code"] == "unauthorized" and e401.value.body["type"] == "authentication_error"

    with pytest.raises(openai.PermissionDeniedError) as e403:  # this key may call test/echo only
        await async_client(live, ECHO_ONLY_KEY, max_retries=0).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e403.value.body["code"] == "forbidden"
    listed = await async_client(live, ECHO_ONLY_KEY).models.list()
    assert [m.id for m in listed.data] == ["test/echo"]
    one = await client.models.retrieve("test/gpu:sparse")
    assert (one.id, one.object, one.owned_by) == ("test/gpu:sparse", "model", "gpu")
    for name, key in (("test/gpu", ECHO_ONLY_KEY), ("test/gpu:nope", ADMIN_KEY), ("no/such", ADMIN_KEY)):
        with pytest.raises(openai.NotFoundError) as hidden:  # another key's model reads like none at all
            await async_client(live, key, max_retries=0).models.retrieve(name)
        assert hidden.value.body["code"] == "unknown_model" and hidden.value.body["type"] == "not_found_error"

    with pytest.raises(openai.NotFoundError) as e404:
        await client.chat.completions.create(model="nope/none", messages=[{"role": "user", "content": "hi"}])
    assert e404.value.body["code"] == "unknown_model"

    bad: list[tuple[dict[str, Any], str, str]] = [
        ({"n": "2"}, "n", "valid integer"),  # no "2" for 2
        ({"n": 100_000}, "n", "less than or equal to 128"),
        ({"extra_body": {"frobnicate": True}}, "frobnicate", "Unrecognized request argument"),
        ({"temperature": 7}, "temperature", "less than or equal to 2"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages", "role"),
        ({"messages": []}, "messages", "at least 1"),
    ]
    for kw, param, words in bad:
        args: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kw}
        with pytest.raises(openai.BadRequestError) as e400:
            await client.chat.completions.create(**args)
        assert e400.value.body["param"] == param and words in e400.value.body["message"], (kw, e400.value.body)
        assert e400.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as unsupported:  # test/echo has no chat operation
        await client.chat.completions.create(model="test/echo", messages=[{"role": "user", "content": "hi"}])
    assert unsupported.value.body["code"] == "unsupported_operation"

    with pytest.raises(openai.BadRequestError) as url:  # no image store to link to
        await client.images.generate(model=MODEL, prompt="x", response_format="url")
    assert url.value.body["param"] == "response_format"

    with pytest.raises(openai.APIStatusError) as e413:  # maxRequestBodyBytes: 4096 in the test Gateway
        await client.embeddings.create(model=MODEL, input="x" * 5000)
    assert e413.value.status_code == 413 and e413.value.body["code"] == "payload_too_large"

    with pytest.raises(openai.UnprocessableEntityError) as e422:  # the handler refuses mp3: a permanent error
        await client.audio.speech.create(model=MODEL, voice="alloy", input="hi", response_format="mp3")
    assert e422.value.body["code"] == "invalid_input"


async def test_cold_start_503_then_the_same_request_id_gets_the_result(nats_server: NatsServer,
                                                                          manifests: Path) -> None:
    async with gateway(nats_server.url, manifests) as gw:
        client = async_client(gw, max_retries=0)
        messages = [{"role": "user", "content": "queued while cold"}]
        with pytest.raises(openai.InternalServerError) as e503:
            await client.chat.completions.create(model=MODEL, messages=messages,
                                                 extra_headers={"X-Request-ID": "cold-1"})
        err = e503.value
        assert err.status_code == 503 and err.body["code"] == "worker_starting"
        assert int(err.response.headers["Retry-After"]) >= 1
        assert err.response.headers["Location"] == "/v1/jobs/cold-1"
        assert err.response.headers["X-Should-Retry"] == "true"  # a retry carries our id: it finds the job
        job = await gw.call("GET", "/v1/jobs/cold-1", headers=ADMIN)
        assert job.status == 200 and job.body["state"] == "queued"  # never lost

        with pytest.raises(openai.InternalServerError) as anon:  # no id of ours: a retry would be new work
            await client.embeddings.create(model=MODEL, input="x")
        assert anon.value.response.headers["X-Should-Retry"] == "false"

        proc = toy_worker(nats_server.url)
        try:
            await gw.wait_for_workers(TOY)
            final = await job_final(gw, "cold-1")
            assert final.body["state"] == "succeeded"
            again = await client.chat.completions.create(model=MODEL, messages=messages,
                                                         extra_headers={"X-Request-ID": "cold-1"})
            assert again.choices[0].message.content == "queued while cold"
            # Another tenant's same request id is its own job, never this one's result.
            other = async_client(gw, "other-key-0123456789abcdef", max_retries=0)
            theirs = await other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "mine"}],
                                                         extra_headers={"X-Request-ID": "cold-1"})
            assert theirs.choices[0].message.content == "mine"
        finally:
            kill(proc)


async def test_prefer_wait_holds_through_a_cold_start(nats_server: NatsServer, manifests: Path) -> None:
    async with gateway(nats_server.url, manifests) as gw:
        client = async_client(gw, max_retries=0, timeout=60)
        raw = asyncio.ensure_future(client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "held"}],
            extra_headers={"Prefer": "wait=20", "X-Request-ID": "held-1"}))

        async def streamed() -> str:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "held stream"}], stream=True,
                extra_headers={"Prefer": "wait=20"})
            return "".join([c.choices[0].delta.content or "" async for c in stream])

        held_stream = asyncio.ensure_future(streamed())
        await until(lambda: gw.state.holds.held(TOY) == 2, 10, "both requests are held")
        proc = toy_worker(nats_server.url)
        try:
            resp = await asyncio.wait_for(raw, 40)
            assert resp.headers["Preference-Applied"] == "wait=20"
            assert resp.parse().choices[0].message.content == "held"
            assert await asyncio.wait_for(held_stream, 40) == "held stream"
        finally:
            kill(proc)


async def test_discovery_and_the_error_shape(nats_server: NatsServer, manifests: Path) -> None:
    async with gateway(nats_server.url, manifests) as gw:
        root = await gw.call("GET", "/")
        assert (root.status, root.body) == (200, {})
        status = await gw.call("GET", "/status")
        assert status.status == 200 and status.body["version"] and status.body["name"] == "switchyard"
        meta = await gw.call("GET", "/v1/metadata", headers=ADMIN)
        paths = {e["path"]: e.get("operation") for e in meta.body["endpoints"]["openai"]}
        assert paths["/v1/chat/completions"] == "chat" and paths["/v1/audio/speech"] == "speech"
        for path, _ in paths.items():  # every announced endpoint is served (no 404)
            method = "GET" if path == "/v1/models" else "POST"
            r = await gw.call(method, path, headers=ADMIN, json={})
            assert r.status in (200, 400), (path, r.status)
        assert "image" in meta.body["capabilities"]["operations"]
        assert (await gw.call("GET", "/v1/metadata")).status == 401

        r = await gw.call("GET", "/v1/models")
        assert r.status == 401 and r.body == {"error": {
            "message": r.body["error"]["message"], "type": "authentication_error", "param": None,
            "code": "unauthorized"}}
        for body in (b"not json", b"[1, 2]", b'{"model": "demo/toy", "input": 5}'):
            r = await gw.call("POST", "/v1/embeddings", headers={**ADMIN, "Content-Type": "application/json"},
                              data=body)
            assert r.status == 400 and set(r.body["error"]) >= {"message", "type", "param", "code"}, body
        # errors the middleware answers before any handler runs take the OpenAI shape on these paths too
        r = await gw.call("GET", "/v1/chat/completions", headers=ADMIN)
        assert r.status == 405 and r.body["error"]["type"] == "invalid_request_error" and "param" in r.body["error"]
        r = await gw.call("POST", "/v1/embeddings", headers={**ADMIN, "X-Request-ID": "no spaces allowed"},
                          json={"model": MODEL, "input": "x"})
        assert r.status == 400 and r.body["error"]["code"] == "invalid_request_id" and "type" in r.body["error"]
        # the native API keeps its own shape
        r = await gw.call("POST", "/v1/encode/nope/none", headers=ADMIN, json={"items": [1]})
        assert r.status == 404 and set(r.body["error"]) == {"code", "message"}


async def test_the_gateways_default_hold_stands_in_for_prefer_wait(nats_server: NatsServer, manifests: Path) -> None:
    gw_yaml = manifests / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text().replace("  maxRequestBodyBytes: 4096\n",
                                                   "  maxRequestBodyBytes: 4096\n  openai: {defaultWaitSeconds: 20}\n"))
    async with gateway(nats_server.url, manifests) as gw:
        assert gw.state.table().openai_wait_s == 20
        client = async_client(gw, max_retries=0, timeout=60)
        held = asyncio.ensure_future(client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "no prefer header"}]))
        await until(lambda: gw.state.holds.held(TOY) == 1, 10, "the request is held by default")
        # Prefer: wait=0 opts out of the default: a 503 at once, the item queued all the same.
        with pytest.raises(openai.InternalServerError):
            await client.embeddings.create(model=MODEL, input="x", extra_headers={"Prefer": "wait=0"})
        proc = toy_worker(nats_server.url)
        try:
            resp = await asyncio.wait_for(held, 40)
            assert resp.headers["Preference-Applied"] == "wait=20"
            assert resp.parse().choices[0].message.content == "no prefer header"
        finally:
            kill(proc)


async def test_the_echo_handler_answers_chat_and_completions(nats_server: NatsServer, manifests: Path) -> None:
    """switchyard.worker.handlers:echo (what `switchyard dev` runs) speaks the OpenAI mapping's shapes too."""
    async with gateway(nats_server.url, manifests) as gw:
        proc = worker_process(nats_server.url, "switchyard.worker.handlers:echo", "demo/echo")
        try:
            await gw.wait_for_workers(Lane("demo/echo", "default", "cpu", "default"))
            client = async_client(gw, max_retries=0)
            chat = await client.chat.completions.create(model="demo/echo",
                                                        messages=[{"role": "user", "content": "ping"}])
            assert chat.choices[0].message.content == "ping" and chat.usage is None  # echo counts no tokens
            comp = await client.completions.create(model="demo/echo", prompt=["one", "two"])
            assert [c.text for c in comp.choices] == ["one", "two"]
            native = await gw.infer("demo/echo", op="generate", items=[{"text": "as is"}])
            assert native.body["items"] == [{"text": "as is"}]  # anything else still comes back as it came
        finally:
            kill(proc)


async def test_n_copies_past_one_nats_message_are_refused_before_packing(nats_server: NatsServer,
                                                                         manifests: Path) -> None:
    gw_yaml = manifests / "gateway.yaml"
    gw_yaml.write_text(gw_yaml.read_text().replace("maxRequestBodyBytes: 4096", "maxRequestBodyBytes: 65536"))
    async with gateway(nats_server.url, manifests) as gw:
        client = async_client(gw, max_retries=0)
        big = [{"role": "user", "content": "x" * 60_000}]  # fits the body cap; 128 copies pass 1 MB
        with pytest.raises(openai.APIStatusError) as e413:
            await client.chat.completions.create(model=MODEL, messages=big, n=128,
                                                 extra_headers={"X-Request-ID": "too-many"})
        assert e413.value.status_code == 413 and e413.value.body["param"] == "n"
        with pytest.raises(openai.APIStatusError) as comp:
            await client.completions.create(model=MODEL, prompt=["y" * 30_000, "z" * 30_000], n=20)
        assert comp.value.status_code == 413
        assert (await gw.call("GET", "/v1/jobs/too-many", headers=ADMIN)).status == 404  # nothing recorded
        # one copy of the same body is fine: it queues (no worker: a 503 that names the job)
        with pytest.raises(openai.InternalServerError) as queued:
            await client.chat.completions.create(model=MODEL, messages=big)
        assert queued.value.body["code"] == "worker_starting"


async def test_stream_true_answers_openai_server_sent_events(live: GatewayUnderTest) -> None:
    def run() -> tuple[list[Any], list[Any]]:
        client = sync_client(live)
        chat = list(client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello there world"}], n=2, stream=True,
            stream_options={"include_usage": True}))
        comp = list(client.completions.create(model=MODEL, prompt=["a b", "c"], stream=True))
        return chat, comp

    chat, comp = await asyncio.to_thread(run)
    assert all(c.object == "chat.completion.chunk" and c.id == chat[0].id for c in chat)
    text = {i: "".join(c.choices[0].delta.content or "" for c in chat if c.choices and c.choices[0].index == i)
            for i in (0, 1)}
    assert text == {0: "hello there world", 1: "hello there world"}
    finishes = {c.choices[0].index: c.choices[0].finish_reason
                for c in chat if c.choices and c.choices[0].finish_reason}
    assert finishes == {0: "stop", 1: "stop"}
    assert chat[-1].choices == [] and chat[-1].usage.total_tokens == 12  # include_usage: the last chunk
    assert all(c.usage is None for c in chat[:-1])
    assert {c.choices[0].index: c.choices[0].text for c in comp if c.choices[0].text} == {0: "a b", 1: "c"}

    client = async_client(live, max_retries=0)
    got = [c async for c in await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "async stream"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in got) == "async stream"
    assert got[0].choices[0].delta.role == "assistant"

    async with live.http.post(f"{live.url}/v1/chat/completions", headers=ADMIN,
                              json={"model": MODEL, "stream": True,
                                    "messages": [{"role": "user", "content": "raw"}]}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        raw = (await resp.read()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"

    curl = await asyncio.create_subprocess_exec(  # curl -N: no buffering, what people run against SSE
        "curl", "-N", "-sS", "--max-time", "30", f"{live.url}/v1/chat/completions",
        "-H", f"Authorization: {ADMIN['Authorization']}", "-H", "Content-Type: application/json",
        "-d", json.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "via curl"}]}),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await curl.communicate()
    assert curl.returncode == 0
    lines = [ln for ln in out.decode().split("\n") if ln]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(ln[6:])["choices"][0]["delta"].get("content", "") for ln in lines[:-1]]
    assert "".join(pieces) == "via curl"

    with pytest.raises(openai.BadRequestError) as opts:  # as OpenAI: options without a stream are refused
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                             stream_options={"include_usage": True})
    assert opts.value.body["param"] == "stream_options"


async def test_a_generator_handler_streams_piece_by_piece_and_a_client_that_leaves_stops_it(
        nats_server: NatsServer, manifests: Path) -> None:
    lane = Lane("demo/stream", "default", "cpu", "default")
    async with gateway(nats_server.url, manifests) as gw:
        proc = worker_process(nats_server.url, "switchyard.worker.handlers:tokens", "demo/stream")
        try:
            await gw.wait_for_workers(lane)
            client = async_client(gw, max_retries=0)
            chunks = [c async for c in await client.chat.completions.create(
                model="demo/stream", messages=[{"role": "user", "content": "one two three four"}], stream=True,
                stream_options={"include_usage": True})]
            pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
            assert pieces == ["one", " two", " three", " four"]  # one event per yielded chunk, in order
            assert chunks[-1].usage.prompt_tokens == 4 and chunks[-1].usage.completion_tokens == 4
            text = [c.choices[0].text async for c in await client.completions.create(
                model="demo/stream", prompt="a b c", stream=True)]
            assert "".join(text) == "a b c"
            # without stream: true the same handler's pieces come joined, one per choice
            whole = await client.chat.completions.create(
                model="demo/stream", n=2, messages=[{"role": "user", "content": "one two three"}])
            assert [c.message.content for c in whole.choices] == ["one two three"] * 2
            assert whole.usage.completion_tokens == 6
            comp = await client.completions.create(model="demo/stream", prompt=["a b", "c d e"])
            assert [c.text for c in comp.choices] == ["a b", "c d e"]

            # 100 words at 0.2 s each would take 20 s: leave after the first event.
            body = {"model": "demo/stream:slow", "stream": True,
                    "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(100))}]}
            resp = await gw.http.post(f"{gw.url}/v1/chat/completions", headers=ADMIN, json=body)
            assert resp.status == 200
            first = await resp.content.readuntil(b"\n\n")
            assert b'"role":"assistant"' in first
            await until(lambda: any(b.in_flight == 1 for b in gw.state.registry.live()), 5,
                        "the worker reports the stream in flight")
            resp.close()  # the client leaves
            await until(lambda: all(b.in_flight == 0 for b in gw.state.registry.live()), 8,
                        "the cancel reached the worker, which stopped generating (not 20 s later)")
        finally:
            kill(proc)


async def test_a_worker_killed_mid_stream_ends_it_with_an_error_event(nats_server: NatsServer,
                                                                      manifests: Path) -> None:
    lane = Lane("demo/stream", "default", "cpu", "default")
    async with gateway(nats_server.url, manifests) as gw:
        proc = worker_process(nats_server.url, "switchyard.worker.handlers:tokens", "demo/stream")
        try:
            await gw.wait_for_workers(lane)
            client = async_client(gw, max_retries=0, timeout=60)
            stream = await client.chat.completions.create(
                model="demo/stream:slow", stream=True,
                messages=[{"role": "user", "content": " ".join(f"w{i}" for i in range(100))}])
            got: list[str] = []
            with pytest.raises(openai.APIError) as lost:
                async for chunk in stream:
                    got.append(chunk.choices[0].delta.content or "")
                    if len(got) == 2:
                        kill(proc)  # SIGKILL: chunks were sent, they cannot be taken back
            assert got[:2] == ["w0", " w1"] and len(got) < 100
            assert "stopped after" in lost.value.message and lost.value.body["code"] == "worker_lost"
        finally:
            kill(proc)
