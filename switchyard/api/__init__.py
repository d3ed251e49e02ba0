"""Resource models (`switchyard.dev/v1alpha1`) and the compile step: the single source of truth."""

from .compile import CompileResult, compile_table, hash_key
from .gateway import Gateway, GatewaySpec
from .issues import CompileError, ConfigIssue
from .loader import KINDS, ResourceSet, load_dir, parse_objects
from .meta import API_VERSION, GROUP, VERSION, Condition, ObjectMeta
from .planner import Planner, PlannerSpec
from .pool import DEFAULT_POOL, Pool, PoolSpec
from .secret import Secret
from .table import RoutingTable
from .upstream import Upstream, UpstreamSpec

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "KINDS", "DEFAULT_POOL",
    "Condition", "ObjectMeta", "Gateway", "GatewaySpec", "Upstream", "UpstreamSpec",
    "Pool", "PoolSpec", "Planner", "PlannerSpec", "Secret",
    "ResourceSet", "load_dir", "parse_objects",
    "CompileResult", "CompileError", "ConfigIssue", "RoutingTable", "compile_table", "hash_key",
]
