"""The docs' commands for this machine, run as written against real processes.

Which commands there are, and the convention that finds them, is in
switchyard/testing/doccommands.py; tests/unit/test_docs_listed.py fails on one no test runs.

How they run:
- Every command runs through `bash -c` from the repository root, with this test's venv
  first on PATH (as after `make install` and activating .venv) and SWITCHYARD_NATS_URL set
  to a real nats-server this module starts (the NATS the docs assume is running).
- The docs' fixed local ports (NATS 4222, gateway 8080, metrics 9090, gRPC 50051) are moved to free
  ports, the same in every command, because other tests share this host. Nothing else
  in a command is changed.
- `switchyard gateway` and `switchyard worker` / `python -m switchyard.worker` start as
  background processes and must come up: the gateway's /readyz answers 200, a worker's
  heartbeat appears in the `sy_workers` bucket. Then every `curl` line runs against them
  and must answer JSON without an error, and so must every `grpcurl` line (against the
  gateway's gRPC port), run with the grpcurl build-tool.sh builds first on PATH.
- A fence with `pip install` lines is a fresh environment: the test makes a new venv,
  runs the fence's commands in order in it, from a copy of the repository.
- `make demo` runs as the long-running process it is; each curl line it prints is run,
  then it gets SIGINT. (make's install step is marked done with STAMP: this test already
  runs inside the installed venv and must not reinstall it under other tests.)
- Python snippets (all but the fragments listed in SKIPPED_SNIPPETS) run as scripts against
  the same gateway. One that waits for capacity on a cold lane gets an echo worker on that
  lane once its job is queued (pending demand in the gateway's metrics), as KEDA would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cli_processes import stop, wait_for_heartbeat

from switchyard.gateway.joblist import STATES
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import doccommands as dc
from switchyard.testing.gotools import GoToolBuildError, ensure_built

ROOT = dc.ROOT
ALL = dc.commands()
INSTALL_FENCES = sorted({(c.file, c.fence) for c in ALL if dc.kind(c) == "pip"})


def _in_install_fence(cmd: dc.Command) -> bool:
    return (cmd.file, cmd.fence) in INSTALL_FENCES


def _unique(cmds: list[dc.Command]) -> list[dc.Command]:
    seen: dict[str, dc.Command] = {}
    for c in cmds:
        seen.setdefault(c.key, c)
    return list(seen.values())


SERVERS = _unique([c for c in ALL if dc.kind(c) in ("gateway", "worker") and not _in_install_fence(c)])
CURLS = _unique([c for c in ALL if dc.kind(c) == "curl" and not _in_install_fence(c)])
GRPCURLS = _unique([c for c in ALL if dc.kind(c) == "grpcurl"])
DEMOS = _unique([c for c in ALL if dc.kind(c) == "demo"])


def _id(cmd: dc.Command) -> str:
    return f"{cmd.where}"


@dataclass
class Stack:
    nats: NatsServer
    ports: dict[str, int]
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def _env(bin_dir: Path, nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "SWITCHYARD_NATS_URL": nats_url,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _bash(text: str, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(["bash", "-c", text], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def _ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"exited with {proc.returncode} before {url} answered 200")
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 within {timeout}s")
            await asyncio.sleep(0.2)


async def _come_up(cmd: dc.Command, proc: subprocess.Popen[bytes], log: Path, ports: dict[str, int],
                   nats_url: str) -> None:
    words = dc.with_ports(cmd.key, ports).split()
    if dc.kind(cmd) == "gateway":
        port = (dc.option(words, "--port") or ["8080"])[-1]
        await _ready(f"http://127.0.0.1:{port}/readyz", proc)
    else:
        for model in dc.option(words, "--model"):
            await wait_for_heartbeat(nats_url, model, proc, log, timeout=90)


def _start_servers(cmds: list[dc.Command], stack: Stack, env: dict[str, str], cwd: Path) -> None:
    """Start each in doc order and wait for it; a failure is recorded for that command's test."""
    for cmd in cmds:
        log = stack.logs / f"{re.sub(r'[^A-Za-z0-9]+', '_', cmd.where)}.log"
        proc = _bash(dc.with_ports(cmd.text, stack.ports), env, cwd, log)
        stack.procs[cmd.key] = proc
        try:
            asyncio.run(_come_up(cmd, proc, log, stack.ports, stack.nats.url))
        except AssertionError as exc:
            stack.problems[cmd.key] = f"{exc}\n{_tail(log)}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nats = NatsServer().start()
    ports = {"nats": nats.port, "http": free_port(), "metrics": free_port(), "grpc": free_port()}
    st = Stack(nats, ports, _env(Path(sys.executable).parent, nats.url), tmp_path_factory.mktemp("doc-logs"))
    try:
        _start_servers(SERVERS, st, st.env, ROOT)
        yield st
    finally:
        for proc in st.procs.values():
            stop(proc)
        nats.close()


