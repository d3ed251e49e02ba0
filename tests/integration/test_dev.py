"""The README's main command, as a new user runs it (with --check so it exits)."""

from __future__ import annotations

import subprocess
import sys

from switchyard.cli.dev import minilm_available


def test_switchyard_dev_serves_the_examples() -> None:
    out = subprocess.run([sys.executable, "-m", "switchyard.cli.main", "dev", "--check"], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Switchyard is up." in out.stdout and "curl -s http://127.0.0.1:" in out.stdout
    assert "POST /v1/encode/switchyard/echo -> 200" in out.stdout
    if minilm_available():
        assert "POST /v1/encode/sentence-transformers/all-MiniLM-L6-v2 -> 200" in out.stdout
