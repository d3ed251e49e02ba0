"""Conditions and events: what the operator tells users about each resource."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes_asyncio.client.exceptions import ApiException

from ..contracts import Obj
from .kube import Kube


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """metav1.MicroTime, which Lease times must be."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micro(ts: float) -> str:
    """A Unix time as metav1.MicroTime."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int | None,
              previous: list[Obj] | None) -> Obj:
    """A metav1.Condition, keeping lastTransitionTime while the status holds."""
    status = "True" if ok else "False"
    old = next((c for c in previous or [] if c.get("type") == ctype), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") \
        else now_iso()
    return {"type": ctype, "status": status, "reason": reason, "message": message[:32768],
            "lastTransitionTime": since, "observedGeneration": generation}


def ready_changed(previous: list[Obj] | None, new: Obj) -> bool:
    old = next((c for c in previous or [] if c.get("type") == new["type"]), None)
    return old is None or (old.get("status"), old.get("reason"), old.get("message")) != \
        (new["status"], new["reason"], new["message"])


async def write_status(kube: Kube, raw: Obj, status: Obj) -> None:
    meta = raw["metadata"]
    try:
        await kube.apply({"apiVersion": raw["apiVersion"], "kind": raw["kind"],
                      "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                      "status": status}, status=True)
    except ApiException as exc:
        if exc.status != 404:  # deleted since we read it: nothing to report on
            raise


async def warn(kube: Kube, raw: Obj, reason: str, message: str) -> None:
    """A Kubernetes Event on the resource, so `kubectl describe` shows what went wrong."""
    meta = raw["metadata"]
    ts = now_iso()
    await kube.create({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": raw["apiVersion"], "kind": raw["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "reason": reason, "message": message[:1024], "type": "Warning",
        "source": {"component": "switchyard-operator"},
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
    })
