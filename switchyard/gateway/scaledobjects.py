"""Cluster mode: wake KEDA up when this gateway's scaler starts.

KEDA reconciles a ScaledObject only on a spec change (and a few of its own
annotations); while the scaler it names does not answer, the reconcile fails and
is retried with a growing backoff (40 s without a scaler cost 42 s more). So a
gateway whose scaler comes up finds the ScaledObjects that scale on it and are not
Ready, and writes its start time into their trigger metadata (`scalerStartedAt`,
which the scaler ignores): a spec change, so KEDA reconciles at once. The
operator keeps that value when it re-applies the ScaledObject, so the two never
fight over it. Ready ScaledObjects are left alone.

The gateway's Role allows `get` and `patch` on exactly the ScaledObjects that
scale on its Gateway (resourceNames), nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .config import TableHolder

log = logging.getLogger("switchyard.gateway.scaledobjects")

GROUP, VERSION, PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
STARTED_KEY = "scalerStartedAt"  # trigger metadata; ignored by the scaler
TRIGGER_TYPE = "external-push"

Obj = dict[str, Any]


def scaled_object_name(upstream: str) -> str:
    """The ScaledObject the operator makes for an Upstream (one per Upstream for now)."""
    return upstream


def started_at(so: Obj | None) -> str | None:
    """The scaler start time a gateway wrote into this ScaledObject, if any."""
    for trigger in ((so or {}).get("spec") or {}).get("triggers") or []:
        if trigger.get("type") == TRIGGER_TYPE and (trigger.get("metadata") or {}).get(STARTED_KEY):
            return str(trigger["metadata"][STARTED_KEY])
    return None


def _ready(so: Obj) -> bool:
    conds = (so.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def nudge(api: client.ApiClient, namespace: str, names: Iterable[str], when: str) -> list[str]:
    """Touch the named ScaledObjects that are not Ready; return the names touched."""
    objects = client.CustomObjectsApi(api)
    touched = []
    for name in sorted(set(names)):
        for _ in range(3):  # a conflict means someone wrote meanwhile: read again
            try:
                so = await objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                if exc.status not in (403, 404):  # 403: it scales on another Gateway
                    log.warning("cannot read ScaledObject", extra={"scaled_object": name, "status": exc.status})
                break
            if _ready(so):
                break
            triggers = [dict(t, metadata={**(t.get("metadata") or {}), STARTED_KEY: when})
                        if t.get("type") == TRIGGER_TYPE else t for t in so["spec"].get("triggers") or []]
            patch = {"metadata": {"resourceVersion": so["metadata"]["resourceVersion"]},
                     "spec": {"triggers": triggers}}
            try:
                await objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                             _content_type="application/merge-patch+json")
            except ApiException as exc:
                if exc.status == 409:
                    continue
                log.warning("cannot touch ScaledObject", extra={"scaled_object": name, "status": exc.status})
                break
            touched.append(name)
            break
    return touched


class Nudger:
    """Once the routing table is loaded, touch the ScaledObjects of its models that are not Ready."""

    def __init__(self, holder: TableHolder, namespace: str, kubeconfig: str | None = None) -> None:
        self.holder, self.namespace, self.kubeconfig = holder, namespace, kubeconfig
        self.when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def run(self) -> None:
        from ..kubeclient import api_client

        while self.holder.table is None:
            await asyncio.sleep(0.2)
        names = {scaled_object_name(r.upstream) for r in self.holder.table.models.values()}
        api = await api_client(self.kubeconfig)
        try:
            touched = await nudge(api, self.namespace, names, self.when)
        finally:
            await api.close()
        if touched:
            log.info("touched ScaledObjects so KEDA reconciles them now", extra={"scaled_objects": touched})
