"""The PrometheusRule: the alerts of docs/observability.md, each with what to do when it fires.

Gateway gauges read from JetStream (demand, queue age, stream usage) are the same on
every replica, so alerts take their `max`; counters each replica keeps for itself
(dead letters: one replica counts each advisory) are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAME = "switchyard"
GROUP = "namespace, pool, machine_profile, bundle"
LANE = "namespace, pool, machine_profile, bundle, model"
STREAM_NEAR_LIMIT = 0.8


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def to_rule(self) -> dict[str, Any]:
        return {"alert": self.name, "expr": self.expr, "for": self.for_, "labels": {"severity": self.severity},
                "annotations": {"summary": self.summary, "description": self.description,
                                "runbook": f"docs/observability.md#{self.name.lower()}"}}


ALERTS = (
    Alert("SwitchyardFleetStuckAtZero",
          f"(max by ({GROUP}) (switchyard_gateway_pending_demand) > 0) unless on ({GROUP}) "
          f"(max by ({GROUP}) (switchyard_gateway_workers_live) > 0)",
          "15m", "critical",
          "Work waits on {{ $labels.pool }}/{{ $labels.machine_profile }}/{{ $labels.bundle }} and no worker is live",
          "{{ $value }} items have been queued for 15 minutes on lane group {{ $labels.pool }}/"
          "{{ $labels.machine_profile }}/{{ $labels.bundle }} in {{ $labels.namespace }} with no live worker: "
          "KEDA did not scale the fleet up, or its pods do not start (no node of that machine profile, "
          "image pull, model load). Check the ScaledObject and the fleet's Deployment events."),
    Alert("SwitchyardDeadLetters",
          # A lane's first dead letter creates its series at 1, which increase() cannot see: count a series
          # that did not exist 15 minutes ago by its value.
          f"sum by ({LANE}) (increase(switchyard_gateway_dead_letters_total[15m])) > 0 or "
          f"sum by ({LANE}) (switchyard_gateway_dead_letters_total unless "
          f"switchyard_gateway_dead_letters_total offset 15m) > 0",
          "0m", "warning",
          "Items on {{ $labels.model }} ({{ $labels.machine_profile }}) used up their attempts",
          "{{ $value }} items on lane {{ $labels.model }} / {{ $labels.machine_profile }} / {{ $labels.pool }}"
          " in {{ $labels.namespace }} failed after maxAttempts in the last 15 minutes. Their clients got "
          "worker_error with an error_id: find it in the worker logs."),
    Alert("SwitchyardGatewayNotReady",
          "switchyard_gateway_ready == 0",
          "5m", "critical",
          "Gateway {{ $labels.pod }} is not ready",
          "Gateway {{ $labels.namespace }}/{{ $labels.pod }} has answered /readyz 503 for 5 minutes: it is "
          "not connected to NATS or has no routing table. Its requests get 503 meanwhile."),
    Alert("SwitchyardOperatorNoLeader",
          "(sum(switchyard_operator_leader) or vector(0)) < 1",
          "2m", "critical",
          "No Switchyard operator replica holds the leader Lease",
          "For 2 minutes no operator replica has been leader (or none is scraped): Gateway, Upstream and Pool "
          "changes are not reconciled and pool leases are not enforced. Check the operator pods and the "
          "Lease switchyard-operator in their namespace."),
    Alert("SwitchyardUsageAnomaly",
          # As dead letters: a tenant's first anomaly creates its series at 1, which increase() cannot see.
          "sum by (namespace, tenant) (increase(switchyard_usage_anomalies_total[15m])) > 0 or "
          "sum by (namespace, tenant) (switchyard_usage_anomalies_total unless "
          "switchyard_usage_anomalies_total offset 15m) > 0",
          "0m", "warning",
          "A key of tenant {{ $labels.tenant }} jumped to 10 times its usual request rate",
          "{{ $value }} usage anomalies for tenant {{ $labels.tenant }} in {{ $labels.namespace }} in the last 15 "
          "minutes: a key's requests in 5 minutes reached 10 times its trailing hour's (spec.usage.anomaly). "
          "The usage.anomaly event and the gateway log line name the key."),
    Alert("SwitchyardStreamNearLimit",
          "max by (namespace, resource) (switchyard_gateway_stream_used) / "
          f"max by (namespace, resource) (switchyard_gateway_stream_limit) > {STREAM_NEAR_LIMIT}",
          "5m", "warning",
          "The work stream is {{ $value | humanizePercentage }} of its {{ $labels.resource }} limit",
          "The SWITCHYARD_WORK stream in {{ $labels.namespace }} is above 80% of its limit on "
          "{{ $labels.resource }} (spec.queue.maxBytes, or maxMessagesPerLane on the fullest lane); at 100% "
          "new work is refused with 503 queue_full. Add workers, or raise spec.queue."),
)


def expressions() -> list[str]:
    return [a.expr for a in ALERTS]


def prometheus_rule(namespace: str = "switchyard-system") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "switchyard"},
                     "annotations": {"argocd.argoproj.io/sync-wave": "0"}},
        "spec": {"groups": [{"name": "switchyard", "rules": [a.to_rule() for a in ALERTS]}]},
    }
