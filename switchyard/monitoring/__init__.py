"""The Grafana dashboard and the PrometheusRule alerts, generated from code.

`python -m switchyard.monitoring` writes them into manifests/monitoring/ and the chart's
files/monitoring/; tests/unit/test_dashboard.py fails when a committed file is stale,
when a query does not parse as PromQL, or when it names a metric nothing exports.
"""
