"""Issue 10 §1, follow-up: the failed-key limit holds across gateway replicas, and an open event stream ends
when its key stops being valid.

Three real `switchyard gateway` processes on one real nats-server, with the keys of test_key_rules and
127.0.0.1 as a trusted proxy, so X-Forwarded-For names the client IP; and one in-process gateway whose
key expires (or is removed by a reload) while its GET /v1/events stream is open.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import yaml
from cli_processes import ready, start, stop
from dataplane import copy_manifests, until
from test_key_rules import bearer, keyed_gateway, stamp, write_config

from switchyard.natsserver import NatsServer, free_port
from switchyard.subjects import AUTH_BLOCKS_SUBJECT

LIMIT = 6  # spec.auth.maxFailuresPerMinute
GUESSER = "203.0.113.7"  # the attacking client, as the trusted proxy names it


def guess(i: int, ip: str = GUESSER) -> dict[str, str]:
    return {"Authorization": f"Bearer guess-{i}-0123456789abcdef", "X-Forwarded-For": ip}


async def call(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], Any]:
    async with http.post(url + "/v1/encode/test/echo", headers=headers, json={"items": ["x"]}) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)



async def a_fresh_minute() -> None:
    """The shared count's window is the clock's minute: start the guesses with most of one left, so the
    window does not turn over in the middle of the count (a wait of at most 35 s, not an assertion)."""
    left = 60 - time.time() % 60
    if left < 35:
        await asyncio.sleep(left + 0.1)


async def test_failed_keys_are_limited_across_three_replicas(nats_server: NatsServer, tmp_path: Path) -> None:
    config = write_config(copy_manifests(tmp_path / "config"), trustedProxies=["127.0.0.1/32"],
                          maxFailuresPerMinute=LIMIT)
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    procs = [start([sys.executable, "-m", "switchyard.cli.main", "gateway", "--config-dir", str(config), "--nats",
                    nats_server.url, "--port", str(p), "--metrics-port", str(free_port())], tmp_path / f"gw{i}.log")
             for i, p in enumerate(ports)]
    try:
        async with aiohttp.ClientSession() as http:
            for i, url in enumerate(urls):
                await ready(http, url, tmp_path / f"gw{i}.log")
            await until(lambda: _listening(nats_server) == 3, 30, "every replica hears block notices")
            await a_fresh_minute()

            # Guesses from one client IP, spread over the three replicas in turn: LIMIT of them in total are
            # answered 401, not LIMIT per replica; every later one is 429 on every replica.
            answers = [await call(http, urls[i % 3], guess(i)) for i in range(3 * LIMIT)]
            statuses = [(status, body["error"]["code"]) for status, _, body in answers]
            assert statuses[:LIMIT] == [(401, "unauthorized")] * LIMIT, statuses
            assert statuses[LIMIT:] == [(429, "too_many_auth_failures")] * (2 * LIMIT), statuses
            assert all(0 < int(headers["Retry-After"]) <= 60 for _, headers, _ in answers[LIMIT:])

            # Each replica now refuses that IP's good key too (before hashing: a right guess cannot show).
            for url in urls:
                status, _, body = await call(http, url, {**bearer("plain"), "X-Forwarded-For": GUESSER})
                assert (status, body["error"]["code"]) == (429, "too_many_auth_failures")
            # A good key from another IP, or the proxy itself, is unaffected on every replica.
            for url in urls:
                assert (await call(http, url, {**bearer("plain"), "X-Forwarded-For": "198.51.100.9"}))[0] == 202
                assert (await call(http, url, bearer("plain")))[0] == 202

            # IPv6 counts per /64: addresses of one /64 share the count across the replicas.
            await a_fresh_minute()  # for this and the next count, both short
            v6 = [await call(http, urls[i % 3], guess(i, f"2001:db8:1:2::{i + 1:x}")) for i in range(LIMIT + 1)]
            assert [s for s, _, _ in v6] == [401] * LIMIT + [429]
            assert (await call(http, urls[2], {**bearer("plain"), "X-Forwarded-For": "2001:db8:1:3::1"}))[0] == 202

            # Guesses on one replica only: the others hear of the block (core NATS) and refuse that IP's good
            # key from memory, with no failure of their own from it (bounded wait for the notice).
            lone = [await call(http, urls[0], guess(200 + i, "203.0.113.8")) for i in range(LIMIT + 1)]
            assert [s for s, _, _ in lone] == [401] * LIMIT + [429]
            for url in urls[1:]:
                await until(lambda url=url: _refused(url, "203.0.113.8"), 30, "the block heard")

            # A notice on the subject, as anyone on NATS could send it: never blocks past one window, and one
            # that does not parse is dropped (the replicas keep answering).
            nc = await nats.connect(nats_server.url)
            try:
                await nc.publish(AUTH_BLOCKS_SUBJECT, b"not json")
                await nc.publish(AUTH_BLOCKS_SUBJECT, orjson.dumps({"ip": "192.0.2.99", "until": time.time() + 86_400}))
                await nc.flush()
            finally:
                await nc.close()
            await until(lambda: _refused(urls[1], "192.0.2.99"), 30, "the notice heard")
            status, headers, _ = await call(http, urls[1], {**bearer("plain"), "X-Forwarded-For": "192.0.2.99"})
            assert status == 429 and 0 < int(headers["Retry-After"]) <= 60

            # NATS away: the limit falls back to each process's own count; never unlimited, and a good key
            # from another IP is not refused for it (it gets what NATS being away means for its request).
            nats_server.stop()
            for i, url in enumerate(urls):
                await until(lambda: _not_ready(url), 30, f"replica {i} sees NATS gone")
            alone = [await call(http, urls[0], guess(100 + i, "192.0.2.50")) for i in range(LIMIT + 1)]
            assert [s for s, _, _ in alone] == [401] * LIMIT + [429], [b for _, _, b in alone]
            status, _, body = await call(http, urls[0], {**bearer("plain"), "X-Forwarded-For": "198.51.100.10"})
            assert status not in (401, 429), body
    finally:
        for proc in procs:
            stop(proc)


def _refused(url: str, ip: str) -> bool:
    """A good key from `ip` is refused as too many failures (blocking urllib: `until` takes a plain check)."""
    req = urllib.request.Request(url + "/v1/jobs/none", headers={**bearer("plain"), "X-Forwarded-For": ip})
    try:
        with urllib.request.urlopen(req, timeout=5):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 429
    except OSError:
        return False


def _listening(server: NatsServer) -> int:
    """Subscriptions to the block notices on the server (one per replica)."""
    _, subs = server.monitor(f"/subsz?subs=1&test={AUTH_BLOCKS_SUBJECT}")
    return len(subs.get("subscriptions_list") or [])


def _not_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return bool(resp.status != 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 503
    except OSError:
        return False


# -- an open event stream whose key stops being valid ---------------------------------------------


async def next_event(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    """The next SSE event's kind and data (comments and retry: lines skipped)."""
    kind, data = "", None
    while True:
        line = (await resp.content.readline()).decode()
        if not line:
            return "", None  # the stream ended
        line = line.rstrip("\n")
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            data = orjson.loads(line[len("data: "):])
        elif line == "" and kind:
            return kind, data


