"""/v1/pools in standalone mode, tried as a hostile tenant would, and the SDK's pool calls.

Real nats-server, the production gateway app (pools in the `sy_pools` KV bucket,
compiled into the table with the manifests directory) and the production worker
runtime. The keys: the test manifests' (admin, tenant, ...) plus `team-a` and
`team-a-2` (one tenant, managePools), `team-b` (managePools) and `a-user` (tenant
team-a, no managePools). Limits: 4 workers per pool, 2 pools per tenant, ttl <= 600 s.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from dataplane import ADMIN, gateway, kill, until, worker_process
from limits_manifests import manifests_with

from switchyard.client import (
    AsyncClient,
    Client,
    Forbidden,
    PoolExists,
    PoolExpired,
    PoolProtected,
    PoolTooLarge,
    TooManyPools,
    UnknownPool,
)
from switchyard.natsserver import NatsServer
from switchyard.subjects import Lane

KEYS = {"team-a": "team-a-key-0123456789abcdef", "team-a-2": "team-a-2-key-0123456789abcd",
        "team-b": "team-b-key-0123456789abcdef", "a-user": "a-user-key-0123456789abcdef",
        "limited": "limited-key-0123456789abcdef"}
A, A2, B, A_USER = ({"Authorization": f"Bearer {KEYS[k]}"} for k in ("team-a", "team-a-2", "team-b", "a-user"))
LIMITS = {"maxWorkersPerPool": 4, "maxPoolsPerTenant": 2, "maxTtlSeconds": 600}


def pool_manifests(tmp_path: Path) -> Path:
    """The test manifests, plus pool-managing keys and spec.poolApi limits (the shared directory stays as is)."""
    base = yaml.safe_load_all((Path(__file__).parent / "manifests" / "gateway.yaml").read_text())
    keys = next(d for d in base if d["kind"] == "Gateway")["spec"]["auth"]["apiKeys"]
    keys += [
        {"name": "team-a", "secretRef": {"name": "pool-keys", "key": "team-a"}, "managePools": True},
        {"name": "team-a-2", "secretRef": {"name": "pool-keys", "key": "team-a-2"}, "tenant": "team-a",
         "managePools": True},
        {"name": "team-b", "secretRef": {"name": "pool-keys", "key": "team-b"}, "managePools": True},
        {"name": "a-user", "secretRef": {"name": "pool-keys", "key": "a-user"}, "tenant": "team-a"},
        {"name": "limited", "secretRef": {"name": "pool-keys", "key": "limited"}, "managePools": True,
         "pools": ["tenant"]},
    ]
    directory = manifests_with(tmp_path, gateway={"auth": {"apiKeys": keys}, "poolApi": LIMITS})
    (directory / "pool-keys.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pool-keys"}, "stringData": KEYS}))
    return directory


def body(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "gpus": {"cpu": 1}, "models": ["test/echo"], "ttl_seconds": 60, **kw}


async def test_lifecycle_create_get_list_renew_delete(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        created = await gw.call("POST", "/v1/pools", headers=A, json=body("alpha", gpus={"l4": 2},
                                                                          models=["test/gpu"]))
        assert created.status == 201, created.body
        view = created.body
        assert (view["name"], view["tenant"], view["models"], view["gpus"], view["ttl_seconds"], view["state"]) == \
            ("alpha", "team-a", ["test/gpu"], {"l4": 2}, 60, "active")
        assert view["workers"] == {"l4": {"reserved": 2, "ready": 0}} and view["expires_at"].endswith("Z")
        # An identical re-POST (a retry) answers 200 with the same pool; a key of the same tenant may too.
        again = await gw.call("POST", "/v1/pools", headers=A2, json=body("alpha", gpus={"l4": 2},
                                                                         models=["test/gpu"]))
        assert again.status == 200 and again.body["expires_at"] == view["expires_at"]
        got = await gw.call("GET", "/v1/pools/alpha", headers=A2)
        assert got.status == 200 and got.body == view
        listed = await gw.call("GET", "/v1/pools", headers=A)
        names = [p["name"] for p in listed.body["pools"]]
        assert "alpha" in names and "default" in names  # default: a shared pool its key may use
        renewed = await gw.call("POST", "/v1/pools/alpha/renew", headers=A)
        assert renewed.status == 200 and renewed.body["expires_at"] > view["expires_at"]
        # The table serves the pool: pinned requests resolve to it.
        await until(lambda: "alpha" in gw.state.holder.table.pools, 10, "pool compiled into the table")
        lane = await gw.call("POST", "/v1/configs/resolve", headers=A,
                             json={"model": "test/gpu", "machine_profile": "alpha/l4"})
        assert lane.status == 200 and lane.body["pool"] == "alpha", lane.body
        deleted = await gw.call("DELETE", "/v1/pools/alpha", headers=A)
        assert deleted.status == 200 and deleted.body == {"name": "alpha", "deleted": True}
        gone = await gw.call("GET", "/v1/pools/alpha", headers=A)
        assert gone.status == 404 and gone.body["error"]["code"] == "unknown_pool"
        await until(lambda: "alpha" not in gw.state.holder.table.pools, 10, "pool left the table")
        # The name is free again.
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("alpha"))).status == 201


async def test_a_pool_worker_serves_pinned_requests_of_its_tenant_only(nats_server: NatsServer,
                                                                      tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("reserved"))).status == 201
        # `switchyard worker --pool reserved`, as its own process.
        proc = worker_process(nats_server.url, "switchyard.worker.handlers:echo", "test/echo",
                              "--pool", "reserved", "--machine-profile", "cpu")
        try:
            await gw.wait_for_workers(Lane("test/echo", "default", "cpu", "reserved"), timeout=30)
            [beat] = [b for b in gw.state.registry.live() if b.pool == "reserved"]
            served = await gw.call("POST", "/v1/encode/test/echo", headers={**A_USER, "X-Pool": "reserved"},
                                   json={"items": [{"text": "mine"}]})
            assert served.status == 200, served.body
            assert served.body["items"] == [{"text": "mine"}] and served.body["worker"] == beat.worker_id
            view = (await gw.call("GET", "/v1/pools/reserved", headers=A)).body
            assert view["workers"] == {"cpu": {"reserved": 1, "ready": 1}}
            # Another tenant cannot send work there: the same 404 as a pool that does not exist.
            for hdrs in ({"X-Pool": "reserved"}, {"X-Machine-Profile": "reserved/cpu"}):
                theirs = await gw.call("POST", "/v1/encode/test/echo", headers={**B, **hdrs},
                                       json={"items": [{"text": "theirs"}]})
                never = await gw.call("POST", "/v1/encode/test/echo", headers={**B, "X-Pool": "no-such"},
                                      json={"items": [{"text": "theirs"}]})
                assert theirs.status == never.status == 404
                assert theirs.body["error"]["code"] == never.body["error"]["code"] == "unknown_pool"
            # Unpinned work of the default pool never reaches the pool's worker: it waits (202).
            default = await gw.call("POST", "/v1/encode/test/echo", headers=A, json={"items": [{"text": "d"}]})
            assert default.status == 202, default.body
        finally:
            kill(proc)


async def test_another_tenant_can_neither_see_renew_nor_delete_a_pool(nats_server: NatsServer,
                                                                      tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("secret"))).status == 201
        for method, path in [("GET", "/v1/pools/secret"), ("POST", "/v1/pools/secret/renew"),
                             ("DELETE", "/v1/pools/secret")]:
            theirs = await gw.call(method, path, headers=B)
            never = await gw.call(method, path.replace("secret", "never-made"), headers=B)
            assert theirs.status == never.status == 404, (method, theirs.body)
            assert theirs.body["error"]["code"] == never.body["error"]["code"] == "unknown_pool"
        assert "secret" not in [p["name"] for p in (await gw.call("GET", "/v1/pools", headers=B)).body["pools"]]
        # Taking its name: 409, whatever the spec.
        taken = await gw.call("POST", "/v1/pools", headers=B, json=body("secret"))
        assert taken.status == 409 and taken.body["error"]["code"] == "pool_exists"
        # Still there, still team-a's; an admin sees and manages every tenant's pools.
        assert (await gw.call("GET", "/v1/pools/secret", headers=A)).body["tenant"] == "team-a"
        assert (await gw.call("GET", "/v1/pools/secret", headers=ADMIN)).status == 200
        for_b = await gw.call("POST", "/v1/pools", headers=ADMIN, json=body("for-b", tenant="team-b"))
        assert for_b.status == 201 and for_b.body["tenant"] == "team-b"
        assert (await gw.call("GET", "/v1/pools/for-b", headers=B)).status == 200
        assert (await gw.call("DELETE", "/v1/pools/secret", headers=ADMIN)).status == 200


async def test_keys_without_manage_pools_get_403(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("a-pool"))).status == 201
        for method, path, payload in [("POST", "/v1/pools", body("mine")), ("GET", "/v1/pools", None),
                                      ("GET", "/v1/pools/a-pool", None), ("POST", "/v1/pools/a-pool/renew", None),
                                      ("DELETE", "/v1/pools/a-pool", None)]:
            r = await gw.call(method, path, headers=A_USER, json=payload)
            assert r.status == 403 and r.body["error"]["code"] == "forbidden", (method, path, r.body)
            assert "managePools" in r.body["error"]["message"]
        no_key = await gw.call("GET", "/v1/pools")
        assert no_key.status == 401
        # Only admin keys may name another tenant.
        r = await gw.call("POST", "/v1/pools", headers=A, json=body("for-b", tenant="team-b"))
        assert r.status == 403 and "tenant" in r.body["error"]["message"]
        # A key limited to listed pools could never use a pool it made: refused up front.
        limited = await gw.call("POST", "/v1/pools", headers={"Authorization": f"Bearer {KEYS['limited']}"},
                                json=body("unusable"))
        assert limited.status == 403 and "may use only the pools it lists" in limited.body["error"]["message"]


@pytest.mark.parametrize("payload, status, code, says", [
    (body("x" * 64), 400, "bad_request", "DNS label"),
    (body("Upper"), 400, "bad_request", "DNS label"),
    (body("a.b"), 400, "bad_request", "DNS label"),
    ({"gpus": {"cpu": 1}}, 400, "bad_request", "name is required"),
    (body("p", extra=1), 400, "bad_request", "unknown field 'extra'"),
    (body("p", gpus={}), 400, "bad_request", "gpus is required"),
    (body("p", gpus={"cpu": -1}), 400, "bad_request", "gpus.cpu"),
    (body("p", gpus={"cpu": "2"}), 400, "bad_request", "gpus.cpu"),
    (body("p", gpus={"cpu": True}), 400, "bad_request", "gpus.cpu"),
    (body("p", gpus={"h100": 1}), 400, "unknown_machine_profile", "h100"),
    (body("p", gpus={"l4": 1}), 400, "unknown_machine_profile", "reserve nothing"),
    (body("p", models=["no/such"]), 404, "unknown_model", "no/such"),
    (body("p", models=["test/echo", "test/echo"]), 400, "bad_request", "twice"),
    (body("p", models="test/echo"), 400, "bad_request", "list"),
    (body("p", gpus={"cpu": 5}), 422, "pool_too_large", "maxWorkersPerPool (4)"),
    (body("p", gpus={"cpu": 10**9}), 422, "pool_too_large", "maxWorkersPerPool"),
    (body("p", gpus={"cpu": 10**30}), 400, "bad_request", "gpus.cpu"),  # past 64 bits: not a whole number
    # 3 workers per model on cpu x 2 models offering cpu = 6 > 4
    (body("p", gpus={"cpu": 3}, models=["test/echo", "test/slow"]), 422, "pool_too_large", "6 workers"),
    (body("p", ttl_seconds=0), 400, "bad_request", "maxTtlSeconds"),
    (body("p", ttl_seconds=601), 400, "bad_request", "1 to 600"),
    (body("p", ttl_seconds=1.5), 400, "bad_request", "ttl_seconds"),
    (body("default"), 409, "pool_exists", "default"),
    (body("tenant"), 409, "pool_exists", "tenant"),  # declared in the manifests
    ([body("p")], 400, "bad_request", "JSON object"),
])
async def test_bad_pools_are_refused_with_clear_errors(nats_server: NatsServer, tmp_path: Path, payload: Any,
                                                       status: int, code: str, says: str) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        r = await gw.call("POST", "/v1/pools", headers=A, json=payload)
        assert (r.status, r.body["error"]["code"]) == (status, code), r.body
        assert says in r.body["error"]["message"], r.body
        assert (await gw.call("GET", "/v1/pools/p", headers=A)).status == 404  # nothing was made


async def test_limits_protection_and_expiry(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        deleted = await gw.call("DELETE", "/v1/pools/default", headers=ADMIN)
        assert deleted.status == 409 and deleted.body["error"]["code"] == "pool_protected"
        declared = await gw.call("DELETE", "/v1/pools/tenant", headers=ADMIN)
        assert declared.status == 409 and declared.body["error"]["code"] == "pool_protected"
        assert (await gw.call("POST", "/v1/pools/default/renew", headers=ADMIN)).status == 409
        # Two pools per tenant, counted across the tenant's keys.
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("one"))).status == 201
        assert (await gw.call("POST", "/v1/pools", headers=A2, json=body("two", ttl_seconds=1))).status == 201
        third = await gw.call("POST", "/v1/pools", headers=A, json=body("three"))
        assert third.status == 409 and third.body["error"]["code"] == "too_many_pools"
        assert "maxPoolsPerTenant (2)" in third.body["error"]["message"]
        # Another tenant is not bound by team-a's count.
        assert (await gw.call("POST", "/v1/pools", headers=B, json=body("b-one"))).status == 201
        # A lapsed lease: the pool's requests answer 410, and a renewal does not revive it.
        await until(lambda: gw.state.source.pool_expired("two") is not None, 10, "pool 'two' lapsed")
        pinned = await gw.call("POST", "/v1/encode/test/echo", headers={**A, "X-Pool": "two"},
                               json={"items": [{"text": "late"}]})
        assert pinned.status == 410 and pinned.body["error"]["code"] == "pool_expired", pinned.body
        assert (await gw.call("GET", "/v1/pools/two", headers=A)).body["state"] == "expired"
        renew = await gw.call("POST", "/v1/pools/two/renew", headers=A)
        assert renew.status == 410 and renew.body["error"]["code"] == "pool_expired"
        again = await gw.call("POST", "/v1/pools", headers=A, json=body("two", ttl_seconds=1))
        assert again.status == 409 and "delete it" in again.body["error"]["message"]
        # Deleting it frees the tenant's slot.
        assert (await gw.call("DELETE", "/v1/pools/two", headers=A)).status == 200
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("three"))).status == 201


async def test_replicas_share_pools_and_limits(nats_server: NatsServer, tmp_path: Path) -> None:
    directory = pool_manifests(tmp_path)
    async with gateway(nats_server.url, directory) as one, gateway(nats_server.url, directory) as two:
        assert (await one.call("POST", "/v1/pools", headers=A, json=body("shared"))).status == 201
        # The other replica routes to it (its table compiled it from the bucket) and reports it.
        await until(lambda: "shared" in two.state.holder.table.pools, 15, "replica two sees the pool")
        assert (await two.call("GET", "/v1/pools/shared", headers=A)).body["tenant"] == "team-a"
        assert (await two.call("POST", "/v1/pools", headers=A, json=body("second"))).status == 201
        # The count is read from the bucket, not from the replica's memory.
        third = await one.call("POST", "/v1/pools", headers=A, json=body("third"))
        assert third.status == 409 and third.body["error"]["code"] == "too_many_pools"
        assert (await two.call("DELETE", "/v1/pools/shared", headers=A)).status == 200
        await until(lambda: "shared" not in one.state.holder.table.pools, 15, "replica one drops the pool")


async def test_concurrent_creates_on_two_replicas_never_pass_the_limit(nats_server: NatsServer,
                                                                      tmp_path: Path) -> None:
    directory = pool_manifests(tmp_path)
    async with gateway(nats_server.url, directory) as one, gateway(nats_server.url, directory) as two:
        assert (await one.call("POST", "/v1/pools", headers=A, json=body("first"))).status == 201
        for round_ in range(5):  # one slot left: at most one of each pair of racing creates gets it
            a, b = await asyncio.gather(one.call("POST", "/v1/pools", headers=A, json=body(f"x{round_}")),
                                        two.call("POST", "/v1/pools", headers=A2, json=body(f"y{round_}")))
            assert sorted([a.status, b.status]) in ([201, 409], [409, 409]), (a.body, b.body)
            mine = [p["name"] for p in (await one.call("GET", "/v1/pools", headers=A)).body["pools"]
                    if p["tenant"] == "team-a"]
            assert len(mine) <= LIMITS["maxPoolsPerTenant"], mine
            for name in mine:
                if name != "first":
                    assert (await one.call("DELETE", f"/v1/pools/{name}", headers=A)).status == 200


async def test_a_renewal_recompiles_nothing(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("steady"))).status == 201
        await until(lambda: "steady" in gw.state.holder.table.pools, 10, "pool in the table")
        reloads = gw.state.metrics.config_reloads
        before = {o: reloads.labels(o)._value.get() for o in ("applied", "unchanged", "rejected")}
        epoch = gw.state.holder.table.epoch
        for _ in range(5):
            assert (await gw.call("POST", "/v1/pools/steady/renew", headers=A)).status == 200
        after = {o: reloads.labels(o)._value.get() for o in ("applied", "unchanged", "rejected")}
        assert after == before and gw.state.holder.table.epoch == epoch


async def test_a_pool_survives_a_gateway_restart(nats_server: NatsServer, tmp_path: Path) -> None:
    directory = pool_manifests(tmp_path)
    async with gateway(nats_server.url, directory) as gw:
        assert (await gw.call("POST", "/v1/pools", headers=A, json=body("durable"))).status == 201
    async with gateway(nats_server.url, directory) as gw:
        await until(lambda: "durable" in gw.state.holder.table.pools, 15, "pool reloaded from the bucket")
        assert (await gw.call("GET", "/v1/pools/durable", headers=A)).status == 200


# -- the SDK -------------------------------------------------------------------------------


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "switchyard-client"]


async def test_sdk_sync_client_renews_until_delete_and_leaks_no_thread(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        assert not _client_threads()
        proc = worker_process(nats_server.url, "switchyard.worker.handlers:echo", "test/echo",
                              "--pool", "sdk-sync", "--machine-profile", "cpu")

        def scenario() -> None:
            with Client(gw.url, KEYS["team-a"]) as sy:
                info = sy.create_pool("sdk-sync", {"cpu": 1}, models=["test/echo"], ttl_s=3)
                assert info.active and info.reserved("cpu") == 1 and sy.renewing() == ["sdk-sync"]
                # Pinned through the SDK's gpu="pool/profile": served by the pool's worker.
                deadline = time.monotonic() + 30
                while sy.get_pool("sdk-sync").ready("cpu") < 1:
                    assert time.monotonic() < deadline, "the pool's worker never became ready"
                    time.sleep(0.1)
                assert sy.encode("test/echo", ["pinned"], gpu="sdk-sync/cpu").items == [{"text": "pinned"}]
                assert sy.encode("test/echo", ["pinned"], pool="sdk-sync").items == [{"text": "pinned"}]
                # The background renewal moves the lease on, and keeps it live past its TTL.
                deadline = time.monotonic() + 20
                while sy.get_pool("sdk-sync").expires_at <= info.expires_at:
                    assert time.monotonic() < deadline, "never renewed"
                    time.sleep(0.2)
                time.sleep(4)  # more than the TTL
                assert sy.get_pool("sdk-sync").state == "active"
                assert "sdk-sync" in [p.name for p in sy.list_pools()]
                with pytest.raises(PoolExists):  # another spec under the same name
                    sy.create_pool("sdk-sync", {"cpu": 2}, ttl_s=3, renew=False)
                sy.delete_pool("sdk-sync")
                assert sy.renewing() == []
                with pytest.raises(UnknownPool):
                    sy.get_pool("sdk-sync")
                # A pool still renewed at close() stops being renewed with the client.
                sy.create_pool("sdk-closed", {"cpu": 1}, ttl_s=2)
                assert sy.renewing() == ["sdk-closed"]

        try:
            await asyncio.to_thread(scenario)
        finally:
            kill(proc)
        assert not _client_threads(), "the client's background thread outlived close()"
        await until(lambda: gw.state.source.pool_expired("sdk-closed") is not None, 15, "the unrenewed pool lapses")


async def test_sdk_async_client_errors_and_renewal_task(nats_server: NatsServer, tmp_path: Path) -> None:
    async with gateway(nats_server.url, pool_manifests(tmp_path)) as gw:
        async with AsyncClient(gw.url, KEYS["team-a"], max_retries=0) as sy:
            info = await sy.create_pool("sdk-async", {"cpu": 1}, ttl_s=3)
            assert info.tenant == "team-a" and info.workers == {"cpu": {"reserved": 1, "ready": 0}}
            task = sy._renewers["sdk-async"]
            with pytest.raises(PoolTooLarge):
                await sy.create_pool("huge", {"cpu": 50})
            await sy.create_pool("second", {"cpu": 1}, renew=False)
            with pytest.raises(TooManyPools):
                await sy.create_pool("third", {"cpu": 1}, renew=False)
            with pytest.raises(PoolProtected):
                await sy.delete_pool("default")
            await sy.delete_pool("sdk-async")
            assert task.done() and sy.renewing() == []
            brief = await sy.create_pool("brief", {"cpu": 1}, ttl_s=1, renew=False)
            await until(lambda: gw.state.source.pool_expired("brief") is not None, 10, "pool lapsed")
            with pytest.raises(PoolExpired):
                await sy.renew_pool(brief.name)
        async with AsyncClient(gw.url, KEYS["a-user"]) as plain:
            with pytest.raises(Forbidden):
                await plain.list_pools()
        async with AsyncClient(gw.url, KEYS["team-b"]) as sy:
            closing = await sy.create_pool("closing", {"cpu": 1}, ttl_s=3)
            task = sy._renewers["closing"]
            assert closing.active and not task.done()
        assert task.cancelled()  # close() ended the renewal task
