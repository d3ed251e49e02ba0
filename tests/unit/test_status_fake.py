"""The operator's statuses and Events, on the real reconciler over an in-memory API server (tests/unit/fakes.py):
a status is written only when it changes, Ready keeps its lastTransitionTime while it holds, and a Warning
Event is made once per change to a failing Ready. tests/k8s runs the same against a real kube-apiserver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import Call, FakeApiServer

from switchyard.operator.kube import Kube
from switchyard.operator.reconcile import Reconciler
from switchyard.operator.status import condition, ready_changed, write_status

NS = "team"
MINIMAL = Path(__file__).parent / "testdata" / "translate" / "minimal.in.yaml"
LONG_AGO = "2020-01-01T00:00:00Z"


@pytest.fixture
def api() -> FakeApiServer:
    api = FakeApiServer()
    for doc in yaml.safe_load_all(MINIMAL.read_text()):
        doc["metadata"]["namespace"] = NS
        api.put(doc)
    return api


def _ready(api: FakeApiServer, plural: str, name: str) -> dict[str, Any]:
    obj = api.get(plural, NS, name)
    assert obj is not None
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def _status_writes(api: FakeApiServer) -> list[tuple[str, str | None]]:
    return [(c.plural, c.name) for c in api.writes(sub="status")]


def _events(api: FakeApiServer) -> list[tuple[str, str]]:
    return [(e["involvedObject"]["name"], e["reason"]) for e in api.all("events", NS)]


async def test_a_pass_with_nothing_changed_writes_nothing(api: FakeApiServer) -> None:
    reconciler = Reconciler(Kube(api), "img")  # type: ignore[arg-type]  # the fake stands for ApiClient
    await reconciler.reconcile(NS)
    assert set(_status_writes(api)) == {("gateways", "edge"), ("upstreams", "echo"), ("pools", "default")}
    assert _ready(api, "upstreams", "echo")["status"] == "True"
    api.calls.clear()
    await reconciler.reconcile(NS)
    assert api.writes() == [], "a quiet namespace costs reads only"
    assert Call("LIST", "upstreams", NS, None) in api.calls


async def test_status_follows_a_change_once_and_ready_keeps_its_transition_time(api: FakeApiServer) -> None:
    reconciler = Reconciler(Kube(api), "img")  # type: ignore[arg-type]
    await reconciler.reconcile(NS)
    # Ready has held since long ago (a time no pass of this test can produce by itself).
    up = api.get("upstreams", NS, "echo")
    assert up is not None
    up["status"]["conditions"][0]["lastTransitionTime"] = LONG_AGO
    api.objects[("upstreams", NS, "echo")]["status"] = up["status"]

    up["spec"]["timeoutSeconds"] = 30  # still valid: Ready stays True, observedGeneration moves
    api.update(up)
    api.calls.clear()
    await reconciler.reconcile(NS)
    ready = _ready(api, "upstreams", "echo")
    assert (ready["status"], ready["lastTransitionTime"], ready["observedGeneration"]) == ("True", LONG_AGO, 2)
    assert ("upstreams", "echo") in _status_writes(api)
    assert _events(api) == []

    up = api.get("upstreams", NS, "echo")
    assert up is not None
    up["spec"]["operations"] = ["not-an-operation"]  # invalid: Ready flips to False
    api.update(up)
    api.calls.clear()
    await reconciler.reconcile(NS)
    ready = _ready(api, "upstreams", "echo")
    assert (ready["status"], ready["reason"]) == ("False", "Invalid")
    assert ready["lastTransitionTime"] != LONG_AGO and "spec.operations" in ready["message"]
    assert _status_writes(api).count(("upstreams", "echo")) == 1
    assert _events(api) == [("echo", "Invalid")]

    api.calls.clear()
    await reconciler.reconcile(NS)  # nothing moved: no status write, no second Event
    assert ("upstreams", "echo") not in _status_writes(api)
    assert _events(api) == [("echo", "Invalid")]


async def test_a_resource_deleted_mid_pass_is_no_failure(api: FakeApiServer) -> None:
    """write_status: a 404 (deleted since it was read) is nothing to report on."""
    reconciler = Reconciler(Kube(api), "img")  # type: ignore[arg-type]
    raw = api.get("upstreams", NS, "echo")
    assert raw is not None
    del api.objects[("upstreams", NS, "echo")]
    await write_status(reconciler.kube, raw, {"observedGeneration": 1})
    assert api.writes(sub="status")[-1] == Call("PATCH", "upstreams", NS, "echo", "status")


def test_condition_keeps_the_transition_time_only_while_the_status_holds() -> None:
    before = [{"type": "Ready", "status": "True", "reason": "Compiled", "message": "a", "lastTransitionTime": LONG_AGO}]
    held = condition("Ready", True, "Compiled", "another message", 3, before)
    assert held["lastTransitionTime"] == LONG_AGO and held["observedGeneration"] == 3
    flipped = condition("Ready", False, "Invalid", "bad", 3, before)
    assert flipped["lastTransitionTime"] != LONG_AGO
    assert condition("Ready", True, "Compiled", "x" * 40000, 1, None)["message"] == "x" * 32768


def test_ready_changed_is_about_status_reason_and_message() -> None:
    old = [{"type": "Ready", "status": "False", "reason": "Invalid", "message": "a", "lastTransitionTime": LONG_AGO}]
    assert not ready_changed(old, condition("Ready", False, "Invalid", "a", 2, old))
    assert ready_changed(old, condition("Ready", False, "Invalid", "b", 2, old))
    assert ready_changed(old, condition("Ready", False, "LeaseExpired", "a", 2, old))
    assert ready_changed(None, condition("Ready", True, "Compiled", "", 1, None))
