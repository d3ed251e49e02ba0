"""The policy chain (spec.policy): limits, quotas, concurrency and transforms, exact across gateway replicas.

chain.py    the chain, the stage protocol and the entry-point extension point (group switchyard.policy)
stages.py   the built-in stages: limits, defaults
ledger.py   the counters in the JetStream KV bucket sy_limits (compare-and-set, leased blocks)
windows.py  fixed windows and calendar quotas
headers.py  RateLimit-Policy / RateLimit
engine.py   one gateway's policy: what the inference core calls

See docs/policy.md.
"""

from .chain import ENTRY_POINT_GROUP, PolicyRequest, Stage, Ticket
from .engine import PolicyEngine

__all__ = ["ENTRY_POINT_GROUP", "PolicyEngine", "PolicyRequest", "Stage", "Ticket"]
