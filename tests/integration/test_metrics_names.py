"""Every gateway metric a dashboard panel or an alert names is on a running gateway's /metrics.

The operator's are checked on a running operator in tests/k8s/test_operator_metrics.py.
"""

from __future__ import annotations

from typing import Any

from dataplane import ECHO, gateway, worker

from switchyard.monitoring import rules
from switchyard.monitoring.dashboard import dashboard
from switchyard.monitoring.promql import exported_names, metric_names
from switchyard.natsserver import NatsServer


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


async def test_every_gateway_metric_named_is_served(nats_server: NatsServer) -> None:
    named = {n for n in metric_names(dashboard().expressions() + rules.expressions())
             if n.startswith("switchyard_gateway_")}
    async with gateway(nats_server.url) as gw, worker(nats_server.url, echo):
        await gw.wait_for_workers(ECHO)
        assert (await gw.infer()).status == 200
        served = exported_names(await gw.metrics())
    assert len(named) >= 20 and named <= served, sorted(named - served)