async def ends_with(resp: aiohttp.ClientResponse) -> tuple[str, Any]:
    """The stream's last event, once it ends (bounded: 30 s)."""
    async def last() -> tuple[str, Any]:
        seen: tuple[str, Any] = ("", None)
        while True:
            event = await next_event(resp)
            if event == ("", None):
                return seen
            seen = event
    return await asyncio.wait_for(last(), 30)


def add_key(config: Path, name: str, **fields: Any) -> None:
    docs = list(yaml.safe_load_all((config / "gateway.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["auth"]["apiKeys"].append({"name": name, "secretRef": {"name": "keys", "key": name},
                                                   **fields})
        elif doc["kind"] == "Secret":
            doc["stringData"][name] = f"{name}-key-0123456789abcdef"
    (config / "gateway.yaml").write_text(yaml.safe_dump_all(docs))


async def test_an_event_stream_ends_when_its_key_stops_being_valid(nats_server: NatsServer, tmp_path: Path) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=4)
    lenient = {"maxFailuresPerMinute": 10_000}  # the polls below for a reload are failures until it lands
    async with keyed_gateway(nats_server.url, tmp_path, **lenient) as (gw, _):
        config = tmp_path / "config"  # keyed_gateway's manifests, reloaded as they change
        write_config(config, sunset=soon, **lenient)  # "old" is rotated out in 4 s
        add_key(config, "brief", notAfter=stamp(soon))  # "brief" expires in 4 s
        add_key(config, "doomed")
        add_key(config, "moved")  # its own tenant, until the reload gives it another
        brief = {"Authorization": "Bearer brief-key-0123456789abcdef"}
        doomed = {"Authorization": "Bearer doomed-key-0123456789abcdef"}
        moved = {"Authorization": "Bearer moved-key-0123456789abcdef"}
        deadline = time.monotonic() + 30
        while (await gw.call("GET", "/v1/jobs/x", headers=doomed)).status == 401:  # until the reload has it
            assert time.monotonic() < deadline, "the new keys never loaded"
            await asyncio.sleep(0.2)

        async with gw.http.get(gw.url + "/v1/events", headers=brief) as a, \
                gw.http.get(gw.url + "/v1/events", headers=bearer("old")) as b, \
                gw.http.get(gw.url + "/v1/events", headers=doomed) as c, \
                gw.http.get(gw.url + "/v1/events", headers=bearer("plain")) as d, \
                gw.http.get(gw.url + "/v1/events", headers=moved) as e:
            assert [r.status for r in (a, b, c, d, e)] == [200] * 5
            # A reload that removes a key ends its stream; one that moves a key to another tenant ends its
            # stream too (it reads the old tenant's job events).
            docs = list(yaml.safe_load_all((config / "gateway.yaml").read_text()))
            for doc in docs:
                if doc["kind"] == "Gateway":
                    doc["spec"]["auth"]["apiKeys"] = [{**k, "tenant": "elsewhere"} if k["name"] == "moved" else k
                                                      for k in doc["spec"]["auth"]["apiKeys"] if k["name"] != "doomed"]
            (config / "gateway.yaml").write_text(yaml.safe_dump_all(docs))
            kind, data = await ends_with(c)
            assert (kind, data["error"]["code"]) == ("error", "unauthorized"), data
            assert "removed" in data["error"]["message"]
            kind, data = await ends_with(e)
            assert (kind, data["error"]["code"]) == ("error", "forbidden"), data

            # notAfter and a rotation's sunset pass while the streams are open: each ends with why.
            kind, data = await ends_with(a)
            assert (kind, data["error"]["code"]) == ("error", "key_expired"), data
            assert "'brief' expired at" in data["error"]["message"]
            kind, data = await ends_with(b)
            assert (kind, data["error"]["code"]) == ("error", "key_expired"), data
            assert "rotated out" in data["error"]["message"]
            assert time.time() >= soon.timestamp()  # not before its time

            # A key that stays valid keeps its stream: its keepalive still comes after the others ended.
            line = await asyncio.wait_for(d.content.readline(), 30)
            while line.strip() in (b"", b"retry: 1000"):
                line = await asyncio.wait_for(d.content.readline(), 30)
            assert line.startswith(b": keepalive") or line.startswith(b"id: ") or line.startswith(b"event: ")

        # Reconnecting with the expired key is refused like any request.
        r = await gw.call("GET", "/v1/events", headers=brief)
        assert (r.status, r.body["error"]["code"]) == (401, "key_expired")
