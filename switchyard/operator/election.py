"""Leader election on a coordination.k8s.io Lease, as client-go does it.

Every replica keeps its watch cache warm; exactly one acts: the holder of the Lease.
Expiry is judged by when *we* last saw the lease change (not by the holder's
clock), and every write carries the resourceVersion it read, so two candidates
cannot both win.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from kubernetes_asyncio.client.exceptions import ApiException

from ..contracts import Obj
from ..kubeclient import KUBE_FAILURES
from .kube import LEASE, Kube
from .metrics import OperatorMetrics
from .status import now_micro

log = logging.getLogger("switchyard.operator.election")


class LeaderElection:
    def __init__(self, kube: Kube, namespace: str, identity: str, *, name: str = "switchyard-operator",
                 lease_s: int = 15, renew_s: float = 5.0, retry_s: float = 2.0,
                 on_elected: Callable[[], Awaitable[None]] | None = None,
                 metrics: OperatorMetrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube, self.namespace, self.identity, self.name = kube, namespace, identity, name
        self._clock = clock  # local and monotonic: expiry is judged by when we saw the lease change
        self.lease_s, self.renew_s, self.retry_s = lease_s, renew_s, retry_s
        self.on_elected = on_elected
        self.metrics = metrics
        self.is_leader = False
        self._seen: tuple[str, str] | None = None  # (holder, renewTime) last observed
        self._seen_at = 0.0  # local monotonic time it changed
        self._renewed_at = 0.0

    async def run(self) -> None:
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.renew_s if self.is_leader else self.retry_s)
        finally:
            await self.release()

    async def step(self) -> None:
        """One round: take or renew the Lease, and become (or stop being) the leader accordingly."""
        try:
            won = await self._try()
        except KUBE_FAILURES as exc:
            log.warning("lease unreachable", extra={"error": str(exc)})
            # Still the leader while the lease we last renewed cannot have been taken by another.
            won = self.is_leader and self._clock() - self._renewed_at < self.lease_s - self.renew_s
        await self._set(won)

    async def _set(self, leader: bool) -> None:
        if leader and not self.is_leader:
            log.info("became leader", extra={"identity": self.identity})
            self.is_leader = True
            self._export()
            if self.on_elected:
                await self.on_elected()
        elif not leader and self.is_leader:
            log.warning("lost leadership", extra={"identity": self.identity})
            self.is_leader = False
            self._export()

    def _export(self) -> None:
        if self.metrics is not None:
            self.metrics.leader.set(1 if self.is_leader else 0)

    async def _try(self) -> bool:
        lease = await self.kube.get(LEASE, self.namespace, self.name)
        if lease is None:
            await self.kube.create(self._lease({}, transitions=0))
            self._renewed_at = self._clock()
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = (holder, spec.get("renewTime") or "")
        now = self._clock()
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
        duration = spec.get("leaseDurationSeconds") or self.lease_s
        if holder and holder != self.identity and now - self._seen_at < duration:
            return False  # someone else holds a live lease
        transitions = (spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        try:
            await self.kube.replace(self._lease(lease, transitions))
        except ApiException as exc:
            if exc.status == 409:
                return False  # another candidate wrote first
            raise
        self._renewed_at = self._clock()
        return True

    def _lease(self, current: Obj, transitions: int) -> Obj:
        spec = dict(current.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now_micro()
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=self.lease_s, renewTime=now_micro(),
                    leaseTransitions=transitions)
        meta = {"name": self.name, "namespace": self.namespace}
        if current:
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def release(self) -> None:
        """Hand the lease back on shutdown so a standby takes over at once."""
        if not self.is_leader:
            return
        self.is_leader = False
        self._export()
        try:
            lease = await self.kube.get(LEASE, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"].update(holderIdentity="", leaseDurationSeconds=1)
                await self.kube.replace(lease)
        except KUBE_FAILURES as exc:  # best effort: the lease expires anyway
            log.warning("could not release the lease", extra={"error": str(exc)})
