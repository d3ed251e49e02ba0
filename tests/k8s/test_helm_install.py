"""`helm install` of charts/switchyard on a real kube-apiserver gives a running operator.

The install is the "With Helm" section of docs/install.md, run as written (switchyard/
testing/doccommands.py) with the real helm (tests/controlplane/build-tool.sh helm) on PATH.
It has an API server of its own: the chart installs the objects the other tests get from
`kubectl apply -k manifests/`. There is no kubelet, so the chart's operator Deployment
never gets a pod: the test runs the operator as a process with the ServiceAccount and
RBAC the chart created, as tests/k8s does for kustomize, and checks that it reconciles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import OPERATOR_NS, OPERATOR_SA, ROOT, get, operator, wait

from switchyard.testing import doccommands as dc
from switchyard.testing import helm as helm_testing
from switchyard.testing.controlplane import ControlPlane

HELM_DOCS = [c for c in dc.commands() if dc.kind(c) == "helm"]


@pytest.fixture(scope="module")
def helm_dir() -> Path:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build helm (tests/controlplane/build-tool.sh helm)")
    try:
        return helm_testing.ensure_built()
    except helm_testing.HelmBuildError as exc:
        pytest.skip(f"the Go build of helm failed: {exc}")


@pytest.fixture(scope="module")
def helm_cluster(helm_dir: Path) -> Iterator[ControlPlane]:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot build kube-apiserver/etcd (tests/controlplane/build.sh)")
    with ControlPlane() as cp:
        cp.apply_keda_crds()  # the operator writes a ScaledObject per Upstream
        yield cp


def test_docs_helm_install_gives_a_running_operator(helm_dir: Path, helm_cluster: ControlPlane,
                                                   tmp_path: Path) -> None:
    cp = helm_cluster
    assert [c for c in HELM_DOCS if c.words[0] == "helm" and "install" in c.words], \
        "docs/install.md has no `helm install` under the heading 'With Helm'"
    env = {**helm_testing.env(tmp_path / "helm-home", cp.kubeconfig), "PATH": f"{helm_dir}:{os.environ['PATH']}"}
    for cmd in HELM_DOCS:
        done = subprocess.run(["bash", "-c", cmd.text], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"{cmd.where}: {cmd.text}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"

    # What the operator runs as is the chart's: its ServiceAccount, bound to its ClusterRole.
    sa = get(cp, OPERATOR_NS, "serviceaccount", OPERATOR_SA)
    assert sa is not None and sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert sa["metadata"]["annotations"]["meta.helm.sh/release-name"] == "switchyard"
    ns = get(cp, OPERATOR_NS, "namespace", OPERATOR_NS)  # -n is ignored for a cluster-scoped kind
    assert ns is not None and ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deploy = get(cp, OPERATOR_NS, "deployment", "switchyard-operator")
    assert deploy is not None and deploy["spec"]["template"]["spec"]["serviceAccountName"] == OPERATOR_SA
    assert get(cp, OPERATOR_NS, "statefulset", "nats") is not None  # nats.enabled=true in the docs

    demo = "helm-demo"
    cp.kubectl("create", "namespace", demo, check=True)
    proc = operator(cp, tmp_path, "helm", demo)
    try:
        cp.kubectl("apply", "-n", demo, "-f", str(ROOT / "examples"), check=True)

        def ready() -> dict | None:
            gw = get(cp, demo, "gateway", "main") or {}
            conds = {c["type"]: c for c in (gw.get("status") or {}).get("conditions", [])}
            return conds.get("Ready")

        # Until the operator has seen the Pool its API keys name, the Gateway may be Invalid for a moment.
        cond = wait(lambda: (c := ready()) and c["status"] == "True" and c, 30, "gateway/main Ready=True")
        generation = get(cp, demo, "gateway", "main")["metadata"]["generation"]
        assert cond["reason"] and cond["observedGeneration"] == generation
        assert wait(lambda: get(cp, demo, "deployment", "main-gateway"), 10, "the gateway Deployment")
        lease = get(cp, OPERATOR_NS, "lease", "switchyard-operator")
        assert lease is not None and lease["spec"]["holderIdentity"] == "helm"
    finally:
        proc.kill()
        print(proc.tail(60))  # shown when the test failed
