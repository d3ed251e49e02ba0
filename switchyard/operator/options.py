"""Command-line options of `switchyard operator` (kept apart so `--help` imports no Kubernetes client)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from ..settings import load
from .settings import OperatorSettings


def add_arguments(p: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """The operator's flags; their defaults come from its environment (OperatorSettings)."""
    env = load(OperatorSettings, environ)
    p.add_argument("--kubeconfig", default=env.kubeconfig, help="default: in-cluster service account")
    p.add_argument("--namespaces", default=env.namespaces,
                   help="comma-separated namespaces to watch; default every namespace")
    p.add_argument("--lease-namespace", default=env.lease_namespace)
    p.add_argument("--identity", default=env.identity)
    p.add_argument("--lease-seconds", type=int, default=15)
    p.add_argument("--resync-seconds", type=float, default=60.0,
                   help="every namespace gets a pass this often, changed or not (from the watch cache)")
    p.add_argument("--relist-seconds", type=float, default=300.0,
                   help="the watch cache lists every kind afresh this often, repairing anything a watch missed")
    p.add_argument("--image", default=env.image, help="image for gateway pods")
    p.add_argument("--log-level", default=env.log_level)
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port at /metrics; default: not served")
    p.add_argument("--metrics-host", default="0.0.0.0", help="address the metrics port listens on")
    # Imported lazily elsewhere; the defaults are repeated from switchyard/api/catalog.py's Limits.
    p.add_argument("--catalog-inline-bytes", type=int, default=256 * 1024,
                   help="a routing table up to this size is one ConfigMap key routing.json; above, it is sharded")
    p.add_argument("--catalog-max-bytes", type=int, default=16 * 1024 * 1024,
                   help="the most a Gateway's sharded table may take, compressed; past it the Gateway reports "
                        "Ready=False CatalogTooLarge and gateways keep the last table")
    p.add_argument("--max-writes-per-second", type=float, default=50.0,
                   help="the operator's API-server write rate (token bucket; burst twice this)")
    p.add_argument("--writes-per-pass", type=int, default=400,
                   help="Upstream writes (ScaledObjects, fleets, statuses) one pass makes; the rest of a burst "
                        "goes to the next pass, so a routing change never waits behind it")
