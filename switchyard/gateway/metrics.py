"""Prometheus metrics of one gateway process (served on their own port)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# A cold start is a node, an image pull and a model load: seconds to tens of minutes.
COLD_START_BUCKETS = (5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1200, 1800, 3600)
# Measured cold start / the ETA given when it began: 1 is exact, 2 means it took twice as long.
ETA_RATIO_BUCKETS = (0.25, 0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2, 3, 5, 10)
LANE_GROUP = ["pool", "machine_profile", "bundle"]  # the labels of pending demand: a group of lanes
LANE = ["pool", "machine_profile", "bundle", "model"]  # one lane, and so one worker fleet


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "switchyard_gateway_requests", "HTTP requests by endpoint, status and machine profile",
            ["endpoint", "status", "machine_profile"], registry=r)
        self.latency = Histogram(
            "switchyard_gateway_request_latency_seconds", "Gateway request latency by endpoint and machine profile",
            ["endpoint", "machine_profile"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter(
            "switchyard_gateway_errors", "Error answers by endpoint and error code (the body's error.code), "
            "e.g. queue_full, payload_too_large", ["endpoint", "code"], registry=r)
        self.pending_demand = Gauge(
            "switchyard_gateway_pending_demand", "Queued work items per lane group; KEDA scales on it",
            LANE_GROUP, registry=r)
        self.queue_oldest_age = Gauge(
            "switchyard_gateway_queue_oldest_age_seconds",
            "Age of the oldest item stored on a lane group's lanes (queued or in flight, not yet acked)",
            LANE_GROUP, registry=r)
        self.stream_used = Gauge(
            "switchyard_gateway_stream_used",
            "Work stream usage: bytes stored, or items on its fullest lane (resource=bytes|messages_per_lane)",
            ["resource"], registry=r)
        self.stream_limit = Gauge(
            "switchyard_gateway_stream_limit",
            "Work stream limits JetStream enforces (spec.queue maxBytes and maxMessagesPerLane), by resource",
            ["resource"], registry=r)
        self.worker_in_flight = Gauge(
            "switchyard_gateway_worker_in_flight", "In-flight items reported by each live worker",
            ["worker", "machine_profile", "pool"], registry=r)
        self.workers_live = Gauge(
            "switchyard_gateway_workers_live",
            "Live workers per fleet (a worker serving several models counts under each)", LANE, registry=r)
        self.time_to_first_token = Histogram(
            "switchyard_gateway_time_to_first_token_seconds",
            "Streamed requests: from the request's item being queued to its first chunk handed to the client",
            ["machine_profile", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.cold_starts = Histogram(
            "switchyard_gateway_cold_start_seconds",
            "Measured cold starts per fleet: first 202 on a lane with no worker until a worker is live",
            LANE, buckets=COLD_START_BUCKETS, registry=r)
        self.eta_ratio = Histogram(
            "switchyard_gateway_cold_start_eta_ratio",
            "Each measured cold start divided by the ETA the gateway gave when it began (1 is exact)",
            LANE, buckets=ETA_RATIO_BUCKETS, registry=r)
        self.dead_letters = Counter(
            "switchyard_gateway_dead_letters",
            "Items failed after using up their attempts (maxAttempts), per lane, from JetStream's advisories",
            LANE, registry=r)
        self.circuit_state = Gauge(
            "switchyard_gateway_circuit_state",
            "Circuit breaker of a lane in this gateway process (spec.circuitBreaker): 0 closed, 1 half-open, "
            "2 open; only lanes that have seen a worker failure", LANE, registry=r)
        self.circuit_opened = Counter(
            "switchyard_gateway_circuit_opened",
            "Times a circuit opened (consecutive worker failures, or a failed half-open probe), by scope: the "
            "lane's own, or one tenant's on the lane (its requests alone failed)", [*LANE, "scope"], registry=r)
        self.ready = Gauge(
            "switchyard_gateway_ready", "1 when /readyz answers 200: NATS connected and a routing table loaded",
            registry=r)
        self.nats_connected = Gauge(
            "switchyard_gateway_nats_connected", "1 when the NATS connection is up", registry=r)
        self.config_epoch = Gauge(
            "switchyard_gateway_config_epoch", "Epoch of the routing table being served", registry=r)
        self.deprecated_key_requests = Counter(
            "switchyard_gateway_deprecated_key_requests",
            "Requests authenticated by a key being rotated out (spec.auth.apiKeys[].rotation), before its "
            "sunset; key names come from the Gateway, so the labels stay bounded", ["tenant", "key"], registry=r)
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
        self.watch_relists = Counter(
            "switchyard_gateway_watch_relists", "Cluster mode: full lists of a watched kind (configmap, "
            "endpointslices, leases): the first, then one per broken watch", ["informer"], registry=r)
        self.tls_expiry = Gauge(
            "switchyard_gateway_tls_certificate_expiry_timestamp_seconds",
            "Unix time the TLS certificate now served expires, by file (absent without TLS)", ["cert"], registry=r)
        self.tls_reloads = Counter(
            "switchyard_gateway_tls_reloads", "Changed TLS certificate files, by outcome (loaded, rejected)",
            ["outcome"], registry=r)
