"""Prometheus metrics of one gateway process (served on their own port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "switchyard_gateway_requests", "HTTP requests by endpoint, status and machine profile",
            ["endpoint", "status", "machine_profile"], registry=r)
        self.latency = Histogram(
            "switchyard_gateway_request_latency_seconds", "Gateway request latency",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.pending_demand = Gauge(
            "switchyard_gateway_pending_demand", "Queued work items per lane group; KEDA scales on it",
            ["pool", "machine_profile", "bundle"], registry=r)
        self.worker_in_flight = Gauge(
            "switchyard_gateway_worker_in_flight", "In-flight items reported by each live worker",
            ["worker", "machine_profile", "pool"], registry=r)
        self.workers_live = Gauge(
            "switchyard_gateway_workers_live", "Live workers per machine profile", ["machine_profile"], registry=r)
        self.nats_connected = Gauge(
            "switchyard_gateway_nats_connected", "1 when the NATS connection is up", registry=r)
        self.config_epoch = Gauge(
            "switchyard_gateway_config_epoch", "Epoch of the routing table being served", registry=r)
        self.client_disconnects = Counter(
            "switchyard_gateway_client_disconnects", "Clients gone before their answer (the work still runs)",
            registry=r)
        self.http_connections = Gauge(
            "switchyard_gateway_http_connections", "Open client connections to the HTTP API", registry=r)
        self.http_refused = Counter(
            "switchyard_gateway_http_connections_refused",
            "Connections closed at once because maxConnections were open", registry=r)
        self.http_timeouts = Counter(
            "switchyard_gateway_http_timeouts", "Connections closed for a slow client, by phase "
            "(headers, body, idle)", ["phase"], registry=r)
        self.config_reloads = Counter(
            "switchyard_gateway_config_reloads", "Routing table reloads by outcome", ["outcome"], registry=r)
