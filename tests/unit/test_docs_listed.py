"""Every command in the docs is either run by a test or listed, with its reason, as not runnable here.

The convention for what counts as a command is in switchyard/testing/doccommands.py.
Where they run: tests/integration/test_docs_local.py (gateway, worker, curl, pip, make demo,
every Python snippet that is not a listed fragment), tests/k8s/test_docs_kubectl.py (kubectl, against a real API
server) and tests/k8s/test_helm_install.py (the "With Helm" section of docs/install.md, with the real helm).

`make test` is the one command that cannot run inside the tests (it would run them
recursively); this file asserts instead that it runs the same pytest command CI runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from switchyard.testing import doccommands as dc

ROOT = Path(__file__).resolve().parents[2]


def test_every_doc_command_is_run_or_listed() -> None:
    found = dc.commands()
    assert any(c.file == "README.md" for c in found), "no commands found in README.md: extraction is broken"
    unknown = [f"{c.where}: {c.key}" for c in found if dc.kind(c) == "unknown"]
    assert not unknown, ("commands the tests do not know how to run; teach switchyard/testing/doccommands.py "
                         "to run them, or list them in SKIPPED with the reason:\n" + "\n".join(unknown))


def test_skip_list_names_only_commands_in_the_docs() -> None:
    keys = {c.key for c in dc.commands()}
    stale = [k for k in dc.SKIPPED if k not in keys]
    assert not stale, f"SKIPPED lists commands no doc shows any more: {stale}"


def test_python_snippets_run_or_are_listed_fragments() -> None:
    found = dc.snippets()
    assert any(s.file == "README.md" for s in found)
    keys = {s.key for s in found}
    stale = [k for k in dc.SKIPPED_SNIPPETS if k not in keys]
    assert not stale, f"SKIPPED_SNIPPETS lists snippets no doc shows any more: {stale}"
    for snippet in found:
        if snippet.skip_reason is None:
            compile(snippet.code, snippet.where, "exec")  # a script: runs in test_docs_local.py


def test_make_test_runs_the_lint_and_pytest_commands_ci_runs(tmp_path: Path) -> None:
    # CI runs .ci/run, which must end by running the README's test command.
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == "make test", ci[-1]
    # `make -n test` prints what it would run; the install step is marked done (STAMP) so it prints only that.
    stamp = tmp_path / ".installed"
    stamp.touch()
    # Under `make test` (CI) this runs inside make: without its variables, the nested make prints no
    # "Entering directory" lines.
    outer = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env = {**outer, "VENV": sys.prefix, "STAMP": str(stamp)}
    done = subprocess.run(["make", "-n", "test"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [line] = [ln for ln in lines if "pytest" in ln]
    words = shlex.split(line)
    # `make lint` first (docs/architecture.md): ruff, mypy and import-linter, each as `make lint` runs them.
    lint = subprocess.run(["make", "-n", "lint"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    checks = [ln for ln in lint.stdout.splitlines() if ln.strip()]
    assert [shlex.split(c) for c in checks] == [[f"{sys.prefix}/bin/ruff", "check", "."], [f"{sys.prefix}/bin/mypy"],
                                                [f"{sys.prefix}/bin/lint-imports"]], checks
    assert lines == [*checks, line], lines
    assert words[:3] == [f"{sys.prefix}/bin/python", "-m", "pytest"], words
    # No selection: the whole suite (pyproject's testpaths), every test CI runs.
    assert all(w.startswith("-") and w not in ("-k", "-m") for w in words[3:]), words


def test_extraction_follows_the_convention(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# Top\n\n```sh\n# a comment\nswitchyard gateway --config-dir examples/ \\\n    --port 8080\n\n"
        "$ curl -s localhost:8080/health   # note\n```\n\n"
        "```console\n$ kubectl get pods\nNAME READY\n```\n\n"
        "```\nnot a command\n```\n\n## Apply\n\n```bash\nkubectl apply -f - <<'YAML'\nkind: X\n# kept\nYAML\n"
        "make test\n```\n\n```python\nprint(1)\n```\n")
    found = dc.commands(tmp_path)
    assert [c.key for c in found] == [
        "switchyard gateway --config-dir examples/ --port 8080", "curl -s localhost:8080/health",
        "kubectl get pods", "kubectl apply -f - <<YAML", "make test"]
    assert found[3].text.endswith("# kept\nYAML") and found[3].section == "Apply"
    assert [c.line for c in found] == [5, 8, 12, 23, 27]
    assert [s.code for s in dc.snippets(tmp_path)] == ["print(1)"]
    assert dc.with_ports(found[0].text, {"http": 18080}).endswith("--port 18080")
