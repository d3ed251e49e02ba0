"""A server binary run by a test helper: its log in a file, gone with the test process."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from .controlplane import ControlPlane, die_with_parent


@dataclass
class Server:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> Server:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(die_with_parent(self.argv), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        return self

    @property
    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class ServerHelper:
    """What the helpers running one Server in a temporary work dir share: log, stop, `with`."""

    cp: ControlPlane
    workdir: Path | None
    server: Server | None

    def start(self) -> Self:
        raise NotImplementedError

    def _make_workdir(self, prefix: str) -> Path:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        atexit.register(self.stop)
        return self.workdir

    def log_tail(self, lines: int = 40) -> str:
        return self.server.tail(lines) if self.server else ""

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.workdir is not None and not self.cp.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
