"""The gateway's settings from its environment (switchyard/settings.py); its flags win over them."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import env

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class GatewaySettings:
    nats_url: str = env("SWITCHYARD_NATS_URL", DEFAULT_NATS_URL, help="NATS URL(s), comma-separated (--nats)")
    namespace: str = env("POD_NAMESPACE", "default",
                         help="cluster mode: the namespace of the routing ConfigMap, worker EndpointSlices and pool "
                              "Leases (--namespace; the downward API sets it in the gateway's pods)")
    log_level: str = env("SWITCHYARD_LOG_LEVEL", "INFO", help="DEBUG, INFO, WARNING or ERROR (--log-level)")
