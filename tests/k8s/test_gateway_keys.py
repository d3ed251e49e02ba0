"""API keys' rules in cluster mode: the Gateway CRD takes every field (the API server validates them against
the generated schema), the operator compiles them into the routing ConfigMap, and a gateway reading it
applies them (issue 10 §1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cluster import ROOT, Proc, get, operator, wait

from switchyard.contracts import TABLE_KEY
from switchyard.natsserver import NatsServer, free_port
from switchyard.testing import http
from switchyard.testing.controlplane import ControlPlane

SECRETS = {"old": "sy-old-key-0123456789abcdef", "new": "sy-new-key-0123456789abcdef",
           "expired": "sy-expired-key-0123456789ab", "fenced": "sy-fenced-key-0123456789abc"}


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def keys(now: datetime) -> list[dict[str, Any]]:
    ref = lambda n: {"name": "switchyard-demo-key", "key": n}  # noqa: E731
    return [
        {"name": "old", "secretRef": ref("old"), "tenant": "acme", "tier": "pro", "operations": ["encode"],
         "scopes": ["readAllJobs"], "allowedCidrs": ["127.0.0.0/8", "::1/128"],
         "rotation": {"successor": "new", "sunsetAt": stamp(now + timedelta(hours=1))}},
        {"name": "new", "secretRef": ref("new"), "tenant": "acme", "notBefore": stamp(now - timedelta(hours=1))},
        {"name": "expired", "secretRef": ref("expired"), "notAfter": stamp(now - timedelta(hours=1))},
        {"name": "fenced", "secretRef": ref("fenced"), "allowedCidrs": ["192.0.2.0/24"]},
    ]


def table_keys(cp: ControlPlane, ns: str) -> dict[str, dict[str, Any]]:
    cm = get(cp, ns, "configmap", "main-routing")
    return {k["name"]: k for k in json.loads(cm["data"][TABLE_KEY])["keys"]} if cm else {}


def test_keys_rules_reach_the_table_and_the_gateway(installed: ControlPlane, namespace: str, tmp_path: Path,
                                                    nats: NatsServer) -> None:
    cp, ns = installed, namespace
    op = operator(cp, tmp_path, "op-keys", ns)
    gateway = None
    try:
        cp.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples"), check=True)
        wait(lambda: get(cp, ns, "configmap", "main-routing"), 30, "routing ConfigMap")
        cp.kubectl("patch", "secret", "switchyard-demo-key", "-n", ns, "--type=merge", "-p",
                   json.dumps({"stringData": SECRETS}), check=True)
        gw = get(cp, ns, "gateway", "main")
        assert gw is not None
        patch = {"spec": {"auth": {"apiKeys": gw["spec"]["auth"]["apiKeys"] + keys(datetime.now(UTC)),
                                   "trustedProxies": ["10.0.0.0/8"], "maxFailuresPerMinute": 20}}}
        cp.kubectl("patch", "gateway", "main", "-n", ns, "--type=merge", "-p", json.dumps(patch), check=True)
        compiled = wait(lambda: (k := table_keys(cp, ns)).get("fenced") and k, 60, "the keys in the routing table")
        old = compiled["old"]
        assert old["tier"] == "pro" and old["operations"] == ["encode"] and old["scopes"] == ["readAllJobs"]
        assert old["allowedCidrs"] == ["127.0.0.0/8", "::1/128"] and old["rotation"]["successor"] == "new"
        assert "notBefore" in compiled["new"] and "notAfter" in compiled["expired"]
        table = json.loads(get(cp, ns, "configmap", "main-routing")["data"][TABLE_KEY])
        assert table["auth"] == {"trustedProxies": ["10.0.0.0/8"], "maxFailuresPerMinute": 20}

        # The API server refuses what the schema can say is wrong; the rest the operator reports.
        bad = cp.kubectl("patch", "gateway", "main", "-n", ns, "--type=merge", "-p", json.dumps(
            {"spec": {"auth": {"apiKeys": [
                *keys(datetime.now(UTC)),
                {"name": "x", "secretRef": {"name": "switchyard-demo-key", "key": "key"}, "scopes": ["root"]}]}}}))
        assert bad.returncode != 0 and "scopes" in bad.stderr

        sa_kubeconfig = cp.service_account_kubeconfig(ns, "main-gateway")
        port = free_port()
        gateway = Proc(["gateway", "--configmap", "main-routing", "--namespace", ns, "--kubeconfig",
                        str(sa_kubeconfig), "--nats", nats.url, "--port", str(port), "--metrics-port",
                        str(free_port()), "--log-level", "INFO"], tmp_path / "gateway.log")
        url = f"http://127.0.0.1:{port}"
        wait(lambda: http.status(f"{url}/readyz") == 200, 30, "gateway ready")
        encode = f"{url}/v1/encode/switchyard/echo"
        status, body = http.call(encode, SECRETS["expired"], {"items": [1]})
        assert (status, body["error"]["code"]) == (401, "key_expired")
        status, body = http.call(encode, SECRETS["fenced"], {"items": [1]})
        assert (status, body["error"]["code"]) == (403, "ip_not_allowed")
        status, body = http.call(f"{url}/v1/score/BAAI/bge-m3", SECRETS["old"], {"items": [1]})
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert http.call(encode, SECRETS["old"], {"items": [1]})[0] == 202
        assert http.call(encode, SECRETS["new"], {"items": [1]})[0] == 202
    finally:
        if gateway is not None:
            gateway.kill()
        op.kill()
