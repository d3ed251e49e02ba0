"""Leader election on a Lease, over an in-memory API server and a clock the test moves (tests/unit/fakes.py):
acquire, renew, a live lease respected, takeover once it lapses as seen locally, two candidates never both
winning, an unreachable API server, and the release at shutdown. tests/k8s runs two real operators."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fakes import FakeApiServer, FakeClock

from switchyard.operator.election import LeaderElection
from switchyard.operator.kube import Kube
from switchyard.operator.metrics import OperatorMetrics

NS = "switchyard-system"
LEASE_S, RENEW_S = 15, 5.0


def candidate(api: FakeApiServer, identity: str, clock: FakeClock, **kw: object) -> LeaderElection:
    return LeaderElection(Kube(api), NS, identity, lease_s=LEASE_S, renew_s=RENEW_S,  # type: ignore[arg-type]
                          clock=clock, **kw)  # type: ignore[arg-type]


def lease(api: FakeApiServer) -> dict:  # type: ignore[type-arg]
    obj = api.get("leases", NS, "switchyard-operator")
    assert obj is not None
    return obj["spec"]  # type: ignore[no-any-return]


async def test_acquire_renew_and_a_live_lease_is_respected() -> None:
    api, clock = FakeApiServer(), FakeClock()
    elected: list[str] = []

    async def on_elected() -> None:
        elected.append("a")

    metrics = OperatorMetrics()
    a = candidate(api, "a", clock, on_elected=on_elected, metrics=metrics)
    b = candidate(api, "b", clock)
    await a.step()
    assert a.is_leader and elected == ["a"] and metrics.leader._value.get() == 1
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("a", LEASE_S, 0)
    acquired = spec["acquireTime"]

    await b.step()
    assert not b.is_leader
    clock.advance(RENEW_S)
    await a.step()  # a renewal: same holder, same acquireTime, no transition
    spec = lease(api)
    assert (spec["holderIdentity"], spec["acquireTime"], spec["leaseTransitions"]) == ("a", acquired, 0)
    assert a.is_leader and elected == ["a"], "on_elected runs once per election, not per renewal"

    clock.advance(LEASE_S - 1)  # b has seen a's lease renewed less than lease_s ago: still a's
    await b.step()
    assert not b.is_leader and lease(api)["holderIdentity"] == "a"


async def test_a_lapsed_lease_is_taken_over_and_the_old_leader_steps_down(caplog: pytest.LogCaptureFixture) -> None:
    api, clock = FakeApiServer(), FakeClock()
    a, b = candidate(api, "a", clock), candidate(api, "b", clock)
    await a.step()
    await b.step()  # b notes the lease as it is now
    clock.advance(LEASE_S + 1)  # a stopped renewing (a paused or partitioned process)
    await b.step()
    assert b.is_leader
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("b", 1)

    caplog.set_level(logging.INFO, logger="switchyard.operator.election")
    await a.step()  # a comes back: it sees b's live lease and stops acting
    assert not a.is_leader
    assert any(r.getMessage() == "lost leadership" and r.__dict__["identity"] == "a" for r in caplog.records)


async def test_two_candidates_at_once_never_both_win() -> None:
    api, clock = FakeApiServer(), FakeClock()
    a, b = candidate(api, "a", clock), candidate(api, "b", clock)
    await asyncio.gather(a.step(), b.step())  # both find no lease and create it: one gets 409
    assert [a.is_leader, b.is_leader].count(True) == 1
    loser = b if a.is_leader else a
    assert lease(api)["holderIdentity"] != loser.identity
    await loser.step()  # it sees the lease now (it had only failed to create one)

    # The lease lapses as the other sees it, and both replace it from the same resourceVersion (the
    # holder renewing, the other taking over): one gets 409 Conflict, whichever it is.
    clock.advance(LEASE_S + 1)
    await asyncio.gather(a.step(), b.step())
    assert [a.is_leader, b.is_leader].count(True) == 1
    assert lease(api)["holderIdentity"] == (a if a.is_leader else b).identity
    assert sum(1 for c in api.writes() if c.method == "PUT") >= 2, "both wrote; one was refused"


async def test_an_unreachable_api_server_keeps_the_leader_only_while_its_lease_must_hold() -> None:
    api, clock = FakeApiServer(), FakeClock()
    a = candidate(api, "a", clock)
    await a.step()
    api.down = True
    clock.advance(RENEW_S)
    await a.step()
    assert a.is_leader, "renewed lease_s - renew_s ago at most: nobody else can have it yet"
    clock.advance(LEASE_S - 2 * RENEW_S)  # lease_s - renew_s since the last renewal
    await a.step()
    assert not a.is_leader, "another replica may take it over from now on: stop acting"
    api.down = False
    await a.step()
    assert a.is_leader, "still its holder: it renews and acts again"


async def test_release_hands_the_lease_to_a_standby_at_once() -> None:
    api, clock = FakeApiServer(), FakeClock()
    a, b = candidate(api, "a", clock), candidate(api, "b", clock)
    await a.step()
    await b.step()
    await a.release()
    assert not a.is_leader
    spec = lease(api)
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    await b.step()  # no holder: no need to wait for the lease to lapse
    assert b.is_leader and lease(api)["holderIdentity"] == "b"


async def test_release_with_the_api_server_away_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    api, clock = FakeApiServer(), FakeClock()
    a = candidate(api, "a", clock)
    await a.step()
    api.down = True
    caplog.set_level(logging.WARNING, logger="switchyard.operator.election")
    await a.release()
    assert any(r.getMessage() == "could not release the lease" for r in caplog.records)
