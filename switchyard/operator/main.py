"""`switchyard operator`: a cache kept by watches, a Lease for leadership, a queue of namespace passes."""

from __future__ import annotations

import argparse
import asyncio
import logging

from .. import logs, runtime
from ..api import catalog
from ..kubeclient import api_client
from ..tasks import Background
from .cache import Cache
from .election import LeaderElection
from .kube import RESOURCE_KINDS, Kube
from .metrics import OperatorMetrics
from .metrics import serve as serve_metrics
from .ratelimit import TokenBucket
from .reconcile import WATCHED, Reconciler
from .workqueue import NamespaceQueue

log = logging.getLogger("switchyard.operator")

async def run(args: argparse.Namespace) -> None:
    api = await api_client(args.kubeconfig)
    kube = Kube(api, TokenBucket(args.max_writes_per_second))
    namespaces = args.namespaces.split(",") if args.namespaces else ()
    metrics = OperatorMetrics()
    # Every replica keeps its cache warm; each event is a hint that its namespace needs a pass.
    cache = Cache(api, WATCHED, namespaces=namespaces, on_change=lambda ns: queue.enqueue(ns),
                  relist_s=args.relist_seconds, on_relist=lambda kind: metrics.relists.labels(kind).inc())
    kube.observer = cache
    reconciler = Reconciler(kube, image=args.image, catalog_limits=catalog.Limits(
        inline_bytes=args.catalog_inline_bytes, max_bytes=args.catalog_max_bytes),
        writes_per_pass=args.writes_per_pass, reads=cache)
    elector: LeaderElection

    queue = NamespaceQueue(metrics.counted(reconciler.reconcile), active=lambda: elector.is_leader,
                           resync_s=args.resync_seconds)

    async def discover() -> None:
        # A new leader has no idea what it missed: every namespace with resources, from the cache.
        await cache.wait_synced()
        queue.known.update(cache.namespaces(RESOURCE_KINDS))
        queue.enqueue_all()

    async def elected() -> None:
        background.add(task := asyncio.create_task(discover()))
        task.add_done_callback(background.discard)

    background: set[asyncio.Task[None]] = set()

    # Its own client, outside the write bound: a lease renewal never waits behind a burst of writes.
    elector = LeaderElection(Kube(api), args.lease_namespace, args.identity, lease_s=args.lease_seconds,
                             renew_s=max(1.0, args.lease_seconds / 3), on_elected=elected, metrics=metrics)
    # First, so a taken port fails the start instead of leaving an operator nobody can scrape.
    metrics_runner = (await serve_metrics(metrics, args.metrics_host, args.metrics_port)
                      if args.metrics_port is not None else None)
    tasks = Background()
    with runtime.StopSignals() as signals:
        tasks.start(cache.run(), name="cache")
        tasks.start(elector.run(), name="election")
        tasks.start(queue.run(), name="queue")
        log.info("operator started", extra={"identity": args.identity, "lease": args.lease_namespace,
                                            "metrics_port": args.metrics_port})
        failed = await tasks.until_one_ends(signals.stopping)
        for task in failed:  # none of these ends by itself: say why, and exit non-zero
            exc = None if task.cancelled() else task.exception()
            log.error("operator component stopped", extra={"task": task.get_name(),
                                                            "error": repr(exc)}, exc_info=exc)
        await tasks.stop()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await api.close()
    if failed:
        raise SystemExit(1)


def main(args: argparse.Namespace) -> int:
    logs.setup(args.log_level)
    runtime.run(lambda: run(args), uvloop=False)  # asyncio's loop, as before: kubernetes_asyncio is tested on it
    return 0
