"""What the operator, the gateway, the worker and the SDK must agree on, defined once.

Names on the wire between components: labels and annotations, the routing ConfigMap's key,
the ScaledObject of a fleet, job states, and which EndpointSlice endpoint counts as ready.
Standard library only, so any component (and the SDK, which has no extras) can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Obj = dict[str, Any]  # a Kubernetes object as on the wire


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """Names one object by its parts, so nothing parses a "Kind/name" string back."""

    kind: str
    name: str
    namespace: str = ""  # "": within one namespace (an operator pass), the one at hand

    def __str__(self) -> str:
        """The printed form messages, conditions and logs have always used: Kind/namespace/name or Kind/name."""
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"

GROUP = "switchyard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# The routing table's key in its ConfigMap (or the catalog index's, api/catalog.py).
TABLE_KEY = "routing.json"

# Labels
POOL_LABEL = f"{GROUP}/pool"  # on a pool's Lease and its fleets: the Pool's name
POOL_API_LABEL = f"{GROUP}/pool-api"  # on Pools made through /v1/pools: only those count and may be deleted
MACHINE_PROFILE_LABEL = f"{GROUP}/machine-profile"  # on fleet pods: the profile they run
SERVICE_LABEL = "kubernetes.io/service-name"  # on EndpointSlices: their Service (set by Kubernetes)
MANAGED_BY = {"app.kubernetes.io/managed-by": "switchyard-operator"}  # on everything the operator writes
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())

# The KEDA trigger of a fleet (external-push to its Gateway's scaler). The operator renders it;
# a gateway writes the two keys below into it when its scaler starts, to make KEDA reconnect at
# once (gateway/scaledobjects.py), and the operator keeps what a gateway wrote.
TRIGGER_TYPE = "external-push"
ADDRESS_KEY = "scalerAddress"
STARTED_KEY = "scalerStartedAt"  # ignored by the scaler: only its change matters
DNS_SCHEME = "dns:///"  # gRPC's default resolver, spelled out

JobState = Literal["queued", "running", "succeeded", "failed", "expired", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "expired", "cancelled"})


def scaled_object_name(upstream: str, machine_profile: str | None = None, bundle: str | None = None) -> str:
    """The ScaledObject of one fleet: `<upstream>`, `<upstream>.<profile>` or `<upstream>.<profile>.<bundle>`.

    The parts are DNS labels, which have no dots, so two fleets never share a name."""
    return ".".join(p for p in (upstream, machine_profile, bundle) if p)


def endpoint_ready(endpoint: Mapping[str, Any]) -> bool:
    """An EndpointSlice endpoint that may take work: ready (absent means ready, as the API says)
    and not terminating. Gateways route by it and the operator counts live workers by it."""
    cond = endpoint.get("conditions") or {}
    return cond.get("ready", True) is not False and not cond.get("terminating")


def respelled(address: str) -> str:
    """The other spelling of the same gRPC target: host:port <-> dns:///host:port."""
    return address[len(DNS_SCHEME):] if address.startswith(DNS_SCHEME) else DNS_SCHEME + address


def gateway_written(so: Obj | None, address: str) -> dict[str, str]:
    """What a gateway wrote into this ScaledObject's trigger, for the operator to keep.

    `address` is the one the operator renders; its other spelling is kept, any other
    address is not (the Gateway's scaler address changed)."""
    for trigger in ((so or {}).get("spec") or {}).get("triggers") or []:
        if trigger.get("type") != TRIGGER_TYPE:
            continue
        md = trigger.get("metadata") or {}
        kept = {STARTED_KEY: str(md[STARTED_KEY])} if md.get(STARTED_KEY) else {}
        if md.get(ADDRESS_KEY) == respelled(address) and md.get(STARTED_KEY):
            kept[ADDRESS_KEY] = md[ADDRESS_KEY]
        return kept
    return {}
