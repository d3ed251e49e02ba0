"""Every shell command and Python snippet the docs show, found and sorted for the tests that run them.

What counts as a command (the convention the docs follow):

- Documents: README.md files anywhere in the repository (the root one, manifests/README.md,
  ...) and every *.md under docs/. Hidden folders, build outputs and tests/ are left out.
- Fences tagged ``sh``, ``bash``, ``shell`` or ``console`` hold commands. In the first three
  every line is a command except blank lines and ``#`` comment lines; a leading ``$ `` prompt
  is dropped. In ``console`` fences only ``$ `` lines are commands; the other lines are
  output. A line ending in ``\\`` continues on the next line; a heredoc (``<<'WORD'``) runs to
  its ``WORD`` line and belongs to the command that opened it.
- Untagged fences (diagrams, sample output), other languages and inline code in prose are
  not commands. Put anything a reader should type in a tagged fence.
- ``python`` fences are snippets. Each runs as a script, unless it is a fragment of the
  reader's own code, listed in `SKIPPED_SNIPPETS` with the reason.

Commands run as written, only the local ports of DOC_PORTS moved. ``curl`` lines go to the
gateway the docs start, and so do ``grpcurl`` lines (kind ``grpcurl``), with the grpcurl that
tests/controlplane/build-tool.sh builds from its Go module first on PATH.

`kind()` says how the tests run a command; `SKIPPED` lists, with the reason, the commands
that cannot run here. A command that is neither runnable nor listed makes
tests/unit/test_docs_listed.py fail, so a new kind of command cannot go unrun unnoticed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_TAGS = {"sh", "bash", "shell", "console"}
LEFT_OUT = {"tests", "build", "dist", "node_modules"}

# Ports the docs use for services on this machine; the tests move them to free ones
# (NATS, the gateway's HTTP, metrics and gRPC listeners) because other tests share the host.
DOC_PORTS = {"nats": 4222, "http": 8080, "metrics": 9090, "grpc": 50051}

_NO_CONTROLLERS = ("there is no scheduler or kubelet beside the test API server, so no Pod ever runs and "
                   "no Deployment or StatefulSet finishes rolling out (the operator runs as a process "
                   "instead); tests/e2e waits for the rollout on kind")
_NO_DOCKER = "needs kind and a Docker engine, neither of which is here; tests/e2e runs these steps where they are"
# Commands that cannot run in the tests, by their words (shlex, comments dropped), with why.
SKIPPED: dict[str, str] = {
    "kubectl rollout status -n switchyard-system deployment/switchyard-operator": _NO_CONTROLLERS,
    "kubectl rollout status -n switchyard-system statefulset/nats": _NO_CONTROLLERS,
    "kind create cluster --name switchyard --config kind-config.yaml": _NO_DOCKER,
    "docker build -t ghcr.io/switchyard-dev/switchyard:0.1.0 .": _NO_DOCKER,
    "kind load docker-image ghcr.io/switchyard-dev/switchyard:0.1.0 --name switchyard": _NO_DOCKER,
    "KEDA=2.21.0": "sets the KEDA version for the next command, which is skipped",
    "kubectl apply --server-side -f https://github.com/kedacore/keda/releases/download/v$KEDA/keda-$KEDA-crds.yaml":
        "downloads from github.com; the test API server gets the same pinned KEDA CRDs from the Go module "
        "cache (tests/controlplane/build.sh, ControlPlane.apply_keda_crds)",
}
# Whole families, by their first words.
SKIPPED_PREFIXES: dict[str, str] = {
    "make bench": "a benchmark: minutes of load on the whole machine; its figures go to docs/performance.md",
    "python -m bench.": "a benchmark: minutes of load on the whole machine; its figures go to docs/performance.md",
}


# Python snippets that are fragments of the reader's own code, by (file, first line), with why.
SKIPPED_SNIPPETS: dict[tuple[str, str], str] = {
    ("docs/client.md", 'out = sy.encode("BAAI/bge-m3", texts)'):
        "a fragment inside a list item: `sy` and `texts` are the reader's, from the snippets above",
    ("docs/worker.md", "from switchyard.worker import Worker, WorkerConfig, serve"):
        "a fragment of the reader's async code: top-level await, and `encode` is their handler",
}


@dataclass(frozen=True)
class Command:
    file: str      # relative to the repository root
    line: int      # 1-based line of its first line
    section: str   # the heading above it
    fence: int     # which fence of the file: commands of one fence share one shell environment
    text: str      # as written: continuation lines and heredoc body included, prompt dropped

    @property
    def words(self) -> list[str]:
        """The command's words (shlex, comments dropped), heredoc body left out."""
        head = self.text.split("\n")
        first: list[str] = []
        for line in head:
            first.append(line)
            if not line.rstrip().endswith("\\"):
                break
        return shlex.split(" ".join(part.rstrip().rstrip("\\") for part in first), comments=True)

    @property
    def key(self) -> str:
        return " ".join(self.words)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Snippet:
    file: str
    line: int
    section: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def key(self) -> tuple[str, str]:
        return self.file, next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")

    @property
    def skip_reason(self) -> str | None:
        return SKIPPED_SNIPPETS.get(self.key)


