"""The operator's settings from its environment (switchyard/settings.py); its flags win over them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ..settings import env

DEFAULT_IMAGE = "ghcr.io/switchyard-dev/switchyard:0.1.0"


def _identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class OperatorSettings:
    kubeconfig: str | None = env("KUBECONFIG", None, help="kubeconfig file; default the in-cluster service account "
                                                          "(--kubeconfig)")
    namespaces: str | None = env("SWITCHYARD_WATCH_NAMESPACES", None,
                                 help="comma-separated namespaces to watch; default every namespace (--namespaces)")
    lease_namespace: str = env("POD_NAMESPACE", "switchyard-system",
                               help="namespace of the leader-election Lease (--lease-namespace)")
    identity: str = env("POD_NAME", factory=_identity, help="this replica's name in the Lease; default "
                                                            "hostname-pid (--identity)")
    image: str = env("SWITCHYARD_IMAGE", DEFAULT_IMAGE, help="image of the gateway pods it runs (--image)")
    log_level: str = env("SWITCHYARD_LOG_LEVEL", "INFO", help="DEBUG, INFO, WARNING or ERROR (--log-level)")
