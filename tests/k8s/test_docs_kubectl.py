"""The docs' kubectl commands, run as written, in doc order, against a real kube-apiserver.

Which commands there are (and which cannot run here, with why) is in
switchyard/testing/doccommands.py. Each runs through `bash -c` from the repository root
with KUBECONFIG pointing at an admin of the control plane, as the docs' reader is.

The test has a control plane of its own (not the session's): the docs end by deleting
the CRDs and namespaces, which other tests on the session's API server use. Beside it
runs the real kube-controller-manager with its namespace controller, which is what
finishes a `kubectl delete namespace`. There is no kubelet, so the operator Deployment
that `kubectl apply -k manifests/` creates never gets a pod: once that command has run,
the test starts the operator as a process with the Deployment's service account, as
tests/k8s/test_operator.py does, so commands that wait for the operator's work
(`kubectl wait --for=condition=Ready`) see it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import ROOT, Proc, operator

from switchyard.testing import doccommands as dc
from switchyard.testing.controllermanager import ControllerManager
from switchyard.testing.controlplane import ControlPlane

KUBECTL = [c for c in dc.commands() if dc.kind(c) == "kubectl"]


def _installs_operator(cmd: dc.Command) -> bool:
    return bool(re.search(r"\bapply\b.*-k manifests/?$", cmd.key))


def _namespaces() -> str:
    """The namespaces the docs put resources in (the operator watches those)."""
    found = {ns for c in KUBECTL for ns in dc.option(c.words, "-n") + dc.option(c.words, "--namespace")}
    found |= {c.words[-1] for c in KUBECTL if c.words[1:3] == ["create", "namespace"]}
    return ",".join(sorted(found - {"switchyard-system"}))


@pytest.fixture
def operator_slot(tmp_path: Path) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for proc in procs:
        proc.kill()
        print(proc.tail(60))  # shown when the test failed


@pytest.fixture(scope="module")
def docs_cluster(keda_bin: Path) -> Iterator[ControlPlane]:
    with ControlPlane() as cp:
        cp.apply_keda_crds()
        with ControllerManager(cp, keda_bin, controllers=("namespace-controller",)):
            yield cp


def test_kubectl_commands_run_as_written(docs_cluster: ControlPlane, operator_slot: list[Proc],
                                        tmp_path: Path) -> None:
    assert KUBECTL, "no kubectl command found in the docs"
    control_plane = docs_cluster
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    for cmd in KUBECTL:
        done = subprocess.run(["bash", "-c", cmd.text], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"{cmd.where}: {cmd.text}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        if _installs_operator(cmd) and not operator_slot:
            operator_slot.append(operator(control_plane, tmp_path, "docs", _namespaces()))
