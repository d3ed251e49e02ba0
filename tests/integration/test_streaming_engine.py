"""The engine adapter (switchyard.worker.engine) against a real OpenAI-compatible server: LiteLLM's
proxy from PyPI with a mock response configured (no model, no network), not a stub of ours.

The proxy runs from its own virtualenv (its dependencies would clash with the project's), which
`ensure_litellm()` makes on first use under ~/.cache/switchyard/litellm-venv, like the Go tools
of tests/controlplane (a few minutes once; about 750 MB). 1.108.7: the newest whose `proxy`
extra resolves here.
"""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dataplane import ADMIN, copy_manifests, gateway, worker
from test_streaming import SSE, events

from switchyard.natsserver import free_port
from switchyard.subjects import Lane
from switchyard.worker.engine import OpenAIEngine

pytestmark = pytest.mark.asyncio
MOCK = "Streaming through the queue works"
KEY = "sk-" + secrets.token_hex(32)  # the proxy refuses to start without a strong master key
CHAT = Lane("test/chat", "default", "cpu", "default")
UPSTREAM = """
---
apiVersion: switchyard.dev/v1alpha1
kind: Upstream
metadata: {name: chat}
spec:
  model: test/chat
  operations: [chat, generate]
  machineProfiles: [cpu]
  timeoutSeconds: 30
  workers: {service: chat}
"""


LITELLM = "1.108.7"
VENV = Path.home() / ".cache" / "switchyard" / "litellm-venv"


def ensure_litellm() -> str:
    """The proxy's binary, installing the pinned LiteLLM into its own cached venv when missing."""
    stamp = VENV / f".installed-{LITELLM}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
        done = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM}"],
                              capture_output=True, text=True, timeout=1500)
        if done.returncode != 0:
            raise AssertionError(f"installing litellm[proxy]=={LITELLM} failed:\n{done.stderr[-3000:]}")
        stamp.touch()
    return str(VENV / "bin" / "litellm")


def _start(binary: str, d: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The proxy on a free port; another port when one is taken before it binds (a shared machine)."""
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "LITELLM_MASTER_KEY": KEY}
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen([binary, "--config", str(d / "config.yaml"), "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=d, env=env, stdout=subprocess.DEVNULL,
                                stderr=open(d / "litellm.log", "wb"),  # noqa: SIM115 - the child's, for its life
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2) as r:
                    if r.status == 200:
                        return proc, url
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        proc.kill()
        proc.wait()
    raise AssertionError(f"LiteLLM proxy did not start: {(d / 'litellm.log').read_text()[-2000:]}")


@pytest.fixture(scope="module")
def engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = ensure_litellm()
    d = tmp_path_factory.mktemp("litellm")
    (d / "config.yaml").write_text(
        "model_list:\n"
        "  - model_name: mock-gpt\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        "      api_key: sk-not-used\n"
        f"      mock_response: \"{MOCK}\"\n")
    proc, url = _start(binary, d)
    try:
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_chat_streams_from_the_engine_through_the_queue(nats_server, engine_url: str,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    config = copy_manifests(tmp_path / "config")
    with open(config / "upstreams.yaml", "a") as f:
        f.write(UPSTREAM)
    engine = OpenAIEngine(url=engine_url, model="mock-gpt", api_key=KEY)
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, engine, model="test/chat"):
        await gw.wait_for_workers(CHAT)
        body = {"items": [{"messages": [{"role": "user", "content": "hi"}]}], "params": {"max_tokens": 20}}
        async with gw.http.post(f"{gw.url}/v1/chat/test/chat", json=body, headers=SSE) as resp:
            assert resp.status == 200, await resp.text()
            got: list[tuple[str, Any]] = [ev async for ev in events(resp)]
        chunks = [d["payload"] for e, d in got if e == "chunk"]
        assert len(chunks) > 1  # streamed in pieces, not one answer
        assert "".join(c["delta"].get("content") or "" for c in chunks) == MOCK
        assert chunks[-1].get("finish_reason") == "stop"
        assert got[-1][0] == "done"
        # Not streamed: the same chunks, joined into the result's items.
        r = await gw.infer("test/chat", op="chat", items=body["items"])
        assert r.status == 200, r.body
        assert "".join(c["delta"].get("content") or "" for c in r.body["items"]) == MOCK


async def test_an_engine_refusal_is_invalid_input(nats_server, engine_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = copy_manifests(tmp_path / "config")
    with open(config / "upstreams.yaml", "a") as f:
        f.write(UPSTREAM)
    engine = OpenAIEngine(url=engine_url, model="no-such-model-at-the-engine", api_key=KEY)
    async with gateway(nats_server.url, config) as gw, worker(nats_server.url, engine, model="test/chat"):
        await gw.wait_for_workers(CHAT)
        r = await gw.call("POST", "/v1/chat/test/chat", headers=ADMIN,
                          json={"items": [{"messages": [{"role": "user", "content": "hi"}]}]})
        assert r.status == 422, r.body
        assert r.body["error"]["code"] == "invalid_input"
        assert "engine refused" in r.body["error"]["message"]
