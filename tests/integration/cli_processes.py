"""Commands run the way a user runs them: the installed `switchyard` script, as processes.

Helpers to start a command in its own process group, stop it, and see a worker serve
(its heartbeat in the real `sy_workers` KV bucket).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import nats

WORKERS_BUCKET = "sy_workers"


def installed_script(name: str = "switchyard") -> str:
    """The console script pip installed next to this interpreter."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(f"no installed `{name}` script next to {sys.executable}")


def start(args: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """A process in its own group, its output in `log` (read on failure)."""
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signal the whole group; SIGKILL if it does not exit in time. Returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            proc.wait(10)
    return proc.returncode


async def heartbeats(nats_url: str) -> list[dict[str, Any]]:
    """Every heartbeat in the workers bucket now (empty until a worker made the bucket)."""
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        try:
            kv = await js.key_value(WORKERS_BUCKET)
            keys = await kv.keys()
        except Exception:  # noqa: BLE001 - no bucket or no keys yet: nats-py raises several kinds
            return []
        found: list[dict[str, Any]] = []
        for key in keys:
            try:
                entry = await kv.get(key)
            except Exception:  # noqa: BLE001 - the key expired or was deleted meanwhile
                continue
            if entry.value:
                found.append(msgpack.unpackb(entry.value))
        return found
    finally:
        await nc.close()


async def wait_for_heartbeat(nats_url: str, model: str, proc: subprocess.Popen[Any] | None = None,
                             log: Path | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """The first heartbeat of a worker serving `model`; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for beat in await heartbeats(nats_url):
            if model in beat.get("models", []):
                return beat
        if proc is not None and proc.poll() is not None:
            shown = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"worker exited with {proc.returncode} before serving {model}:\n{shown}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no heartbeat for {model} after {timeout}s")
        await asyncio.sleep(0.2)


async def ready(http: aiohttp.ClientSession, url: str, log: Path, timeout: float = 60.0) -> None:
    """Until the gateway at `url` answers /readyz 200; its log's tail when it does not in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(url + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.1)
