"""Standalone mode from a compiled, sharded catalog: `switchyard gateway --catalog-dir`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from switchyard.api import catalog, compile_table
from switchyard.api.loader import parse_objects
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import catalog as gen

N = 300


def write(path: Path, ops: list[str]) -> None:
    ups = gen.upstreams(N)
    ups[-1]["spec"]["operations"] = ops
    rs, issues = parse_objects([gen.gateway(), *ups])
    assert not issues
    stored = catalog.split(compile_table(rs, gateway=gen.GATEWAY).raise_for_issues(), catalog.Limits(inline_bytes=0))
    assert len(stored.shards) == 1 and stored.index is not None
    catalog.write_dir(stored, path)


def post(url: str) -> int:
    req = urllib.request.Request(url, data=b'{"items": [1]}', headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        assert json.loads(err.read())["error"]["code"]
        return err.code
    except OSError:
        return 0


def until(cond, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_gateway_serves_a_sharded_catalog_from_a_directory_and_reloads_it(tmp_path: Path,
                                                                         nats_server: NatsServer) -> None:
    write(tmp_path, ["encode"])
    port = free_port()
    gateway = subprocess.Popen([sys.executable, "-m", "switchyard.cli.main", "gateway", "--catalog-dir", str(tmp_path),
                                "--nats", nats_server.url, "--port", str(port), "--metrics-port", str(free_port())],
                               start_new_session=True)
    last = f"http://127.0.0.1:{port}/v1/%s/{gen.model_name(N - 1)}"
    try:
        until(lambda: post(last % "encode") == 202, "the last model queued (no worker yet)")
        assert post(last % "score") == 400  # not an operation it offers
        write(tmp_path, ["encode", "score"])  # shards first, then the index: the gateway reloads
        until(lambda: post(last % "score") == 202, "the new operation served")
    finally:
        gateway.terminate()
        try:
            gateway.wait(20)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()


def test_a_directory_without_a_complete_catalog_is_refused(tmp_path: Path) -> None:
    write(tmp_path, ["encode"])
    next(tmp_path.glob("shard-*.json.gz")).write_bytes(b"not gzip")
    done = subprocess.run([sys.executable, "-m", "switchyard.cli.main", "gateway", "--catalog-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no complete catalog" in done.stderr
