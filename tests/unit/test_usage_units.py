"""Usage accounting without NATS: the anomaly rule on a synthetic clock, the totals, CSV and the query's bounds.

The ledger, the gateways and the workers are exercised for real in tests/integration/test_usage.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import msgpack
import pytest

from switchyard.errors import ApiError
from switchyard.gateway.usage_anomaly import AnomalyRule, Detector
from switchyard.gateway.usage_api import group_by, parse_time, time_range, to_csv
from switchyard.gateway.usage_totals import COUNTS, Aggregate
from switchyard.messages import Result, UsageRecord, WorkItem
from switchyard.subjects import usage_subject
from switchyard.worker.config import visible_gpus
from switchyard.worker.usage import usage_record

RULE = AnomalyRule(window_s=300, baseline_s=3600, factor=10, min_requests=100)


def steady(detector: Detector, per_minute: int, minutes: int, start: float = 0.0, key: str = "k") -> list[object]:
    """`per_minute` requests a minute, evenly spread, for `minutes`: what the detector raised."""
    raised = []
    for i in range(per_minute * minutes):
        found = detector.add("t", key, start + i * 60.0 / per_minute)
        if found is not None:
            raised.append(found)
    return raised


def test_steady_traffic_is_never_an_anomaly() -> None:
    d = Detector(RULE)
    # 60 a minute for 3 hours: 300 per window, far past the minimum volume, but no jump.
    assert steady(d, 60, 180) == []


def test_a_tenfold_burst_over_the_baseline_is_one_anomaly() -> None:
    d = Detector(RULE)
    assert steady(d, 10, 70) == []  # 50 per window: the baseline
    raised = steady(d, 100, 10, start=70 * 60.0)  # 10x for 10 minutes: one episode, one anomaly
    assert len(raised) == 1
    anomaly = raised[0]
    assert anomaly.requests >= 500 and anomaly.baseline == pytest.approx(50, rel=0.1)  # type: ignore[attr-defined]
    assert anomaly.msg_id.startswith("usage.anomaly.t.k.")  # type: ignore[attr-defined]


def test_a_ninefold_rise_is_not_an_anomaly() -> None:
    d = Detector(RULE)
    assert steady(d, 20, 70) == []  # 100 per window
    assert steady(d, 150, 10, start=70 * 60.0) == []  # 750 per window: 7.5x


def test_a_quiet_key_below_the_minimum_volume_is_not_flagged() -> None:
    d = Detector(RULE)
    assert steady(d, 1, 70) == []  # one a minute: 5 per window
    # From 5 to 99 requests in a window: 20 times its baseline, but under min_requests.
    assert steady(d, 19, 5, start=70 * 60.0) == []
    # Past the minimum, it is.
    assert len(steady(d, 30, 5, start=75 * 60.0)) == 1


def test_a_new_key_has_no_baseline_until_it_was_seen_for_a_window() -> None:
    d = Detector(RULE)
    # A new key's (or a key silent for window + baseline) first traffic is not judged against nothing.
    assert steady(d, 200, 10) == []
    assert steady(d, 200, 10, start=5 * 3600.0) == []
    # Seen for long enough at a low rate, the same burst is an anomaly.
    assert steady(d, 2, 20, start=10 * 3600.0) == []
    assert len(steady(d, 200, 2, start=10 * 3600.0 + 20 * 60.0)) == 1


def test_a_second_burst_after_the_first_ended_is_a_second_anomaly() -> None:
    d = Detector(RULE)
    assert steady(d, 10, 70) == []
    assert len(steady(d, 200, 3, start=70 * 60.0)) == 1
    assert steady(d, 10, 60, start=73 * 60.0) == []  # back to its rate: the episode ends
    assert len(steady(d, 1000, 2, start=133 * 60.0)) == 1


def test_keys_and_tenants_are_apart() -> None:
    d = Detector(RULE)
    assert steady(d, 10, 70, key="a") == []
    assert steady(d, 10, 70, key="b") == []
    # Another key's burst does not lift key a's window, and is its own anomaly.
    assert len(steady(d, 200, 3, start=70 * 60.0, key="b")) == 1
    assert d.add("t", "a", 73 * 60.0) is None
    assert d.add("other-tenant", "b", 73 * 60.0) is None  # tenant t's key b is not this one


def record(**kw: object) -> UsageRecord:
    base: dict[str, object] = dict(id="r1", tenant="acme", key_name="acme-key", op="encode", model="m/1",
                                   bundle="default", machine_profile="l4", pool="default", attempt=1, final=True,
                                   state="succeeded", items=3, input_tokens=10, output_tokens=20, compute_s=2.0,
                                   gpus=2.0)
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


def test_totals_count_a_request_once_and_every_attempt_s_gpu_time() -> None:
    agg = Aggregate(["model", "tenant"])  # asked in any order: the columns keep GROUPS' order
    agg.add(record(attempt=1, final=False, state="retried", input_tokens=0, output_tokens=0, compute_s=1.0))
    agg.add(record(attempt=2))
    agg.add(record(attempt=3))  # the same item ended twice (a worker died before its ack): one request
    agg.add(record(id="r2", state="failed", items=5, input_tokens=0, output_tokens=0, compute_s=0.5))
    agg.add(record(id="r3", tenant="other", key_name="other-key", state="expired", compute_s=0.0, gpus=0.0))
    rows = agg.rows()
    assert agg.columns() == ["tenant", "model", *COUNTS]
    assert rows == [
        {"tenant": "acme", "model": "m/1", "requests": 2, "items": 3, "attempts": 4, "input_tokens": 20,
         "output_tokens": 40, "compute_seconds": 5.5, "gpu_seconds": 11.0},
        {"tenant": "other", "model": "m/1", "requests": 1, "items": 0, "attempts": 1, "input_tokens": 10,
         "output_tokens": 20, "compute_seconds": 0.0, "gpu_seconds": 0.0},
    ]


def test_the_same_request_id_of_two_tenants_or_reused_later_is_two_requests() -> None:
    agg = Aggregate(["key"])
    agg.add(record(tenant="a", key_name="k"))
    agg.add(record(tenant="b", key_name="k"))
    assert agg.rows()[0]["requests"] == 2
    # A tenant reusing a request id once its dedup window passed sends a new item: it counts, and its
    # records are never dropped by the ledger as duplicates of the first item's (another Nats-Msg-Id).
    again = record(tenant="a", key_name="k", enqueued_at=1_000_000.5)
    assert again.msg_id != record(tenant="a", key_name="k").msg_id
    agg.add(again)
    assert agg.rows()[0]["requests"] == 3


def test_csv_is_rfc_4180_and_round_trips_through_the_csv_module() -> None:
    columns = ["tenant", "model", "requests"]
    rows = [{"tenant": "a", "model": 'odd,"model"\nname', "requests": 1}, {"tenant": "b", "model": "m", "requests": 2}]
    raw = to_csv(columns, rows)
    assert raw.startswith(b"tenant,model,requests\r\n") and raw.endswith(b"\r\n")
    parsed = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    assert parsed == [columns, ["a", 'odd,"model"\nname', "1"], ["b", "m", "2"]]


NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def test_range_bounds_and_bad_times() -> None:
    start, end = time_range({"from": "2026-11-24T11:00:00+01:00"}, NOW)
    assert start == dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC) and end == NOW
    assert time_range({"from": "2026-10-24T12:00:00Z", "to": "2026-11-24T12:00:00Z"}, NOW)[0].month == 10  # 31 days
    bad = [
        ({}, '"from" is required'),
        ({"from": "yesterday"}, "RFC 3339"),
        ({"from": "2026-11-24"}, "RFC 3339"),  # a date alone: whose midnight?
        ({"from": "2026-11-24T10:00:00"}, "offset"),  # no offset: the gateway's time zone would decide
        ({"from": "2026-11-24T12:00:00Z", "to": "2026-11-24T12:00:00Z"}, "must be after"),
        ({"from": "2026-10-01T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "at most 31 days"),
        ({"from": "2026-10-24T11:59:59Z", "to": "2026-11-24T12:00:00Z"}, "at most 31 days"),  # a second past it
    ]
    for query, message in bad:
        with pytest.raises(ApiError) as err:
            time_range(query, NOW)
        assert err.value.status == 400 and message in err.value.message, (query, err.value.message)
    assert parse_time("2026-11-24T12:00:00.5Z", "to").microsecond == 500_000


def test_group_by_takes_known_columns_only() -> None:
    assert group_by(None) == ["tenant"]
    assert group_by("key,machine_profile") == ["key", "machine_profile"]
    for raw in ("", "tenant,", "secret", "tenant;model"):
        with pytest.raises(ApiError) as err:
            group_by(raw)
        assert err.value.status == 400


def test_a_worker_s_record_of_an_attempt() -> None:
    item = WorkItem(id="r", op="generate", model="m", bundle="b", machine_profile="l4", pool="p",
                    items=[1, 2], tenant="acme", key_name="acme-key", enqueued_at=1_795_000_000.25)
    res = Result(id="r", ok=True, timing={"queue_ms": 5.0, "compute_ms": 1500.0},
                 usage={"input_tokens": 7, "output_tokens": -3, "other": 9})  # a handler's odd numbers
    rec = usage_record(item, res, final=True, gpus=4.0, worker="w")
    assert (rec.items, rec.input_tokens, rec.output_tokens, rec.compute_s, rec.gpu_seconds) == (2, 7, 0, 1.5, 6.0)
    assert rec.msg_id == "acme.r@1795000000250000.1" and rec.key_name == "acme-key"
    retried = usage_record(item, Result(id="r", ok=False, state="failed"), final=False, gpus=4.0, worker="w")
    assert retried.state == "retried" and retried.compute_s == 0.0
    assert UsageRecord.decode(rec.encode()) == rec
    assert usage_subject("acme") == "sy.usage.acme" and usage_subject("") == "sy.usage._5fanonymous"


def test_the_key_name_is_on_the_wire_only_when_set() -> None:
    item = WorkItem(id="r", op="encode", model="m", bundle="b", machine_profile="cpu", pool="p", items=[1])
    assert "key_name" not in msgpack.unpackb(item.encode())
    item.key_name = "k"
    assert WorkItem.decode(item.encode()).key_name == "k"


def test_gpus_from_the_device_list() -> None:
    assert visible_gpus({"NVIDIA_VISIBLE_DEVICES": "GPU-a,GPU-b"}) == 2.0
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0"}) == 1.0
    assert visible_gpus({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1"}) == 0.0  # uncountable
    assert visible_gpus({"NVIDIA_VISIBLE_DEVICES": "void"}) == 0.0
    assert visible_gpus({}) == 0.0
