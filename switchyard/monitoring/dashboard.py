"""The Grafana dashboard, as typed panels rendered to Grafana's JSON model (schemaVersion 39).

A small generator instead of grafana-foundation-sdk: the dashboard needs rows, time
series and stat panels, and every query is plain PromQL that a test parses and checks
against a live /metrics; a dozen dataclasses say that with no dependency to track.
Rate windows use Grafana's $__rate_interval; cold starts are rare, so their panels
read fixed windows (1h, 6h) instead, or they would be empty most of the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UID = "switchyard-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
RI = "$__rate_interval"
WIDTH = 24  # Grafana's grid


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    height: int = 8

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        return {
            "id": panel_id, "type": self.kind, "title": self.title, "description": self.description,
            "datasource": DS, "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}} if self.kind == "timeseries" else
                       {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area", "textMode": "auto"},
            "targets": [{"datasource": DS, "expr": q.expr, "legendFormat": q.legend, "refId": chr(ord("A") + i)}
                        for i, q in enumerate(self.queries)],
        }


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    title: str
    rows: tuple[Row, ...]
    variables: tuple[str, ...] = field(default=("switchyard_gateway_config_epoch",))

    def expressions(self) -> list[str]:
        """Every PromQL query of the dashboard, the namespace variable's included."""
        return [q.expr for row in self.rows for p in row.panels for q in p.queries] + list(self.variables)

    def to_json(self) -> dict[str, Any]:
        panels: list[dict[str, Any]] = []
        y, next_id = 0, 1
        for row in self.rows:
            panels.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False,
                           "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []})
            next_id, y, x, line = next_id + 1, y + 1, 0, 0
            for p in row.panels:
                if x + p.width > WIDTH:
                    x, y, line = 0, y + line, 0
                panels.append(p.to_json(next_id, x, y))
                next_id, x, line = next_id + 1, x + p.width, max(line, p.height)
            y += line
        return {
            "uid": UID, "title": self.title, "tags": ["switchyard"], "editable": True, "schemaVersion": 39,
            "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "", "graphTooltip": 1,
            "annotations": {"list": []}, "links": [],
            "templating": {"list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0},
                {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
                 "query": {"query": f"label_values({self.variables[0]}, namespace)", "refId": "namespaces"},
                 "definition": f"label_values({self.variables[0]}, namespace)", "refresh": 2,
                 "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "hide": 0, "sort": 1},
            ]},
            "panels": panels,
        }


def _rate(metric: str, by: str, match: str = "") -> str:
    sel = f"{{{NS}{', ' + match if match else ''}}}"
    return f"sum by ({by}) (rate({metric}{sel}[{RI}]))"


def _quantile(q: float, metric: str, by: str, window: str = RI) -> str:
    fn = "rate" if window == RI else "increase"
    return f"histogram_quantile({q}, sum by ({by}, le) ({fn}({metric}_bucket{{{NS}}}[{window}])))"


FIVE_XX = 'status=~"5.."'
ERRORS = "switchyard_gateway_errors_total"
LIMIT_CODES = "payload_too_large|too_deep|queue_full|too_many_pools|pool_too_large"
AUTH_CODES = "unauthorized|key_expired|key_not_yet_valid|ip_not_allowed|too_many_auth_failures|api_key_in_url"
LANE_GROUP = "namespace, pool, machine_profile, bundle"
FLEET = "namespace, pool, machine_profile, bundle, model"
FLEET_LEGEND = "{{model}} · {{machine_profile}} · {{pool}}/{{bundle}}"
GROUP_LEGEND = "{{machine_profile}} · {{pool}}/{{bundle}}"


