"""`python -m switchyard.worker` / `switchyard worker`: run one worker process."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping

from .. import logs, runtime
from ..api.gateway import OTLP_ENDPOINT
from ..settings import load
from .config import WorkerConfig, default_worker_id
from .loader import load_handler
from .runtime import serve
from .settings import WorkerSettings

log = logging.getLogger("switchyard.worker")
OTLP_URL = re.compile(OTLP_ENDPOINT)  # the same URLs as the Gateway's spec.tracing.endpoint


def build_parser(prog: str = "python -m switchyard.worker",
                 environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = load(WorkerSettings, environ)
    p = argparse.ArgumentParser(prog=prog, description="Pull work items from NATS and run a handler on them.")
    p.add_argument("--nats", default=env.nats_url,
                   help="NATS URL(s), comma-separated (env SWITCHYARD_NATS_URL)")
    p.add_argument("--model", action="append", required=True, help="model id served; repeat for several")
    p.add_argument("--bundle", default="default")
    p.add_argument("--machine-profile", default="cpu")
    p.add_argument("--pool", default="default")
    p.add_argument("--handler", required=True, help="module:function, e.g. switchyard.worker.handlers:echo")
    p.add_argument("--concurrency", type=int, default=4, help="work items in flight")
    p.add_argument("--gpus", type=float, default=None,
                   help="GPUs this worker holds, for the GPU-seconds of the usage ledger (default: the devices "
                        "in NVIDIA_VISIBLE_DEVICES or CUDA_VISIBLE_DEVICES, else 0)")
    p.add_argument("--worker-id", default=None, help="default: hostname-pid-random")
    p.add_argument("--ack-wait", type=float, default=30.0, help="seconds (when this worker creates the consumer)")
    p.add_argument("--heartbeat-interval", type=float, default=2.0)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--nak-delay", type=float, default=1.0, help="retry backoff base, seconds")
    p.add_argument("--health-port", type=int, default=None,
                   help="serve /healthz and /readyz (for Kubernetes probes) on this port")
    p.add_argument("--health-host", default=env.health_host,
                   help="address of the health port; rendered fleets bind the pod IP (env SWITCHYARD_HEALTH_HOST)")
    p.add_argument("--otlp-endpoint", default=None, type=_otlp_endpoint,
                   help="send OpenTelemetry traces to this OTLP/HTTP collector base URL (/v1/traces is appended), "
                        "e.g. http://otel-collector:4318; without it the standard OTEL_EXPORTER_OTLP_ENDPOINT "
                        "(or _TRACES_ENDPOINT) turns tracing on; with neither, tracing is off. Needs the "
                        "'tracing' extra")
    p.add_argument("--log-level", default=env.log_level)
    return p


def _otlp_endpoint(value: str) -> str:
    if not OTLP_URL.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s) URL like http://otel-collector:4318")
    return value


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(
        nats_url=args.nats, handler=load_handler(args.handler), models=args.model, bundle=args.bundle,
        machine_profile=args.machine_profile, pool=args.pool, concurrency=args.concurrency,
        worker_id=args.worker_id or default_worker_id(), ack_wait_s=args.ack_wait,
        heartbeat_interval_s=args.heartbeat_interval, drain_timeout_s=args.drain_timeout,
        nak_delay_s=args.nak_delay, gpus=args.gpus)


def main(argv: list[str] | None = None, prog: str = "python -m switchyard.worker") -> int:
    args = build_parser(prog).parse_args(argv)
    logs.setup(args.log_level)
    try:
        config = config_from_args(args)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.error("bad worker configuration", extra={"error": str(exc)})
        return 2
    from .tracing import wanted

    if wanted(args.otlp_endpoint):
        from ..extras import MissingExtra, require

        try:
            require("tracing", "--otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT")
        except MissingExtra as exc:
            log.error("bad worker configuration", extra={"error": str(exc)})
            return 2
    # uvloop when it is installed (the `uvloop` extra) and not turned off with SWITCHYARD_UVLOOP=0.
    runtime.run(lambda: serve(config, health_port=args.health_port, health_host=args.health_host,
                              otlp_endpoint=args.otlp_endpoint), uvloop=load(WorkerSettings).uvloop)
    if any(t.name.startswith("sy-handler") and t.is_alive() for t in threading.enumerate()):
        # A sync handler outlived the drain: do not hang in the interpreter's thread join.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0
