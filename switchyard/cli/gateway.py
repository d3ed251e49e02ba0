"""`switchyard gateway`: standalone mode on a directory of manifests."""

from __future__ import annotations

import argparse
import sys

from .. import logs
from ..api import CompileError
from ..gateway.app import Listen, new_state, serve_forever, start
from ..gateway.config import DirectoryConfig


def run_gateway(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    st = new_state(args.nats)
    source = DirectoryConfig(args.config_dir, st.holder, gateway=args.gateway,
                             on_reload=lambda outcome: st.metrics.config_reloads.labels(outcome).inc())
    try:
        source.load()
    except (CompileError, FileNotFoundError) as exc:
        print(f"switchyard gateway: invalid config in {args.config_dir}:", file=sys.stderr)
        for issue in getattr(exc, "issues", [exc]):
            print(f"  {issue}", file=sys.stderr)
        return 2

    async def main() -> None:
        running = await start(st, Listen(args.host, args.port, args.metrics_port),
                              access_log=not args.no_access_log, background=[source.watch])
        await serve_forever(running)

    from .main import run

    run(main())
    return 0
