"""Dead letters against real NATS, gateway and workers: an item that fails on its last attempt is
kept with its error, attempts and worker; admins list, inspect and re-queue it, and the re-queued
job succeeds under the same id with its history kept."""

from __future__ import annotations

import asyncio
from typing import Any

from dataplane import ADMIN, ECHO, gateway, job_final, worker

from switchyard.natsserver import NatsServer

OTHER = {"Authorization": "Bearer other-key-0123456789abcdef"}


async def test_a_dead_letter_is_kept_listed_and_requeued_until_it_succeeds(nats_server: NatsServer) -> None:
    broken = {"on": True}

    def flaky(items: list[Any], ctx: Any) -> list[Any]:
        if broken["on"]:
            raise RuntimeError("secret path /etc/x")  # never shown to clients: the error has an id instead
        return items

    async with gateway(nats_server.url) as gw, worker(nats_server.url, flaky, nak_delay_s=0.05,
                                                      worker_id="w-dead") as _:
        await gw.wait_for_workers(ECHO)
        # A sync request from tenant "other" and a job from the admin both die after 3 attempts.
        sync = await gw.call("POST", "/v1/encode/test/echo", headers={**OTHER, "X-Request-ID": "dl-sync"},
                             json={"items": [{"n": 1}]})
        assert sync.status == 502 and sync.body["error"]["code"] == "worker_error"
        assert (await gw.infer(headers={"Prefer": "respond-async", "X-Request-ID": "dl-job"})).status == 202
        assert (await job_final(gw, "dl-job")).body["state"] == "failed"

        async def letters() -> list[dict[str, Any]]:
            r = await gw.call("GET", "/v1/deadletters", headers=ADMIN)
            assert r.status == 200, r.body
            return r.body["dead_letters"]

        for _ in range(100):
            found = await letters()
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
        assert sorted((d["tenant"], d["job_id"]) for d in found) == [("admin", "dl-job"), ("other", "dl-sync")]
        for d in found:
            assert d["attempts"] == 3 and d["max_attempts"] == 3 and d["worker"] == "w-dead"
            assert d["error"]["code"] == "worker_error" and "secret" not in str(d) and "items" not in d
        sync_letter = next(d for d in found if d["job_id"] == "dl-sync")

        # Tenants cannot see dead letters (they hold every tenant's items).
        for method, path in (("GET", "/v1/deadletters"), ("GET", f"/v1/deadletters/{sync_letter['id']}")):
            r = await gw.call(method, path, headers=OTHER)
            assert r.status == 403 and r.body["error"]["code"] == "forbidden"
        r = await gw.call("POST", "/v1/deadletters/requeue", headers=OTHER, json={"ids": [sync_letter["id"]]})
        assert r.status == 403
        one = await gw.call("GET", f"/v1/deadletters/{sync_letter['id']}", headers=ADMIN)
        assert one.status == 200 and one.body["items"] == [{"n": 1}]
        assert (await gw.call("GET", "/v1/deadletters?model=test/gpu", headers=ADMIN)).body["dead_letters"] == []
        assert len((await gw.call("GET", "/v1/deadletters?model=test/echo&limit=1", headers=ADMIN)).body[
            "dead_letters"]) == 1
        for bad in ({"ids": []}, {"ids": ["1"]}, {"ids": [0]}, {"ids": [True]}, {"ids": list(range(1, 102))},
                    {"ids": [1], "all": True}, [1]):
            r = await gw.call("POST", "/v1/deadletters/requeue", headers=ADMIN, json=bad)
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", bad
        assert (await gw.call("GET", "/v1/deadletters/999999", headers=ADMIN)).status == 404
        assert (await gw.call("GET", "/v1/deadletters?limit=0", headers=ADMIN)).status == 400

        broken["on"] = False
        ids = [d["id"] for d in found]
        r = await gw.call("POST", "/v1/deadletters/requeue", headers=ADMIN, json={"ids": [*ids, 999999]})
        assert r.status == 200
        outcome = {x["id"]: x for x in r.body["requeued"]}
        assert all(outcome[i]["requeued"] for i in ids) and outcome[999999]["requeued"] is False

        # The sync request's item is now a job of its tenant (its first caller is gone), same id.
        done = (await job_final(gw, "dl-sync", headers=OTHER)).body
        assert done["state"] == "succeeded" and done["result"]["items"] == [{"n": 1}]
        assert [h["state"] for h in done["history"]] == ["failed"] and done["history"][0]["attempt"] == 3
        job = (await job_final(gw, "dl-job")).body
        assert job["state"] == "succeeded" and len(job["history"]) == 1
        assert job["history"][0]["error"]["code"] == "worker_error"
        assert await letters() == []  # re-queued letters leave the stream
        again = await gw.call("POST", "/v1/deadletters/requeue", headers=ADMIN, json={"ids": ids[:1]})
        assert again.body["requeued"][0]["requeued"] is False
        assert 'switchyard_gateway_dead_letters_total{' in await gw.metrics()
