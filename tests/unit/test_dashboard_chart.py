"""charts/switchyard's monitoring.enabled renders exactly `kubectl kustomize manifests/monitoring/`, with the real
Helm."""

from __future__ import annotations

from pathlib import Path

from test_helm_chart import assert_same, helm, kustomize, rendered  # noqa: F401 - helm is the module's fixture


def test_monitoring_renders_the_monitoring_base(helm: tuple[Path, dict[str, str]], tmp_path: Path) -> None:  # noqa: F811
    with_monitoring = rendered(helm, {"monitoring": {"enabled": True}}, tmp_path)
    assert_same(with_monitoring, {**kustomize("manifests"), **kustomize("manifests/monitoring")})


def test_monitoring_without_network_policies_renders_no_policy(helm: tuple[Path, dict[str, str]],  # noqa: F811
                                                              tmp_path: Path) -> None:
    objs = rendered(helm, {"monitoring": {"enabled": True}, "networkPolicies": {"enabled": False}}, tmp_path)
    kinds = {key[1] for key in objs}
    assert "NetworkPolicy" not in kinds and {"PodMonitor", "PrometheusRule"} <= kinds
