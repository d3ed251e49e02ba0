"""`switchyard gateway`: standalone mode on a directory of manifests."""

from __future__ import annotations

import argparse
import sys

from .. import logs
from ..api import CompileError
from ..gateway.app import Listen, directory_source, new_state, serve_forever, start


def run_gateway(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    st = new_state(args.nats)
    source = directory_source(st, args.config_dir, gateway=args.gateway)
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
