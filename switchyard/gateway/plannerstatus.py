"""Cluster mode: the Planners' run counts (planstats.py) in their status, as `status.runs`.

The operator owns the rest of a Planner's status (conditions, phase, observedGeneration) and writes
it by server-side apply as `switchyard-operator`. The gateway applies `status.runs` alone, as
FIELD_MANAGER, so neither writer removes the other's fields: a server-side apply removes only the
fields its own manager applied before and left out this time. The operator compares only the
fields it writes, so it never rewrites on account of `runs`.

Every replica writes the same counts (they all mirror the same bucket), so several replicas
writing is idempotent: an apply that changes nothing does not even bump the resourceVersion. A
replica writes a Planner when its counts changed since it last wrote them, at most every
EVERY_S, and only once its mirror has read the whole bucket (zeros from an empty mirror would
undo the counts). The Role grants exactly `patch` on `planners/status`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..api.planner import Planner, PlannerFailure, PlannerRuns
from ..contracts import API_VERSION, GROUP, VERSION
from ..kubeclient import KUBE_FAILURES, api_client
from ..logs import Repeats
from .config import TableHolder
from .planstats import Counts, PlanStats

log = logging.getLogger("switchyard.gateway.plannerstatus")

FIELD_MANAGER = "switchyard-gateway"
EVERY_S = 5.0
APPLY_PATCH = "application/apply-patch+yaml"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runs_status(counts: Counts) -> dict[str, Any]:
    """`status.runs` of a Planner: every tenant's counts, validated by the model the CRD is made from."""
    failure = counts.last_failure
    runs = PlannerRuns(started=counts.started, running=counts.running, succeeded=counts.succeeded,
                       failed=counts.failed, cancelled=counts.cancelled,
                       last_run_at=iso(counts.last_run_at) if counts.last_run_at else None,
                       last_failure=PlannerFailure(at=iso(failure.at), step=failure.step, code=failure.code[:64])
                       if failure else None)
    return runs.model_dump(by_alias=True, exclude_none=True)


class PlannerStatusWriter:
    def __init__(self, holder: TableHolder, stats: PlanStats, namespace: str, kubeconfig: str | None = None,
                 every_s: float = EVERY_S) -> None:
        self.holder, self.stats, self.namespace, self.kubeconfig = holder, stats, namespace, kubeconfig
        self.every_s = every_s
        self._failures = Repeats(log)  # the API server away: a line a minute, not one a round
        self._written: dict[str, dict[str, Any]] = {}  # planner -> the runs this replica last applied

    async def run(self) -> None:
        await self.stats.synced.wait()
        api = await api_client(self.kubeconfig)
        try:
            objects = client.CustomObjectsApi(api)
            while True:
                try:
                    await self.write_changed(objects)
                except KUBE_FAILURES as exc:  # API server away: the next round tries again
                    self._failures.failed("writing Planner run counts", exc)
                except Exception as exc:  # noqa: BLE001 - a bug: logged with its traceback; later rounds still run
                    self._failures.failed("writing Planner run counts", exc, level=logging.ERROR, exc_info=True)
                else:
                    self._failures.recovered("writing Planner run counts")
                await asyncio.sleep(self.every_s)
        finally:
            await api.close()

    async def write_changed(self, objects: client.CustomObjectsApi) -> None:
        table = self.holder.table
        if table is None:
            return
        for name in sorted(table.planners):
            runs = runs_status(self.stats.of(name, None))
            if self._written.get(name) == runs:
                continue
            body = {"apiVersion": API_VERSION, "kind": Planner.KIND,
                    "metadata": {"name": name, "namespace": self.namespace}, "status": {"runs": runs}}
            try:
                await objects.patch_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, Planner.PLURAL, name, body, field_manager=FIELD_MANAGER,
                    force=True, _content_type=APPLY_PATCH)  # type: ignore[call-arg]  # taken through **kwargs; kubernetes_asyncio's stub omits it
            except ApiException as exc:
                if exc.status == 404:  # removed since the table was compiled: nothing to write
                    self._written[name] = runs
                    continue
                if exc.status == 403:  # a Role without planners/status: said once per change, not every round
                    self._written[name] = runs
                    log.warning("the gateway's Role may not patch planners/status: the Planner's run counts "
                                "stay out of its status", extra={"planner": name})
                    continue
                self._failures.failed("writing a Planner's run counts", exc, planner=name, status=exc.status)
                continue
            self._written[name] = runs