@pytest.mark.parametrize("cmd", SERVERS, ids=_id)
def test_server_command_comes_up(stack: Stack, cmd: dc.Command) -> None:
    if cmd.key in stack.problems:
        pytest.fail(f"{cmd.where}: {cmd.text}\n{stack.problems[cmd.key]}", pytrace=False)
    assert stack.procs[cmd.key].poll() is None, f"{cmd.where} exited"


def _run_curl(text: str, env: dict[str, str], where: str) -> Any:
    done = subprocess.run(["bash", "-c", text], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    try:
        body = json.loads(done.stdout)
    except ValueError as exc:
        raise AssertionError(f"{where}: not JSON: {done.stdout[:500]!r}") from exc
    assert not (isinstance(body, dict) and "error" in body), f"{where}: {body}"
    return body


@pytest.mark.parametrize("cmd", CURLS, ids=_id)
def test_curl_command(stack: Stack, cmd: dc.Command) -> None:
    _run_curl(dc.with_ports(cmd.text, stack.ports), stack.env, cmd.where)


def _json_values(text: str) -> list[Any]:
    """Every JSON value in grpcurl's output: one per message, a stream's one after another."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while rest := text[at:].lstrip():
        value, at = decoder.raw_decode(text, len(text) - len(rest))
        values.append(value)
    return values


@pytest.mark.parametrize("cmd", GRPCURLS, ids=_id)
def test_grpcurl_command(stack: Stack, cmd: dc.Command) -> None:
    try:
        tool_dir = ensure_built("grpcurl")
    except GoToolBuildError as exc:
        pytest.skip(f"grpcurl could not be built: {exc}")
    env = {**stack.env, "PATH": f"{tool_dir}{os.pathsep}{stack.env['PATH']}"}
    done = subprocess.run(["bash", "-c", dc.with_ports(cmd.text, stack.ports)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd.where}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    if cmd.words[-1:] == ["list"]:  # services, one a line: ours among them
        assert "switchyard.v1.Inference" in done.stdout.split(), done.stdout
        return
    values = _json_values(done.stdout)
    assert values and all(isinstance(v, dict) for v in values), f"{cmd.where}: {done.stdout[:500]!r}"
    method = cmd.words[-1]
    if method.endswith("Health/Check"):
        assert values == [{"status": "SERVING"}]
    elif method.endswith("/Infer") and '"respond_async": true' in cmd.text:  # a job, the worker up or not
        assert [(set(v) & {"result", "accepted"}, v.get("accepted", {}).get("status")) for v in values] == [
            ({"accepted"}, "queued")], values
    elif method.endswith("/Infer"):
        assert [set(v) & {"result", "accepted"} for v in values] == [{"result"}], values  # the worker is up
    elif method.endswith("/ListJobs"):  # one page; {} when the key has no jobs (proto3 JSON drops empty fields)
        assert len(values) == 1 and set(values[0]) <= {"jobs", "nextCursor"}, values
        asked = json.loads(cmd.words[cmd.words.index("-d") + 1]).get("state") or STATES
        assert all(j["state"] in asked for j in values[0].get("jobs", [])), values  # the filter held
    elif method.endswith("/InferStream"):
        assert all("chunk" in v for v in values[:-1]) and "end" in values[-1], values


def _tree_copy(dest: Path) -> Path:
    """The checkout as a reader has it: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.parametrize("fence", INSTALL_FENCES, ids=lambda f: f"{f[0]}-fence{f[1]}")
def test_install_fence_in_a_fresh_venv(fence: tuple[str, int], tmp_path: Path) -> None:
    cmds = [c for c in ALL if (c.file, c.fence) == fence]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    nats = NatsServer().start()
    ports = {"nats": nats.port, "http": free_port(), "metrics": free_port(), "grpc": free_port()}
    st = Stack(nats, ports, _env(venv / "bin", nats.url), tmp_path)
    tree = _tree_copy(tmp_path / "checkout")
    try:
        for cmd in cmds:
            kind = dc.kind(cmd)
            if kind in ("gateway", "worker"):
                _start_servers([cmd], st, st.env, tree)
                assert cmd.key not in st.problems, f"{cmd.where}: {cmd.text}\n{st.problems[cmd.key]}"
            elif kind == "curl":
                _run_curl(dc.with_ports(cmd.text, ports), st.env, cmd.where)
            elif kind == "pip":
                done = subprocess.run(["bash", "-c", cmd.text], env=st.env, cwd=tree, capture_output=True,
                                      text=True, timeout=600)
                assert done.returncode == 0, f"{cmd.where}: {cmd.text}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            else:
                pytest.fail(f"{cmd.where}: no way to run a {kind} command inside an install fence: {cmd.text}")
    finally:
        for proc in st.procs.values():
            stop(proc)
        nats.close()


def _printed_curls(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """The curl lines `switchyard dev` prints, read until it says it is serving."""
    found: list[str] = []
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    buffered = ""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()  # None or b"" when nothing is waiting (non-blocking)
        if chunk:
            buffered += chunk.decode(errors="replace")
            *lines, buffered = buffered.split("\n")
            for line in lines:
                seen.append(line)
                if line.strip().startswith("curl "):
                    found.append(line.split("      #")[0].strip())
                if "Ctrl-C to stop." in line:
                    return found
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no 'Ctrl-C to stop.' within {timeout}s (exit {proc.poll()}):\n" + "\n".join(seen[-40:]))


@pytest.mark.parametrize("cmd", DEMOS, ids=_id)
def test_demo_command_serves_the_curl_lines_it_prints(cmd: dc.Command, tmp_path: Path) -> None:
    stamp = tmp_path / ".installed"
    stamp.touch()
    env = {**_env(Path(sys.executable).parent, ""), "VENV": sys.prefix, "STAMP": str(stamp)}
    env.pop("SWITCHYARD_NATS_URL")
    proc = subprocess.Popen(["bash", "-c", cmd.text], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        curls = _printed_curls(proc, timeout=180)
        assert curls, "it printed no curl line"
        for line in curls:
            body = _run_curl(line, env, f"{cmd.where} printed: {line}")
            assert "items" in body or "job_id" in body, body
    finally:
        stop(proc, signal.SIGINT, timeout=30)


SNIPPETS = [s for s in dc.snippets() if s.skip_reason is None]


def _models_for(machine_profile: str, bundle: str) -> list[str]:
    """The example Upstreams' models that a worker on (machine profile, bundle) can serve."""
    docs = yaml.safe_load_all((ROOT / "examples/upstreams.yaml").read_text())
    return [d["spec"]["model"] for d in docs
            if d and d.get("kind") == "Upstream" and machine_profile in d["spec"].get("machineProfiles", [])
            and bundle in [b["name"] for b in d["spec"].get("bundles", [])]]


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.where)
async def test_python_snippet(stack: Stack, snippet: dc.Snippet, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(dc.with_ports(snippet.code, stack.ports))
    log = tmp_path / "snippet.log"
    proc = _bash(f"python {script}", stack.env, tmp_path, log)
    workers: dict[tuple[str, str, str], subprocess.Popen[bytes]] = {}
    try:
        # A snippet that waits for capacity on a cold lane: once its job is queued (pending
        # demand), start an echo worker on that lane, as KEDA would start the real one.
        deadline = time.monotonic() + 120
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"{snippet.where} still running after 120 s:\n{_tail(log)}"
            for lane in await _pending_lanes(stack.ports["metrics"]):
                lane_key = (lane["pool"], lane["machine_profile"], lane["bundle"])
                models = _models_for(lane["machine_profile"], lane["bundle"])
                if lane_key not in workers and models:
                    workers[lane_key] = _bash(
                        "switchyard worker " + " ".join(f"--model {m}" for m in models) +
                        f" --machine-profile {lane['machine_profile']} --bundle {lane['bundle']} "
                        f"--pool {lane['pool']} --handler switchyard.worker.handlers:echo",
                        stack.env, ROOT, tmp_path / f"worker-{'-'.join(lane_key)}.log")
            await asyncio.sleep(0.2)
        assert proc.returncode == 0, f"{snippet.where}:\n{_tail(log)}"
    finally:
        stop(proc)
        for worker in workers.values():
            stop(worker)


async def _pending_lanes(metrics_port: int) -> list[dict[str, str]]:
    """The labels of every lane with pending demand, from the gateway's metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
        text = await resp.text()
    return [dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            for line in text.splitlines()
            if line.startswith("switchyard_gateway_pending_demand{") and float(line.rsplit(" ", 1)[1]) > 0]
