"""manifests/argocd/: the argocd-cm snippet holds health.lua for every kind, and docs/install.md shows both files as
they are.

The script itself runs over live objects in tests/k8s/test_argocd_health.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from switchyard.api import crd as gen

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests/argocd"


def test_argocd_cm_has_the_script_for_every_kind() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    script = (ARGOCD / "health.lua").read_text()
    expected = {f"resource.customizations.health.switchyard.dev_{kind.KIND}" for kind in gen.KINDS}
    assert set(cm["data"]) == expected
    for key, value in cm["data"].items():
        assert value == script, f"{key} is not manifests/argocd/health.lua"


@pytest.mark.parametrize("name", ["applications.yaml", "argocd-cm.yaml"])
def test_install_doc_shows_the_file(name: str) -> None:
    fences = re.findall(r"^```yaml\n(.*?)^```$", (ROOT / "docs/install.md").read_text(), re.S | re.M)
    assert (ARGOCD / name).read_text() in fences, f"docs/install.md does not show manifests/argocd/{name} as it is"


def test_applications_name_paths_of_this_repository() -> None:
    apps = [d for d in yaml.safe_load_all((ARGOCD / "applications.yaml").read_text()) if d]
    ours = [a for a in apps if a["spec"]["source"]["repoURL"].endswith("switchyard-dev/switchyard.git")]
    assert len(ours) == 2
    for app in ours:
        assert (ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").is_file(), app["metadata"]["name"]
    waves = [int(a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) for a in apps]
    assert waves == sorted(waves), "the platform's Applications sync before yours"
