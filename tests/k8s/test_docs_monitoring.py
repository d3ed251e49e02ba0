"""docs/observability.md's install commands, run as written on a real kube-apiserver.

Each of its two sections (switchyard/testing/doccommands.py MONITORING_SECTIONS) runs on
an API server of its own that has the real Prometheus Operator CRDs (tests/controlplane/
fetch-monitoring-crds.sh), so the PodMonitors and the PrometheusRule are validated by
their real schemas (server-side apply, strict field validation). The Helm section first
runs the "With Helm" install of docs/install.md, as a reader would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import OPERATOR_NS, ROOT, get

from switchyard.monitoring import rules
from switchyard.testing import doccommands as dc
from switchyard.testing import helm as helm_testing
from switchyard.testing.controlplane import ControlPlane

COMMANDS = [c for c in dc.commands() if dc.kind(c) == "monitoring"]
INSTALL_WITH_HELM = [c for c in dc.commands() if dc.kind(c) == "helm"]


@pytest.fixture(scope="module")
def crds() -> Path:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot fetch the Prometheus Operator CRDs")
    done = subprocess.run(["bash", str(ROOT / "tests/controlplane/fetch-monitoring-crds.sh")], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"could not fetch the Prometheus Operator CRDs: {done.stderr[-2000:]}")
    return Path(done.stdout.strip())


@pytest.fixture(scope="module")
def helm_dir() -> Path:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build helm (tests/controlplane/build-tool.sh helm)")
    try:
        return helm_testing.ensure_built()
    except helm_testing.HelmBuildError as exc:
        pytest.skip(f"the Go build of helm failed: {exc}")


@pytest.fixture
def cluster(crds: Path) -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.kubectl("apply", "--server-side", "-f", str(crds), check=True)
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds), check=True)
        yield cp


def run(cmds: list[dc.Command], env: dict[str, str]) -> None:
    for cmd in cmds:
        done = subprocess.run(["bash", "-c", cmd.text], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"{cmd.where}: {cmd.text}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("section", dc.MONITORING_SECTIONS)
def test_docs_monitoring_install(section: str, cluster: ControlPlane, helm_dir: Path, tmp_path: Path) -> None:
    cp = cluster
    cmds = [c for c in COMMANDS if c.section == section]
    assert cmds, f"docs/observability.md has no commands under {section!r}"
    env = {**helm_testing.env(tmp_path / "helm-home", cp.kubeconfig), "PATH": f"{helm_dir}:{os.environ['PATH']}"}
    if "Helm" in section:
        run(INSTALL_WITH_HELM, env)
    run(cmds, env)

    for name in ("switchyard-operator", "switchyard-gateways"):
        assert get(cp, OPERATOR_NS, "podmonitor", name) is not None, name
    rule = get(cp, OPERATOR_NS, "prometheusrule", "switchyard")
    assert [r["alert"] for r in rule["spec"]["groups"][0]["rules"]] == [a.name for a in rules.ALERTS]
    board = get(cp, OPERATOR_NS, "configmap", "switchyard-dashboard")
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = json.loads((ROOT / "manifests/monitoring/switchyard-dashboard.json").read_text())
    assert json.loads(board["data"]["switchyard-dashboard.json"]) == committed
    assert get(cp, OPERATOR_NS, "networkpolicy", "switchyard-operator-metrics") is not None
    operator = get(cp, OPERATOR_NS, "deployment", "switchyard-operator")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=9090" in container["args"] and container["ports"] == [
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
