"""switchyard/runtime.py: the loop every entry point runs on, its stop signals, and backoff."""

from __future__ import annotations

import ast
import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from switchyard import runtime
from switchyard.runtime import Backoff

uvloop = pytest.importorskip("uvloop")


def test_an_import_error_inside_the_app_surfaces_as_itself_under_uvloop() -> None:
    # The old `try: uvloop.run(coro) except ImportError: asyncio.run(coro)` caught the app's own
    # ImportError and ran the coroutine uvloop had already awaited: "cannot reuse already awaited coroutine".
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        raise ImportError("No module named 'missing_dependency'")

    with pytest.raises(ImportError, match="missing_dependency"):
        runtime.run(main)
    assert len(loops) == 1 and isinstance(loops[0], uvloop.Loop)  # run once, and on uvloop


def test_run_returns_the_result_on_either_loop() -> None:
    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert runtime.run(main).startswith("uvloop")
    assert runtime.run(main, uvloop=False).startswith("asyncio")


SIGNALLED = textwrap.dedent('''
    import asyncio, os, signal, sys
    from switchyard import earlystop, runtime

    if sys.argv[1] == "early":
        earlystop.install()
        os.kill(os.getpid(), signal.SIGTERM)  # before any loop: noted, not fatal

    async def main() -> int:
        repeats = []
        with runtime.StopSignals(on_repeat=lambda: repeats.append(1)) as signals:
            print("ready", flush=True)
            await asyncio.wait_for(signals.stopping.wait(), 60)
            print("stopping", flush=True)
            if sys.argv[1] == "twice":
                await asyncio.wait_for(_until(lambda: repeats), 60)
                print("repeated", flush=True)
        return 7

    async def _until(cond) -> None:
        while not cond():
            await asyncio.sleep(0.01)

    sys.exit(runtime.run(main))
''')


def _start(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SIGNALLED, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_main_coroutine_cleanly(sig: signal.Signals) -> None:
    proc = _start("once")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 7 and "stopping" in out, (proc.returncode, out)


def test_a_second_signal_calls_on_repeat() -> None:
    proc = _start("twice")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == "stopping\n"
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 7 and "repeated" in out, (proc.returncode, out)


def test_a_sigterm_noted_before_the_loop_counts_as_the_first() -> None:
    proc = _start("early")
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 7 and out.split() == ["ready", "stopping"], (proc.returncode, out)


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_reset() -> None:
    b = Backoff(0.5, 10.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.reset()
    assert b.next() == 0.5
    assert [d for d, _ in zip(Backoff(0.1, 2.0), range(6), strict=False)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_backoff_by_attempt_number_never_overflows() -> None:
    b = Backoff(1.0, 60.0)
    assert [b.delay(n) for n in (0, 1, 2, 3, 7, 8)] == [1.0, 1.0, 2.0, 4.0, 60.0, 60.0]
    assert b.delay(10_000) == 60.0  # 2.0 ** 9999 would raise OverflowError
    assert b.failures == 0  # delay() keeps no count


@pytest.mark.parametrize("first,cap,factor", [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_backoff_refuses_settings_that_never_grow_or_never_pause(first: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first, cap, factor)


ROOT = Path(__file__).resolve().parents[2]


def _calls(path: Path) -> set[str]:
    """Dotted names called in a module: `loop.add_signal_handler`, `asyncio.run`, ..."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            base = node.func.value
            names.add(f"{base.id if isinstance(base, ast.Name) else '?'}.{node.func.attr}")
            names.add(f"*.{node.func.attr}")
    return names


def test_every_entry_point_runs_and_stops_through_runtime() -> None:
    # One copy of each: the loop choice (uvloop or asyncio) and the signal stanza.
    own = ROOT / "switchyard" / "runtime.py"
    for path in (ROOT / "switchyard").rglob("*.py"):
        if path == own:
            continue
        calls = _calls(path)
        rel = path.relative_to(ROOT)
        assert "*.add_signal_handler" not in calls, f"{rel}: use runtime.StopSignals"
        assert not {"asyncio.run", "uvloop.run", "uvloop.new_event_loop"} & calls, f"{rel}: use runtime.run"


def test_the_commands_do_not_import_the_cli_that_imports_them() -> None:
    # cli.main imports cli.gateway and cli.dev (lazily, for the extras); they must not import it back.
    for name in ("gateway.py", "dev.py", "settings.py"):
        tree = ast.parse((ROOT / "switchyard" / "cli" / name).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "main" not in imported and "switchyard.cli.main" not in imported, name
