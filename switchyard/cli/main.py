"""`switchyard` command line: gateway, worker, dev."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from .. import __version__, earlystop
from ..extras import MissingExtra, require
from ..gateway.settings import GatewaySettings
from ..settings import load
from .settings import DevSettings


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except MissingExtra as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        # Handed over before parsing: an argparse REMAINDER refuses a first argument that
        # looks like a flag, so `switchyard worker --nats ...` would exit 2.
        earlystop.install()  # before the imports: a pod stopped while starting exits 0 (earlystop.py)
        require("worker", "switchyard worker")
        from ..worker.cli import main as worker_main

        return worker_main(argv[1:], prog="switchyard worker")
    args = build_parser().parse_args(argv)
    if args.command == "operator":
        require("operator", "switchyard operator")
        from ..operator.main import main as operator_main

        return operator_main(args)
    if args.command == "gateway":
        require("gateway", "switchyard gateway")
        from .gateway import run_gateway

        return run_gateway(args)
    require("dev", "switchyard dev")
    from .dev import run_dev

    return run_dev(args)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """Every command's flags; the defaults of those a variable can set come from `environ` (the process's)."""
    gw_env, dev_env = load(GatewaySettings, environ), load(DevSettings, environ)
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"switchyard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run a gateway on a directory of manifests (standalone mode)")
    src = gw.add_mutually_exclusive_group(required=True)
    src.add_argument("--config-dir", help="standalone: directory of Gateway/Upstream/Pool/Planner YAML")
    src.add_argument("--configmap", help="cluster mode: the ConfigMap the operator writes the routing table to")
    src.add_argument("--catalog-dir", help="standalone: a compiled routing table (switchyard.api.catalog.write_dir: "
                                           "routing.json, or catalog.json and its shards)")
    gw.add_argument("--gateway", default=None, help="which Gateway to serve when the directory has several")
    gw.add_argument("--namespace", default=gw_env.namespace,
                    help="cluster mode: namespace of the ConfigMap, worker EndpointSlices and pool Leases")
    gw.add_argument("--kubeconfig", default=None, help="cluster mode: default in-cluster, then ~/.kube/config")
    gw.add_argument("--nats", default=gw_env.nats_url, help="NATS URL(s), comma-separated (env SWITCHYARD_NATS_URL)")
    gw.add_argument("--host", default="127.0.0.1")
    gw.add_argument("--port", type=int, default=8080)
    gw.add_argument("--metrics-port", type=int, default=9090)
    gw.add_argument("--scaler-port", type=int, default=None,
                    help="serve KEDA's external scaler (gRPC) on this port; default: not served "
                         "(the operator passes the Gateway's spec.listeners.scaler.port)")
    gw.add_argument("--grpc-port", type=int, default=None,
                    help="serve switchyard.v1.Inference, grpc.health.v1 and reflection (gRPC) on this port, "
                         "with the options of spec.listeners.grpc; default: not served")
    gw.add_argument("--tls-cert", default=None,
                    help="PEM certificate chain: serve HTTPS on the HTTP and metrics ports (with --tls-key); "
                         "reloaded when the file changes")
    gw.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    gw.add_argument("--tls-min-version", choices=["1.2", "1.3"], default="1.2",
                    help="oldest TLS version accepted (default 1.2; older ones are never offered)")
    gw.add_argument("--log-level", default=gw_env.log_level, help="env SWITCHYARD_LOG_LEVEL; default INFO")
    gw.add_argument("--no-access-log", action="store_true", help="do not log one line per request")

    # Listed for --help only; main() hands `worker` to the worker's own parser.
    sub.add_parser("worker", help="run a worker (same flags as python -m switchyard.worker)")

    op = sub.add_parser("operator", help="run the Kubernetes operator")
    from ..operator.options import add_arguments as operator_arguments

    operator_arguments(op, environ)

    dev = sub.add_parser("dev", help="NATS + gateway on examples/ + an echo worker, on this machine")
    dev.add_argument("--config-dir", default=None,
                     help="default: the example manifests shipped with switchyard")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--metrics-port", type=int, default=9090)
    dev.add_argument("--nats-port", type=int, default=4222)
    dev.add_argument("--check", action="store_true", help="send one request, print it, and exit")
    dev.add_argument("--log-level", default=dev_env.log_level, help="env SWITCHYARD_LOG_LEVEL; default WARNING")

    return parser


if __name__ == "__main__":
    sys.exit(main())
