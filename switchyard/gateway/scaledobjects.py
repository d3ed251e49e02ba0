"""Cluster mode: wake KEDA up when this gateway's scaler starts.

KEDA backs off from a scaler that is gone, in two ways a gateway start must undo:

- While the scaler a ScaledObject names does not answer, KEDA's reconcile fails and
  is retried with a growing backoff; worse, KEDA shares one gRPC connection per
  scaler address, and that connection waits out gRPC's own reconnect backoff (up to
  2 minutes). Measured: 20 s without a scaler cost 21 s more, with or without a
  spec change.
- A `StreamIsActive` stream cut by an error (a gateway killed) is reopened after a
  backoff of 2 s that doubles, up to 60 s, for every such cut in the life of the
  ScaledObject's scale loop: KEDA v2.21 resets it only when a stream ends with EOF.
  Measured, one gateway SIGKILLed and restarted four times: the stream came back
  1.2, 3.0, 7.3 and 15.3 s after the gateway was up, and pushes were lost meanwhile.

So a gateway whose scaler comes up finds the ScaledObjects that scale on it, Ready
or not, and changes their trigger: `scalerStartedAt` (its start time; ignored by
the scaler) and the spelling of `scalerAddress`, between `host:port` and
`dns:///host:port` (the same target to gRPC, but a new key in KEDA's connection
pool, so a fresh connection). A spec change makes KEDA reconcile at once and
restart the scale loop, whose new stream opens without delay: Ready about 2 s
after the scaler is up, the stream reopened as soon as KEDA has reconciled. The
operator keeps both when it re-applies the ScaledObject, so the two never fight
over them. The price is one scale-loop restart per gateway start.

KEDA v2.21 can lose that restart to a race. Its reconcile builds the new generation's
scalers (hpa.go, GetScalersCache) before it cancels the old scale loop, and the old loop,
on its way out, clears the ScaledObject's scalers cache (scale_handler.go,
ClearScalersCache), which by then holds the new ones. If the new loop's push scaler took
them first, their connection is closed under it and every retry logs "no pooled
connection ... the scaler is closed" until the next poll builds the cache again
(pollingInterval, 30 s by default). Seen 3 times in 63 restarts with KEDA on 8 Go threads
of a loaded 2-core machine, and in the full test suite. So the gateway checks its touch: a ScaledObject that has no
StreamIsActive stream here, opened after the touch and still open SETTLE_S later (the race
cuts it within milliseconds), after STREAM_WAIT_S is touched again (`scalerStartedAt`
only), at most RETOUCHES times. With several gateway replicas KEDA's stream may have gone
to another one: touching again then costs one more scale-loop restart, nothing else.

The gateway's Role allows `get` and `patch` on exactly the ScaledObjects that
scale on its Gateway (resourceNames), nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from ..api.table import ModelRoute
from ..contracts import ADDRESS_KEY, STARTED_KEY, TRIGGER_TYPE, Obj, respelled, scaled_object_name
from .config import TableHolder

log = logging.getLogger("switchyard.gateway.scaledobjects")

GROUP, VERSION, PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
STREAM_WAIT_S = 8.0  # KEDA reopens the stream within about 1 s of a touch; a loaded machine, a few
SETTLE_S = 1.0  # a stream that has stayed open this long was not cut by KEDA's race
RETOUCHES = 2



def candidate_names(route: ModelRoute) -> set[str]:
    """Every name a fleet of this model's Upstream can have (the table does not say which exist)."""
    names = {scaled_object_name(route.upstream)}
    for mp in route.machine_profiles:
        names.add(scaled_object_name(route.upstream, mp))
        names.update(scaled_object_name(route.upstream, mp, b.name) for b in route.bundles)
    return names


async def nudge(api: client.ApiClient, namespace: str, names: Iterable[str], when: str,
                respell: bool = True) -> list[str]:
    """Touch the named ScaledObjects; return the names touched. `respell`: also switch the
    address's spelling (a fresh gRPC connection); without it only `scalerStartedAt` changes."""
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
            triggers = [_touched(t, when, respell) if t.get("type") == TRIGGER_TYPE else t
                        for t in so["spec"].get("triggers") or []]
            patch = {"metadata": {"resourceVersion": so["metadata"]["resourceVersion"]},
                     "spec": {"triggers": triggers}}
            try:
                await objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                             _content_type="application/merge-patch+json")  # type: ignore[call-arg]  # taken through **kwargs; kubernetes_asyncio's stub omits it
            except ApiException as exc:
                if exc.status == 409:
                    continue
                log.warning("cannot touch ScaledObject", extra={"scaled_object": name, "status": exc.status})
                break
            touched.append(name)
            break
    return touched


def _touched(trigger: Obj, when: str, respell: bool = True) -> Obj:
    md = dict(trigger.get("metadata") or {})
    md[STARTED_KEY] = when
    if respell and md.get(ADDRESS_KEY):
        md[ADDRESS_KEY] = respelled(md[ADDRESS_KEY])
    return {**trigger, "metadata": md}


class Nudger:
    """Once the routing table is loaded, touch the ScaledObjects of its models; touch again
    those that open no StreamIsActive stream here (`streams`: ExternalScaler.open_streams;
    None: do not check)."""

    def __init__(self, holder: TableHolder, namespace: str, kubeconfig: str | None = None,
                 streams: Mapping[str, list[float]] | None = None) -> None:
        self.holder, self.namespace, self.kubeconfig = holder, namespace, kubeconfig
        self.streams = streams
        self.when = _now()

    async def run(self) -> None:
        from ..kubeclient import api_client

        while self.holder.table is None:
            await asyncio.sleep(0.2)
        # Names that are not this Gateway's fleets answer 403 (the Role lists its own) or 404: skipped.
        names = set().union(*(candidate_names(r) for r in self.holder.table.models.values()))
        api = await api_client(self.kubeconfig)
        try:
            since = time.monotonic()
            touched = await nudge(api, self.namespace, names, self.when)
            if touched:
                log.info("touched ScaledObjects so KEDA reconciles them now", extra={"scaled_objects": touched})
            for _ in range(RETOUCHES):
                missing = await self._without_stream(touched, since)
                if not missing:
                    break
                log.warning("KEDA opened no activity stream after the touch; touching again",
                            extra={"scaled_objects": missing, "waited_s": STREAM_WAIT_S})
                since = time.monotonic()
                touched = await nudge(api, self.namespace, missing, _now(), respell=False)
        finally:
            await api.close()

    async def _without_stream(self, names: list[str], since: float) -> list[str]:
        """Those of `names` with no stream here opened after `since` and open SETTLE_S later, once
        STREAM_WAIT_S has passed ([] at once when not checking)."""
        if self.streams is None or not names:
            return []
        streams = self.streams

        def missing() -> list[str]:
            return [n for n in names if not any(t >= since for t in streams.get(f"{self.namespace}/{n}", ()))]

        deadline = time.monotonic() + STREAM_WAIT_S
        while True:
            if not missing():
                await asyncio.sleep(SETTLE_S)
                if not missing():
                    return []
            if time.monotonic() >= deadline:
                return missing()
            await asyncio.sleep(0.2)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
