"""PromQL checks with a real parser (the `promql-parser` package, a port of Prometheus's grammar).

Grafana fills its variables in before Prometheus sees a query: `expand` does the same
with representative values, so what is parsed is what Prometheus would be sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the `test` extra: only the checks import it
    import promql_parser

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*"}


def expand(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    return expr


def parse(expr: str) -> promql_parser.Expr:
    """The parsed expression; ValueError with the parser's message when it is not valid PromQL."""
    import promql_parser  # the `test` extra: only the checks need it

    return promql_parser.parse(expand(expr))


def metric_names(exprs: Iterable[str]) -> set[str]:
    """Every metric name the expressions select, read from their syntax trees."""
    import promql_parser

    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            return
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                visit(child)
        for arg in getattr(node, "args", None) or ():
            visit(arg)

    for expr in exprs:
        visit(parse(expr))
    return names


SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",),
            "untyped": ("",), "unknown": ("",)}


def exported_names(scrape: str) -> set[str]:
    """The series names a /metrics page offers: each family's name with its type's suffixes.

    A labelled family with no child yet has no sample, but its HELP and TYPE say the
    process exports it: a query naming it is right, and reads nothing until it happens.
    """
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(scrape):
        names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names
