"""Priority classes and fair share without NATS: the subject layout, the worker's turns, the class of a
request, and what reads the layout (dead letters, KEDA demand, queue positions)."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from switchyard.api.table import KeyRoute, PriorityRoute
from switchyard.deadletters import dead_subject
from switchyard.errors import ApiError
from switchyard.gateway.priority import priority_class
from switchyard.gateway.progress import Entry, LaneScan
from switchyard.gateway.scaler import Target
from switchyard.messages import JobRecord, WorkItem
from switchyard.subjects import (
    ANONYMOUS_TENANT,
    Lane,
    Queue,
    consumer_name,
    queue_subject,
    ring_subject,
    work_subject_of_ring,
)
from switchyard.worker.fairness import Turns

LANE = Lane("BAAI/bge-m3", "default", "l4", "default")


def test_a_queue_is_the_lane_subject_plus_class_and_tenant_tokens() -> None:
    q = LANE.queue("high", "team.a")
    assert q == "sy.work.default.l4.default.BAAI_2fbge-m3.high.team_2ea"
    assert Lane.from_subject(q) == LANE and Lane.from_subject(LANE.subject) == LANE
    assert Queue.from_subject(q) == Queue(q, "high", "team.a")
    assert Queue.from_subject(LANE.subject) == Queue(LANE.subject, "normal", "")  # older gateways' items
    assert LANE.queue("normal", "") == LANE.subject + ".normal." + "_5fanonymous"  # no key: the anonymous tenant
    assert ANONYMOUS_TENANT == "_anonymous"
    for bad in ("sy.work.a.b.c", "sy.work.a.b.c.d.e", "sy.work.a.b.c.d.e.f.g", "sy.dead.a.b.c.d.e.f"):
        with pytest.raises(ValueError):
            Queue.from_subject(bad)
    with pytest.raises(ValueError):
        Lane.from_subject("sy.work.a.b.c.d.e")


def test_a_tenant_or_class_can_never_add_a_token_or_a_wildcard() -> None:
    q = LANE.queue("high", "a.*.>")
    assert q.count(".") == 7 and "*" not in q and ">" not in q
    assert Queue.from_subject(q).tenant == "a.*.>"


def test_publishing_to_a_lane_goes_to_the_items_queue_and_rings_it() -> None:
    assert queue_subject(LANE.subject, "low", "t") == LANE.queue("low", "t")
    assert queue_subject(LANE.queue("low", "t"), "high", "u") == LANE.queue("low", "t")  # a dead letter's, kept
    ring = ring_subject(LANE.queue("low", "t"))
    assert ring.startswith("_sy.ring.") and work_subject_of_ring(ring) == LANE.queue("low", "t")
    assert consumer_name(LANE.subject) == LANE.consumer and consumer_name(LANE.queue("low", "t")) != LANE.consumer
    assert len(consumer_name(LANE.queue("low", "t" * 60))) == len(LANE.consumer)


def test_turns_serve_classes_in_order_and_tenants_in_turn() -> None:
    turns = Turns()
    a, b = Queue.from_subject(LANE.queue("normal", "a")), Queue.from_subject(LANE.queue("normal", "b"))
    low, high = Queue.from_subject(LANE.queue("low", "a")), Queue.from_subject(LANE.queue("high", "c"))
    for q in (low, a, b, a):  # a second add of a queue in line changes nothing
        turns.add(q)
    assert len(turns) == 3
    assert [turns.next() for _ in range(4)] == [a, b, a, b]  # low waits while normal has items
    turns.add(high)
    assert turns.next() == high and turns.next() == high
    turns.discard(high)
    turns.discard(a)
    turns.discard(b)
    assert turns.next() == low
    turns.discard(low)
    assert turns.next() is None and not turns
    odd = Queue.from_subject(LANE.queue("urgent", "a"))  # a class this worker does not know: after low
    assert odd.rank > low.rank


def test_the_class_comes_from_the_tier_or_an_allowed_header() -> None:
    class Table:  # the one field priority_class reads
        priority = PriorityRoute(MappingProxyType({"gold": "high", "free": "low"}), ("pro",))

    def key(tier: str) -> KeyRoute:
        return KeyRoute("k", "0" * 64, None, None, tier=tier)

    table = Table()
    assert priority_class(table, None, None) == "normal"  # type: ignore[arg-type]
    assert priority_class(table, key("gold"), None) == "high"  # type: ignore[arg-type]
    assert priority_class(table, key("free"), None) == "low"  # type: ignore[arg-type]
    assert priority_class(table, key("default"), None) == "normal"  # type: ignore[arg-type]
    assert priority_class(table, key("pro"), " High ") == "high"  # type: ignore[arg-type]
    for k in (key("gold"), key("default"), None):
        with pytest.raises(ApiError) as err:
            priority_class(table, k, "high")  # type: ignore[arg-type]
        assert err.value.code == "forbidden" and "X-Priority" in err.value.message
    with pytest.raises(ApiError) as err:
        priority_class(table, key("pro"), "x" * 500)  # type: ignore[arg-type]
    assert err.value.code == "bad_request" and len(err.value.message) < 200


def test_the_class_is_on_the_wire_only_when_not_normal() -> None:
    item = WorkItem("r", "encode", "m", "b", "cpu", "p", [1])
    assert b"priority" not in item.encode()
    item.priority = "high"
    assert WorkItem.decode(item.encode()).priority == "high"


def test_a_lane_has_one_dead_letter_subject_whatever_the_queue() -> None:
    assert dead_subject(LANE.queue("low", "t")) == dead_subject(LANE.subject) == "sy.dead" + LANE.subject[7:]


def test_keda_demand_counts_the_lane_and_every_queue_of_it() -> None:
    target = Target(model="BAAI/bge-m3", machine_profile="l4")
    other = Lane("other", "default", "l4", "default")
    counts = {LANE.subject: 1, LANE.queue("low", "a"): 2, LANE.queue("high", "b"): 3, other.queue("low", "a"): 7,
              other.subject: 5}
    assert target.demand(counts) == 6


def test_positions_follow_the_order_workers_serve() -> None:
    def job(tenant: str, job_id: str, cls: str = "normal", state: str = "queued") -> Entry:
        return Entry(f"{tenant}.{job_id}", JobRecord(id=job_id, state=state, model="m", tenant=tenant),
                     LANE.queue(cls, tenant))

    scan = LaneScan([job("a", "1"), job("a", "2"), job("a", "3", state="running"), job("a", "4"),
                     job("b", "1"), job("c", "1", "low"), job("c", "2", "high")], complete=True)
    # high first; then a and b in turn (a's running item is not ahead of anyone); low last
    assert scan.positions() == {"c.2": 0, "a.1": 1, "b.1": 2, "a.2": 3, "a.4": 4, "c.1": 5}


def test_the_priority_examples_in_the_docs_are_valid_gateway_specs() -> None:
    import re
    from pathlib import Path

    import yaml

    from switchyard.api.gateway import GatewaySpec

    docs = Path(__file__).resolve().parents[2] / "docs"
    blocks = [b for name in ("fairness.md", "policy.md")
              for b in re.findall(r"```yaml\n(.*?)```", (docs / name).read_text(), re.S) if "priority:" in b]
    assert len(blocks) == 2
    for block in blocks:
        spec = GatewaySpec.model_validate(yaml.safe_load(block)["spec"])
        assert spec.priority.tiers and spec.priority.header_tiers
