"""`switchyard gateway`: standalone (a directory of manifests) or cluster mode (a ConfigMap)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .. import logs, runtime
from ..api import CompileError
from ..gateway.app import Listen, new_state, serve_forever, start
from ..gateway.config import directory
from ..gateway.tls import TlsConfigError, TlsFiles, server_context


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """--tls-cert and --tls-key, both or neither; the pair is loaded once here so a bad one fails fast."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise TlsConfigError("--tls-cert and --tls-key go together: give both or neither")
    files = TlsFiles(Path(cert), Path(key), min_version=getattr(args, "tls_min_version", "1.2"))
    server_context(files)
    return files


def run_gateway(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    try:
        tls = tls_files(args)
    except TlsConfigError as exc:
        print(f"switchyard gateway: {exc}", file=sys.stderr)
        return 2
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    nudger = None
    if args.config_dir:
        st = new_state(args.nats, directory(args.config_dir, gateway=args.gateway))
        try:
            st.source.load()
        except (CompileError, FileNotFoundError) as exc:
            print(f"switchyard gateway: invalid config in {args.config_dir}:", file=sys.stderr)
            for issue in getattr(exc, "issues", [exc]):
                print(f"  {issue}", file=sys.stderr)
            return 2
    elif getattr(args, "catalog_dir", None):
        from ..gateway.catalogdir import catalog_dir

        st = new_state(args.nats, catalog_dir(args.catalog_dir))
        try:
            st.source.load()
        except (OSError, ValueError, KeyError) as exc:
            print(f"switchyard gateway: no complete catalog in {args.catalog_dir}: {exc}", file=sys.stderr)
            return 2
    else:
        from ..gateway.cluster import cluster

        st = new_state(args.nats, cluster(args.namespace, args.configmap, args.kubeconfig))

        async def planner_status() -> None:  # status.runs of the Planners (plannerstatus.py)
            from ..gateway.plannerstatus import PlannerStatusWriter

            await PlannerStatusWriter(st.holder, st.plan_runs.stats, args.namespace, args.kubeconfig).run()

        background.append(planner_status)
        if args.scaler_port is not None:
            from ..gateway.scaledobjects import Nudger

            # KEDA backs off while a scaler is absent: tell it this one is up (scaledobjects.py).
            nudger = Nudger(st.holder, args.namespace, args.kubeconfig)
            background.append(nudger.run)

    async def main() -> None:
        running = await start(st, Listen(args.host, args.port, args.metrics_port, args.scaler_port, tls=tls,
                                             grpc_port=args.grpc_port),
                              access_log=not args.no_access_log, background=background)
        if nudger is not None and running.scaler is not None:
            # Read when it checks its touches (after the first, which takes API round trips).
            nudger.streams = running.scaler.servicer.open_streams
        await serve_forever(running)

    runtime.run(main)
    return 0
