"""The test node's pure parts: the kubelet's $(VAR) expansion (switchyard/testing/node.py, test code only)."""

from __future__ import annotations

from switchyard.testing.node import expand


def test_expansion_replaces_defined_names_and_keeps_the_rest() -> None:
    env = {"POD_IP": "127.244.1.2", "PORT": "8081"}
    assert expand("--health-host=$(POD_IP):$(PORT)", env) == "--health-host=127.244.1.2:8081"
    assert expand("$(UNSET) stays", env) == "$(UNSET) stays"
    assert expand("$$(POD_IP) is escaped", env) == "$(POD_IP) is escaped"
