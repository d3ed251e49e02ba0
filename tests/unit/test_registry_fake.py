"""The gateway's worker registry with a clock the test moves: heartbeats arrive as the KV bucket's
subject messages do (real nats-py Msg objects, no server), and a worker is live while its beats
keep coming, out of the live set from its first draining beat, and forgotten when long gone.
tests/integration runs the same registry against a real nats-server and real workers."""

from __future__ import annotations

import logging

import pytest
from fakes import FakeClock
from nats.aio.msg import Msg

from switchyard.gateway.registry import KV_PREFIX, Registry
from switchyard.messages import Heartbeat
from switchyard.subjects import Lane

LANE = Lane(pool="default", machine_profile="l4", bundle="default", model="org/embed")


def beat(worker: str = "w1", **kw: object) -> Heartbeat:
    fields: dict[str, object] = {"models": ["org/embed"], "bundle": "default", "machine_profile": "l4",
                                 "pool": "default", "interval_s": 2.0, **kw}
    return Heartbeat(worker_id=worker, **fields)  # type: ignore[arg-type]


def put(worker: str, hb: Heartbeat) -> Msg:
    return Msg(None, subject=f"{KV_PREFIX}{worker}", data=hb.encode())  # type: ignore[arg-type]


def delete(worker: str, op: str = "DEL") -> Msg:
    return Msg(None, subject=f"{KV_PREFIX}{worker}", data=b"", headers={"KV-Operation": op})  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_worker_is_live_while_its_beats_keep_coming(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("w1", beat()))
    assert [b.worker_id for b in reg.live()] == ["w1"] and reg.serving(LANE) == 1
    clock.advance(5.9)  # under 3 intervals since its last beat
    assert reg.serving(LANE) == 1
    clock.advance(0.2)  # past 3 intervals: stale, though its KV key may not have expired yet
    assert reg.live() == [] and reg.serving(LANE) == 0 and not reg.alive("w1")
    await reg._on_msg(put("w1", beat()))  # it beats again: live again
    assert reg.serving(LANE) == 1


async def test_the_interval_a_worker_announces_sets_its_staleness(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("slow", beat("slow", interval_s=10.0)))
    clock.advance(29)
    assert reg.serving(LANE) == 1
    clock.advance(2)
    assert reg.serving(LANE) == 0
    await reg._on_msg(put("fast", beat("fast", interval_s=0.1)))
    clock.advance(1.9)  # never judged stale before 2 s, whatever interval it claims
    assert reg.serving(LANE) == 1


async def test_a_draining_worker_takes_nothing_new_but_is_still_alive(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("w1", beat()))
    await reg._on_msg(put("w1", beat(draining=True)))
    assert reg.live() == [] and reg.serving(LANE) == 0
    assert reg.alive("w1"), "it still finishes what it holds (a stream in flight is not cut)"
    await reg._on_msg(put("sick", beat("sick", healthy=False)))
    assert reg.serving(LANE) == 0 and reg.alive("sick")


async def test_a_deleted_or_purged_key_removes_the_worker_at_once(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    for w in ("w1", "w2", "w3"):
        await reg._on_msg(put(w, beat(w)))
    await reg._on_msg(delete("w1"))
    await reg._on_msg(delete("w2", "PURGE"))
    assert [b.worker_id for b in reg.live()] == ["w3"]
    assert not reg.alive("w1")


async def test_serving_counts_only_workers_of_that_very_lane(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("a", beat("a")))
    await reg._on_msg(put("b", beat("b", machine_profile="cpu")))
    await reg._on_msg(put("c", beat("c", pool="tenant-x")))
    await reg._on_msg(put("d", beat("d", bundle="int8")))
    await reg._on_msg(put("e", beat("e", models=["org/other", "org/embed"])))
    assert reg.serving(LANE) == 2  # a and e
    assert len(reg.live()) == 5


async def test_a_bad_heartbeat_is_logged_and_changes_nothing(clock: FakeClock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("w1", beat()))
    caplog.set_level(logging.WARNING, logger="switchyard.gateway.registry")
    await reg._on_msg(Msg(None, subject=f"{KV_PREFIX}w1", data=b"\xc1 not msgpack"))  # type: ignore[arg-type]
    await reg._on_msg(Msg(None, subject=f"{KV_PREFIX}w2", data=b"\x80"))  # type: ignore[arg-type]  # {}: no fields
    assert [r.__dict__["worker_key"] for r in caplog.records if r.getMessage() == "bad heartbeat"] == ["w1", "w2"]
    assert [b.worker_id for b in reg.live()] == ["w1"], "the last good beat stands"


async def test_a_worker_long_gone_is_forgotten(clock: FakeClock) -> None:
    reg = Registry(clock=clock)
    await reg._on_msg(put("w1", beat()))
    clock.advance(61)
    reg.live()
    assert reg._workers == {}, "kept no longer than a minute past its last beat"


async def test_admit_decides_which_fresh_workers_count(clock: FakeClock) -> None:
    """Cluster mode's rule (a ready endpoint of the worker's Service) as any admit: a fresh beat that is not
    admitted serves nothing, and a stale one is not revived by admission."""
    ready = {"w1"}
    reg = Registry(clock=clock, admit=lambda hb: hb.worker_id in ready)
    await reg._on_msg(put("w1", beat("w1")))
    await reg._on_msg(put("w2", beat("w2")))
    assert [b.worker_id for b in reg.live()] == ["w1"] and reg.serving(LANE) == 1
    ready.add("w2")  # its endpoint became ready: counted from the next look, no beat needed
    assert reg.serving(LANE) == 2
    clock.advance(7)
    assert reg.serving(LANE) == 0, "admitted but stale: not live"
    assert reg.alive("w1") is False
