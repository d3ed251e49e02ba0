"""A generated catalog of many Upstreams, for the scale test and bench/scale.py.

Each model is a small CPU-or-L4 Upstream with two machine profiles, like the ones
the issue measured (~470 bytes of routing table each); names sort in creation order.
"""

from __future__ import annotations

from typing import Any

from ..api.meta import API_VERSION

GATEWAY = "main"


def model_name(i: int) -> str:
    return f"tenant-{i // 100:03d}/model-{i:05d}"


def upstream_name(i: int) -> str:
    return f"m{i:05d}"


def gateway(name: str = GATEWAY) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Gateway", "metadata": {"name": name},
            "spec": {"auth": {"anonymous": True}, "nats": {"url": "nats://127.0.0.1:4222"},
                     "machineProfiles": [{"name": "cpu"}, {"name": "l4"}]}}


def upstream(i: int, service: str = "scale-worker") -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Upstream", "metadata": {"name": upstream_name(i)},
            "spec": {"model": model_name(i), "operations": ["encode", "generate"],
                     "bundles": [{"name": "default", "priority": 0}], "machineProfiles": ["cpu", "l4"],
                     "defaultMachineProfile": "cpu", "timeoutSeconds": 30,
                     "scaling": {"minReplicas": 0, "maxReplicas": 2},
                     "workers": {"service": service}}}


def upstreams(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [upstream(i) for i in range(start, start + n)]
