"""A worker told to stop while it is still starting exits 0, as Kubernetes expects of any SIGTERM.

KEDA scales a fleet down whenever the demand is gone, to a pod still starting too. Before the
worker's event loop handles signals it spends hundreds of milliseconds importing (its handler's
module above all); Python's default action ended it there with -15 (seen in CI: a replacement
pod stopped mid-start). The handler module here makes that window as long as the test needs:
it says it is being imported, then sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from switchyard.natsserver import NatsServer

SLOW_MODULE = '''
import pathlib, time
pathlib.Path({marker!r}).touch()
time.sleep(3)

def handle(items, ctx):
    return items
'''


def test_a_sigterm_while_importing_ends_the_worker_cleanly(nats_server: NatsServer, tmp_path: Path) -> None:
    marker = tmp_path / "importing"
    (tmp_path / "slowhandler.py").write_text(SLOW_MODULE.format(marker=str(marker)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard.cli.main", "worker", "--nats", nats_server.url, "--model", "m",
         "--handler", "slowhandler:handle"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), proc.communicate(timeout=10)[0].decode()
        proc.send_signal(signal.SIGTERM)  # mid-import: no event loop, no loop signal handler yet
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, out)
    assert "worker started" not in out, out  # it never began pulling work it would have to hand back
