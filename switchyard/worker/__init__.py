"""Switchyard worker runtime: what GPU workers import.

    from switchyard.worker import WorkerConfig, serve
    asyncio.run(serve(WorkerConfig(nats_url=..., model="BAAI/bge-m3", handler=encode)))
"""

from ..extras import require

require("worker", "switchyard.worker")  # a clear message naming the extra, not a bare ModuleNotFoundError

from .config import WorkerConfig, default_worker_id, kv_key
from .context import Context
from .errors import PermanentError, TransientError
from .loader import inline, load_handler
from .runtime import Worker, serve

__all__ = [
    "Context", "PermanentError", "TransientError", "Worker", "WorkerConfig", "default_worker_id",
    "inline", "kv_key", "load_handler", "serve",
]
