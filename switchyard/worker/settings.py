"""The worker's settings from its environment (switchyard/settings.py); its flags win over them.

The handlers' own variables (SWITCHYARD_ENGINE_*, SWITCHYARD_MINILM_DIR) belong to those handlers,
and the OTEL_* ones to OpenTelemetry's SDK (worker/tracing.py): docs/worker.md lists both.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import env

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _not_zero(value: str) -> bool:
    return value != "0"


@dataclass(frozen=True)
class WorkerSettings:
    nats_url: str = env("SWITCHYARD_NATS_URL", DEFAULT_NATS_URL, help="NATS URL(s), comma-separated (--nats)")
    health_host: str = env("SWITCHYARD_HEALTH_HOST", "0.0.0.0",
                           help="address of --health-port; rendered fleets bind the pod IP (--health-host)")
    log_level: str = env("SWITCHYARD_LOG_LEVEL", "INFO", help="DEBUG, INFO, WARNING or ERROR (--log-level)")
    uvloop: bool = env("SWITCHYARD_UVLOOP", True, parse=_not_zero,
                       help="0: run on asyncio's loop even when the uvloop extra is installed")
    pod_name: str | None = env("POD_NAME", None, help="the heartbeat's host, matched against worker EndpointSlices "
                                                      "(the downward API sets it); default the hostname")