def doc_files(root: Path = ROOT) -> list[Path]:
    found = [p for p in root.rglob("*.md")
             if not any(part.startswith(".") or part in LEFT_OUT or part.endswith(".egg-info")
                        for part in p.relative_to(root).parts[:-1])]
    return sorted(p for p in found if p.name == "README.md" or p.relative_to(root).parts[0] == "docs")


def _fences(path: Path) -> list[tuple[str, int, str, list[str]]]:
    """(tag, first body line number, section, body lines) of every fence in a Markdown file."""
    out: list[tuple[str, int, str, list[str]]] = []
    section, tag, start = "", None, 0
    body: list[str] = []
    opener = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if tag is None:
            if stripped.startswith("```"):
                opener = line[: len(line) - len(line.lstrip())]
                tag, start, body = stripped[3:].strip().lower(), number + 1, []
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif stripped == "```":
            out.append((tag, start, section, body))
            tag = None
        else:
            body.append(line[len(opener):] if line.startswith(opener) else line)
    return out


def _split_commands(tag: str, body: list[str]) -> list[tuple[int, str]]:
    """(offset in the fence, text) of each command in a shell fence."""
    commands: list[tuple[int, str]] = []
    current: list[str] = []
    heredoc: str | None = None
    start = 0
    for offset, line in enumerate(body):
        if heredoc is not None:
            current.append(line)
            if line.strip() == heredoc:
                commands.append((start, "\n".join(current)))
                current, heredoc = [], None
            continue
        if not current:
            if line.startswith("$ "):
                line = line[2:]
            elif tag == "console" or not line.strip() or line.lstrip().startswith("#"):
                continue
            start = offset
        current.append(line)
        marker = re.search(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", line)
        if marker:
            heredoc = marker.group(1)
        elif not line.rstrip().endswith("\\"):
            commands.append((start, "\n".join(current)))
            current = []
    if current:
        commands.append((start, "\n".join(current)))
    return commands


def commands(root: Path = ROOT) -> list[Command]:
    found: list[Command] = []
    for path in doc_files(root):
        rel = str(path.relative_to(root))
        for index, (tag, start, section, body) in enumerate(_fences(path)):
            if tag in SHELL_TAGS:
                for offset, text in _split_commands(tag, body):
                    found.append(Command(rel, start + offset, section, index, text))
    return found


def snippets(root: Path = ROOT) -> list[Snippet]:
    return [Snippet(str(path.relative_to(root)), start, section, "\n".join(body))
            for path in doc_files(root)
            for tag, start, section, body in _fences(path) if tag in ("python", "py")]


def skip_reason(cmd: Command) -> str | None:
    if cmd.key in SKIPPED:
        return SKIPPED[cmd.key]
    for prefix, reason in SKIPPED_PREFIXES.items():
        if cmd.key.startswith(prefix):
            return reason
    return None


# Every command under this heading (kubectl ones too) runs in tests/k8s/test_helm_install.py,
# in order, on an API server of its own with the built helm on PATH: it installs what the
# kustomize steps install, so the two sequences cannot share one API server.
HELM_SECTION = "With Helm"
# Commands under these headings of docs/observability.md run in tests/k8s/test_docs_monitoring.py,
# each heading on an API server of its own that has the real Prometheus Operator CRDs.
MONITORING_SECTIONS = ("Monitoring with kustomize", "Monitoring with Helm")


def kind(cmd: Command) -> str:
    """How the tests run it: gateway, worker, demo, make-test, make-lint, curl, grpcurl, pip, kubectl, helm, monitoring,
    skip, or unknown."""
    if skip_reason(cmd) is not None:
        return "skip"
    if cmd.section == HELM_SECTION:
        return "helm"
    if cmd.section in MONITORING_SECTIONS:
        return "monitoring"
    words = cmd.words
    if words[:2] == ["switchyard", "gateway"]:
        return "gateway"
    if words[:2] == ["switchyard", "worker"] or words[:3] == ["python", "-m", "switchyard.worker"]:
        return "worker"
    if words[:2] in (["make", "demo"], ["switchyard", "dev"]):
        return "demo"
    if words == ["make", "test"]:
        return "make-test"
    if words == ["make", "lint"]:  # run by `make test` first (tests/unit/test_docs_listed.py checks it does)
        return "make-lint"
    if words[:1] == ["curl"]:
        return "curl"
    if words[:1] == ["grpcurl"]:  # the built one on PATH (tests/controlplane/build-tool.sh grpcurl)
        return "grpcurl"
    if words[:2] == ["pip", "install"]:
        return "pip"
    if words[:1] == ["kubectl"]:
        return "kubectl"
    return "unknown"


def with_ports(text: str, ports: dict[str, int]) -> str:
    """The command with the docs' fixed local ports moved to `ports` (same names as DOC_PORTS)."""
    for name, documented in DOC_PORTS.items():
        if name in ports:
            text = re.sub(rf"(?<=[:\s=]){documented}\b", str(ports[name]), text)
    return text


def option(words: list[str], flag: str) -> list[str]:
    """Every value given to `flag` (`--flag v` or `--flag=v`)."""
    values = [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]
    return values + [w.split("=", 1)[1] for w in words if w.startswith(flag + "=")]
