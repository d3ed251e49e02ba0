"""The operator's --metrics-port against a real kube-apiserver: who leads, and its passes counted.

The dashboard and the "no leader" alert read these series; the names they use are
checked here against the scrape of a running operator, not against the source.
"""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

from cluster import OPERATOR_NS, OPERATOR_SA, ROOT, Proc, get, wait
from prometheus_client.parser import text_string_to_metric_families

from switchyard.monitoring import rules
from switchyard.monitoring.dashboard import dashboard
from switchyard.monitoring.promql import metric_names
from switchyard.natsserver import free_port
from switchyard.testing.controlplane import ControlPlane


def start(cp: ControlPlane, workdir: Path, identity: str, ns: str, port: int) -> Proc:
    kubeconfig = cp.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA)
    return Proc(["operator", "--kubeconfig", str(kubeconfig), "--identity", identity, "--namespaces", ns,
                 "--lease-namespace", OPERATOR_NS, "--lease-seconds", "4", "--resync-seconds", "5",
                 "--metrics-port", str(port), "--metrics-host", "127.0.0.1"], workdir / f"operator-{identity}.log")


def scrape(port: int) -> dict[str, float]:
    """Samples by name with labels, e.g. 'switchyard_operator_reconciles_total{outcome=ok}'; {} when down."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def test_leader_gauge_and_reconcile_counts(installed: ControlPlane, namespace: str, tmp_path: Path) -> None:
    cp, ns = installed, namespace
    ports = {"op-m1": free_port(), "op-m2": free_port()}
    procs = {ident: start(cp, tmp_path, ident, ns, port) for ident, port in ports.items()}
    try:
        # An earlier test's operator may hold the Lease until it lapses: wait for one of ours.
        holder = wait(lambda: (h := (get(cp, OPERATOR_NS, "lease", "switchyard-operator") or {})
                               .get("spec", {}).get("holderIdentity")) in ports and h, 30, "one of ours leads")
        standby = next(i for i in ports if i != holder)
        wait(lambda: scrape(ports[holder]).get("switchyard_operator_leader") == 1, 15, "the leader's gauge at 1")
        # The standby serves too (once started), at 0: the sum over replicas is 1.
        wait(lambda: scrape(ports[standby]).get("switchyard_operator_leader") == 0, 15, "the standby's gauge at 0")

        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        wait(lambda: scrape(ports[holder]).get("switchyard_operator_reconciles_total{outcome=ok}", 0) >= 1, 30,
             "a counted pass on the leader")
        led = scrape(ports[holder])
        assert led["switchyard_operator_reconcile_duration_seconds_count"] >= led[
            "switchyard_operator_reconciles_total{outcome=ok}"]
        quiet = scrape(ports[standby])  # a standby runs no pass, so it counts none
        assert quiet["switchyard_operator_reconciles_total{outcome=ok}"] == 0
        assert quiet["switchyard_operator_reconciles_total{outcome=error}"] == 0
        # Both replicas keep their cache: each listed every watched kind once (a relist would count more).
        for metrics in (led, quiet):
            assert metrics["switchyard_operator_watch_relists_total{kind=upstreams}"] >= 1

        # Every operator series the dashboard and the alerts name is on a running operator's /metrics.
        exposed = {name.split("{")[0] for name in led}
        wanted = {n for n in metric_names(rules.expressions() + dashboard().expressions())
                  if n.startswith("switchyard_operator_")}
        assert wanted and wanted <= exposed, wanted - exposed

        # SIGTERM: the leader releases the Lease and its gauge goes with it; the standby takes over.
        procs[holder].kill(signal.SIGTERM)
        wait(lambda: scrape(ports[standby]).get("switchyard_operator_leader") == 1, 30, "the standby leads")
    finally:
        for p in procs.values():
            p.kill()