def dashboard() -> Dashboard:
    req = "switchyard_gateway_requests_total"
    lat = "switchyard_gateway_request_latency_seconds"
    return Dashboard("Switchyard", rows=(
        Row("Requests", (
            Panel("Request rate by endpoint", "HTTP requests per second, every status, by route.",
                  (Query(_rate(req, "endpoint"), "{{endpoint}}"),), unit="reqps", width=8),
            Panel("Request rate by machine profile", "Inference requests per second by the machine profile "
                  "(GPU type) they resolved to; empty profile: not an inference request or refused first.",
                  (Query(_rate(req, "machine_profile"), "{{machine_profile}}"),), unit="reqps", width=8),
            Panel("Error ratio by machine profile", "Share of requests answered 5xx. 502/504 come from workers "
                  "(failed, timed out); 503 from the gateway (queue full, NATS or the routing table not ready).",
                  (Query(_rate(req, "machine_profile", match=FIVE_XX) + " / " + _rate(req, "machine_profile"),
                         "{{machine_profile}}"),),
                  unit="percentunit", width=8),
            Panel("Latency p50 / p99 by endpoint", "Time from the request's arrival to its answer at the gateway; "
                  "a 202 answers early, so slow cold starts do not show here.",
                  (Query(_quantile(0.5, lat, "endpoint"), "p50 {{endpoint}}"),
                   Query(_quantile(0.99, lat, "endpoint"), "p99 {{endpoint}}")), unit="s"),
            Panel("Latency p99 by machine profile", "p99 of inference requests per machine profile.",
                  (Query(_quantile(0.99, lat, "machine_profile"), "{{machine_profile}}"),), unit="s"),
            Panel("Time to first token p50 / p99 by model", "Streamed requests: from the item being queued to "
                  "its first chunk handed to the client (worker pickup, the handler's own first chunk, transport).",
                  (Query(_quantile(0.5, "switchyard_gateway_time_to_first_token_seconds", "model"), "p50 {{model}}"),
                   Query(_quantile(0.99, "switchyard_gateway_time_to_first_token_seconds", "model"),
                         "p99 {{model}}")), unit="s"),
            Panel("Errors by endpoint and status", "4xx and 5xx answers per second.",
                  (Query(_rate(req, "endpoint, status", match='status=~"[45].."'), "{{status}} {{endpoint}}"),),
                  unit="reqps"),
            Panel("Errors by code", "Error answers per second by their error.code (docs/api.md): tells a "
                  "503 queue_full from a 503 not_ready or queue_unavailable.",
                  (Query(_rate(ERRORS, "endpoint, code"), "{{code}} {{endpoint}}"),), unit="reqps"),
        )),
        Row("Fleets", (
            Panel("Pending demand per lane group", "Items stored on the lanes of a (pool, machine profile, "
                  "bundle): queued or in flight. KEDA scales each fleet on the same count.",
                  (Query(f"max by ({LANE_GROUP}) (switchyard_gateway_pending_demand{{{NS}}})", GROUP_LEGEND),)),
            Panel("Live workers per fleet", "Workers sending healthy heartbeats per (pool, machine profile, "
                  "bundle, model); 0 after a fleet scaled to zero.",
                  (Query(f"max by ({FLEET}) (switchyard_gateway_workers_live{{{NS}}})", FLEET_LEGEND),)),
            Panel("In-flight items per machine profile", "Items the live workers report holding.",
                  (Query(f"sum by (namespace, machine_profile) (max by (namespace, worker, machine_profile) "
                         f"(switchyard_gateway_worker_in_flight{{{NS}}}))", "{{machine_profile}}"),), width=24),
        )),
        Row("Cold starts", (
            Panel("Cold start, median and p90 (6h)", "From the first 202 on a lane no worker serves until a "
                  "worker is live there, per fleet, over the last 6 hours.",
                  (Query(_quantile(0.5, "switchyard_gateway_cold_start_seconds", FLEET, "6h"), "p50 " + FLEET_LEGEND),
                   Query(_quantile(0.9, "switchyard_gateway_cold_start_seconds", FLEET, "6h"), "p90 " + FLEET_LEGEND)),
                  unit="s", width=8),
            Panel("Cold starts (1h)", "Cold starts measured in the last hour, per fleet.",
                  (Query(f"sum by ({FLEET}) (increase(switchyard_gateway_cold_start_seconds_count{{{NS}}}[1h]))",
                         FLEET_LEGEND),), width=8),
            Panel("ETA accuracy: measured / ETA (6h)", "Each cold start divided by the ETA the gateway gave "
                  "(Retry-After, estimated_wait_s) when it began: 1 is exact, above 1 the ETA was too low.",
                  (Query(f"sum by ({FLEET}) (increase(switchyard_gateway_cold_start_eta_ratio_sum{{{NS}}}[6h])) / "
                         f"sum by ({FLEET}) (increase(switchyard_gateway_cold_start_eta_ratio_count{{{NS}}}[6h]))",
                         "mean " + FLEET_LEGEND),), width=8),
        )),
        Row("Queue", (
            Panel("Oldest item age per lane group", "Age of the oldest item stored on the group's lanes: "
                  "queued, or in flight and not yet acked.",
                  (Query(f"max by ({LANE_GROUP}) (switchyard_gateway_queue_oldest_age_seconds{{{NS}}})",
                         GROUP_LEGEND),), unit="s", width=8),
            Panel("Work stream usage of its limits", "Bytes stored vs spec.queue.maxBytes, and the fullest "
                  "lane vs spec.queue.maxMessagesPerLane. At 100% new work gets 503 queue_full.",
                  (Query(f"max by (namespace, resource) (switchyard_gateway_stream_used{{{NS}}}) / "
                         f"max by (namespace, resource) (switchyard_gateway_stream_limit{{{NS}}})", "{{resource}}"),),
                  unit="percentunit", width=8),
            Panel("Dead letters per lane", "Items failed after using up maxAttempts, per second.",
                  (Query(_rate("switchyard_gateway_dead_letters_total", FLEET), FLEET_LEGEND),), width=8),
        )),
        Row("Circuit breakers", (
            Panel("Circuit state per lane", "spec.circuitBreaker per lane, the worst over gateway processes: "
                  "0 closed, 1 half-open (probes let through), 2 open (503 circuit_open). Lanes appear after "
                  "their first worker failure.",
                  (Query(f"max by ({FLEET}) (switchyard_gateway_circuit_state{{{NS}}})", FLEET_LEGEND),)),
            Panel("Circuits opened", "Circuits opened per lane in the last hour, by scope: the lane's own, or "
                  "one tenant's on it (only that tenant's requests failed).",
                  (Query(f"sum by ({FLEET}, scope) (increase(switchyard_gateway_circuit_opened_total{{{NS}}}[1h]))",
                         FLEET_LEGEND + " ({{scope}})"),)),
        )),
        Row("Limits hit", (
            Panel("Refused requests by limit", "Requests refused at a limit, by error code: payload_too_large "
                  "(maxRequestBodyBytes or NATS max_payload), too_deep (JSON nesting), queue_full (spec.queue), "
                  "too_many_pools and pool_too_large (spec.poolApi).",
                  (Query(_rate(ERRORS, "code", match=f'code=~"{LIMIT_CODES}"'), "{{code}}"),),
                  unit="reqps", width=8),
            Panel("Connections refused and slow clients", "Connections closed at once past maxConnections, "
                  "and those closed for a slow client by phase (headers, body, idle).",
                  (Query(f"sum(rate(switchyard_gateway_http_connections_refused_total{{{NS}}}[{RI}]))",
                         "refused: maxConnections"),
                   Query(_rate("switchyard_gateway_http_timeouts_total", "phase"), "timeout: {{phase}}")),
                  unit="cps", width=8),
            Panel("Open connections and disconnects", "Open HTTP connections per gateway; clients gone before "
                  "their answer (the work still runs).",
                  (Query(f"sum by (instance) (switchyard_gateway_http_connections{{{NS}}})", "open {{instance}}"),
                   Query(f"sum(rate(switchyard_gateway_client_disconnects_total{{{NS}}}[{RI}]))", "disconnects/s")),
                  width=8),
        )),
        Row("API keys", (
            Panel("Refused keys by code", "Requests refused by the key check (docs/security.md#api-keys): unknown "
                  "or missing keys, keys outside their window or CIDRs, client IPs held back for guessing, keys "
                  "in the URL. A jump in too_many_auth_failures is someone guessing.",
                  (Query(_rate(ERRORS, "code", match=f'code=~"{AUTH_CODES}"'), "{{code}}"),), unit="reqps"),
            Panel("Keys being rotated out, still in use", "Requests authenticated by a key past which a "
                  "successor is named (rotation), before its sunset: its clients have yet to move.",
                  (Query(_rate("switchyard_gateway_deprecated_key_requests_total", "tenant, key"),
                         "{{tenant}} / {{key}}"),), unit="reqps"),
        )),
        Row("Usage", (
            Panel("GPU-seconds by tenant", "GPUs held per second by each tenant's items (handler wall time x the "
                  "worker's GPUs, every attempt, from the usage ledger): 2 means two GPUs busy on its work. "
                  "Per key, and for billing: GET /v1/usage (docs/usage.md).",
                  (Query(_rate("switchyard_usage_gpu_seconds_total", "tenant"), "{{tenant}}"),), width=6),
            Panel("Tokens by tenant", "Tokens handlers reported per second (ctx.usage), input and output.",
                  (Query(_rate("switchyard_usage_tokens_total", "tenant, direction"), "{{tenant}} {{direction}}"),),
                  width=6),
            Panel("Requests and items by tenant", "Work items that ended (any outcome) and the inputs of those "
                  "that succeeded, per second, from the usage ledger.",
                  (Query(_rate("switchyard_usage_requests_total", "tenant"), "requests {{tenant}}"),
                   Query(_rate("switchyard_usage_items_total", "tenant"), "items {{tenant}}")), unit="reqps", width=6),
            Panel("Usage anomalies (1h)", "A key's requests in 5 minutes past 10 times its trailing hour "
                  "(spec.usage.anomaly), per tenant; the usage.anomaly event names the key.",
                  (Query(f"sum by (tenant) (increase(switchyard_usage_anomalies_total{{{NS}}}[1h]))", "{{tenant}}"),),
                  width=6),
        )),
        Row("Gateways and operator", (
            Panel("Gateways ready", "Gateways whose /readyz answers 200 (NATS connected, routing table "
                  "loaded), of those scraped.",
                  (Query(f"sum(switchyard_gateway_ready{{{NS}}})", "ready"),
                   Query(f"count(switchyard_gateway_ready{{{NS}}})", "scraped")), kind="stat", width=6),
            Panel("NATS connected", "1 per gateway while its NATS connection is up.",
                  (Query(f"min by (instance) (switchyard_gateway_nats_connected{{{NS}}})", "{{instance}}"),),
                  width=6),
            Panel("Config epoch", "Routing table epoch each gateway serves: replicas agree within seconds of "
                  "a change; rejected reloads keep the previous table.",
                  (Query(f"max by (instance) (switchyard_gateway_config_epoch{{{NS}}})", "{{instance}}"),
                   Query(_rate("switchyard_gateway_config_reloads_total", "outcome"), "reloads {{outcome}}")),
                  width=6),
            Panel("Operator", "Replicas holding the leader Lease (1 when healthy) and namespace passes per "
                  "second by outcome.",
                  (Query("sum(switchyard_operator_leader)", "leaders"),
                   Query(f"sum by (outcome) (rate(switchyard_operator_reconciles_total[{RI}]))", "passes {{outcome}}")),
                  width=6),
        )),
        Row("TLS", (
            Panel("Certificate expiry", "Time left on the certificate each gateway serves (spec.listeners.tls); "
                  "a rotated Secret is picked up without a restart, so this rises again after a renewal.",
                  (Query(f"min by (instance) (switchyard_gateway_tls_certificate_expiry_timestamp_seconds{{{NS}}})"
                         " - time()", "{{instance}}"),), unit="s"),
            Panel("Certificate reloads", "Certificate files reloaded by outcome: rejected means the new pair did "
                  "not load and the previous one is still served.",
                  (Query(_rate("switchyard_gateway_tls_reloads_total", "outcome"), "{{outcome}}"),), unit="ops"),
        )),
    ))
