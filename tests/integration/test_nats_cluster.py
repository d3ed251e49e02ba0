"""A 3-node JetStream cluster of real nats-servers on loopback: replicated queue, server lists, leader loss."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from dataplane import ADMIN, ECHO, GatewayUnderTest, copy_manifests, gateway, job_final, until, worker
from nats.aio.client import Client as NATS

from switchyard.gateway.app import Listen, new_state, start
from switchyard.gateway.config import DirectoryConfig, directory
from switchyard.natsserver import NatsCluster, NatsServer, free_port, nats_server_binary
from switchyard.subjects import COLDSTART_BUCKET, JOBS_BUCKET, WORK_STREAM, WORKERS_BUCKET, Lane

ROOT = Path(__file__).resolve().parents[2]
STREAMS = (WORK_STREAM, f"KV_{WORKERS_BUCKET}", f"KV_{JOBS_BUCKET}", f"KV_{COLDSTART_BUCKET}")
GPU = Lane("test/gpu", "default", "l4", "default")  # no worker until a test starts one: the 202 path


def echo(items: list[Any], ctx: Any) -> list[Any]:
    return items


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    with NatsCluster(3) as c:
        yield c


def manifests(dest: Path, nats_url: str, replicas: int) -> Path:
    """The test manifests with the Gateway's NATS url and queue replicas set."""
    conf = copy_manifests(dest)
    set_queue_replicas(conf, replicas, nats_url)
    return conf


def set_queue_replicas(conf: Path, replicas: int, nats_url: str | None = None) -> None:
    path = conf / "gateway.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = next(d for d in docs if d["kind"] == "Gateway")["spec"]
    spec.setdefault("queue", {})["replicas"] = replicas
    if nats_url:
        spec.setdefault("nats", {})["url"] = nats_url
    path.write_text(yaml.safe_dump_all(docs))


@asynccontextmanager
async def client(url: str) -> AsyncIterator[NATS]:
    async def quiet(exc: Exception) -> None:  # a killed server's reconnect attempts are expected
        pass

    nc = await nats.connect(servers=url.split(","), reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                            connect_timeout=2, error_cb=quiet)
    try:
        yield nc
    finally:
        await nc.close()


async def replicas(nc: NATS, streams: tuple[str, ...] = STREAMS) -> dict[str, tuple[int, int]]:
    """Per stream (work stream and the KV streams): configured replicas, and copies that are current."""
    js = nc.jetstream(timeout=5)
    out = {}
    for name in streams:
        info = await js.stream_info(name)
        peers = [p for p in (info.cluster.replicas or []) if p.current] if info.cluster else []
        out[name] = (info.config.num_replicas or 1, 1 + len(peers))
    return out


async def until_replicas(nc: NATS, n: int, timeout: float = 30.0, streams: tuple[str, ...] = STREAMS) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, tuple[int, int]] = {}
    while time.monotonic() < deadline:
        try:
            seen = await replicas(nc, streams)
            if set(seen.values()) == {(n, n)}:
                return
        except Exception:  # noqa: BLE001 - a stream mid-election does not answer info
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"streams not at R{n} with every copy current after {timeout}s: {seen}")


# -- the launcher ---------------------------------------------------------------------------------


def test_sync_always_is_on_only_when_asked() -> None:
    with NatsServer(sync_always=True) as synced, NatsServer() as default:
        assert synced.monitor("/varz")[1]["jetstream"]["config"]["sync_always"] is True
        assert not default.monitor("/varz")[1]["jetstream"]["config"].get("sync_always")


def test_cluster_of_three_with_sync_always(tmp_path: Path) -> None:
    with NatsCluster(3, sync_always=True, base_dir=str(tmp_path)) as c:
        assert [s.name for s in c.servers] == ["n0", "n1", "n2"]
        for s in c.servers:
            varz = s.monitor("/varz")[1]
            assert varz["jetstream"]["config"]["sync_always"] is True
            assert varz["cluster"]["name"] == "switchyard"
            assert s.monitor("/jsz")[1]["meta_cluster"]["cluster_size"] == 3
        assert len({s.store_dir for s in c.servers}) == 3


def test_the_cluster_manifest_config_forms_a_jetstream_cluster(tmp_path: Path) -> None:
    """manifests/nats-cluster/nats.conf as written, run by three real servers; only what
    Kubernetes provides (pod DNS, the volume, ports on the pod IP) is swapped for loopback."""
    text = (ROOT / "manifests/nats-cluster/nats.conf").read_text()
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]  # client, monitor, route
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, (client_port, monitor_port, route_port) in enumerate(ports):
            conf, n = text, 0
            for pattern, repl in [(r"(?m)^port: 4222\b", f"listen: 127.0.0.1:{client_port}"),
                                  (r"(?m)^http_port: 8222\b", f"http: 127.0.0.1:{monitor_port}"),
                                  (r"(?m)^(\s+)port: 6222\b", rf"\1listen: 127.0.0.1:{route_port}"),
                                  (r"store_dir: /data\b", f"store_dir: {json.dumps(str(tmp_path / f'nats-{i}'))}")]:
                conf, k = re.subn(pattern, repl, conf)
                n += k
            for j, (_, _, route) in enumerate(ports):
                conf, k = re.subn(rf"nats://nats-{j}\.nats-headless:6222", f"nats://127.0.0.1:{route}", conf)
                n += k
            assert n == 7 and "nats-headless" not in conf, "the manifest's nats.conf changed shape"
            (tmp_path / f"nats-{i}.conf").write_text(conf)
            with open(tmp_path / f"nats-{i}.log", "wb") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen([nats_server_binary(), "-c", str(tmp_path / f"nats-{i}.conf")],
                                              env={**os.environ, "POD_NAME": f"nats-{i}"}, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 30
        for i, (_, monitor_port, _) in enumerate(ports):
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / f"nats-{i}.log").read_text()[-2000:]
                time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2) as r:
                varz = json.loads(r.read())
            assert varz["server_name"] == f"nats-{i}" and varz["cluster"]["name"] == "switchyard"
            assert varz["jetstream"]["config"]["sync_always"] is True
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/jsz", timeout=2) as r:
                assert json.loads(r.read())["meta_cluster"]["cluster_size"] == 3
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


# -- the gateway on a cluster ----------------------------------------------------------------------


async def test_gateway_takes_a_comma_separated_server_list(cluster: NatsCluster, tmp_path: Path) -> None:
    conf = manifests(tmp_path / "conf", cluster.url, 1)
    async with gateway(cluster.url, conf) as gw, worker(cluster.url, echo):
        await gw.wait_for_workers(ECHO)
        r = await gw.infer(items=[{"text": "listed"}])
        assert r.status == 200 and r.body["items"] == [{"text": "listed"}]


async def test_gateway_makes_stream_and_buckets_r3(cluster: NatsCluster, tmp_path: Path) -> None:
    conf = manifests(tmp_path / "conf", cluster.url, 3)
    async with gateway(cluster.url, conf), client(cluster.url) as nc:
        await until_replicas(nc, 3)


async def test_gateway_brings_what_a_worker_made_up_to_r3_and_workers_never_lower_it(
        cluster: NatsCluster, tmp_path: Path) -> None:
    conf = manifests(tmp_path / "conf", cluster.url, 3)
    async with client(cluster.url) as nc:
        # A worker that starts before any gateway creates stream and buckets itself, at R1.
        async with worker(cluster.url, echo):
            await until_replicas(nc, 1, streams=STREAMS[:2])  # the jobs bucket waits for a first 202
            async with gateway(cluster.url, conf) as gw:
                await until_replicas(nc, 3)
                # A worker starting after the gateway binds; it does not put its own config back.
                async with worker(cluster.url, echo, worker_id="late"):
                    await gw.wait_for_workers(ECHO, 2)
                    assert {want for want, _ in (await replicas(nc)).values()} == {3}
                    assert (await gw.infer()).status == 200


async def test_replicas_follow_a_config_reload(cluster: NatsCluster, tmp_path: Path) -> None:
    conf = manifests(tmp_path / "conf", cluster.url, 1)
    async with gateway(cluster.url, conf) as gw, client(cluster.url) as nc:
        await until_replicas(nc, 1)
        set_queue_replicas(conf, 3)
        await until(lambda: gw.state.holder.table.queue.replicas == 3, 10, "table reloaded")
        await until_replicas(nc, 3)
        set_queue_replicas(conf, 1)
        await until_replicas(nc, 1)


async def test_a_gateway_that_has_no_table_yet_changes_nothing(cluster: NatsCluster, tmp_path: Path) -> None:
    """Cluster mode reads the routing table while it connects: until the table is there, the
    gateway must not put defaults (R1) on a queue another gateway made R3."""
    conf = manifests(tmp_path / "conf", cluster.url, 3)
    async with client(cluster.url) as nc:
        async with gateway(cluster.url, conf):
            await until_replicas(nc, 3)
        st = new_state(cluster.url)  # no table
        running = await start(st, Listen("127.0.0.1", free_port(), None), access_log=False)
        try:
            await until(lambda: st.dispatcher.connected, 15, "gateway connected without a table")
            assert {want for want, _ in (await replicas(nc)).values()} == {3}
            DirectoryConfig(conf, st.holder).load()  # the table arrives, as cluster mode's ConfigMap would
            await until(lambda: st.dispatcher._applied is not None, 15, "spec.queue applied")
            assert {want for want, _ in (await replicas(nc)).values()} == {3}
        finally:
            await running.stop()


async def test_replicas_a_single_server_cannot_hold_keep_the_gateway_unready(
        nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    conf = manifests(tmp_path / "conf", nats_server.url, 3)
    st = new_state(nats_server.url, directory(conf, interval_s=0.2))
    st.source.load()
    port = free_port()
    with caplog.at_level(logging.ERROR, logger="switchyard.gateway.nats"):
        running = await start(st, Listen("127.0.0.1", port, None), access_log=False)
        gw = GatewayUnderTest(running, f"http://127.0.0.1:{port}", "", st.source)
        try:
            await until(lambda: any("replicas" in r.getMessage() + str(getattr(r, "error", ""))
                                    for r in caplog.records), 15, "an error naming the replicas")
            assert (await gw.call("GET", "/readyz")).status == 503
            r = await gw.infer()
            assert r.status == 503 and r.body["error"]["code"] == "queue_unavailable"
            # Fixing the Gateway is enough: the gateway retries with the table it serves.
            set_queue_replicas(conf, 1)
            await until(lambda: st.dispatcher.connected, 15, "gateway ready once replicas fit")
            assert (await gw.call("GET", "/readyz")).status == 200
            # The same mistake in a reload: logged and retried, and the gateway keeps serving.
            caplog.clear()
            set_queue_replicas(conf, 3)
            await until(lambda: st.holder.table.queue.replicas == 3, 10, "table reloaded")
            await until(lambda: any("replicas" in str(getattr(r, "error", "")) for r in caplog.records), 15,
                        "the refused reload logged")
            assert (await gw.call("GET", "/readyz")).status == 200
            assert (await gw.infer(headers={"X-Request-ID": "still-served"})).status == 202
        finally:
            await gw.close()


# -- losing the stream leader mid-traffic -----------------------------------------------------------


class Traffic:
    """Requests 8 at a time until stopped (at most `limit`); every third one on the GPU lane, which
    has no worker (202), the rest on the echo lane (200). Each item carries its request id."""

    def __init__(self, gw: GatewayUnderTest, limit: int = 1500, in_flight: int = 8) -> None:
        self.gw, self.limit, self.in_flight = gw, limit, in_flight
        self.answers: dict[str, tuple[int, Any]] = {}  # request id -> (status, body)
        self.lanes: dict[str, Lane] = {}
        self.accepted = 0
        self.stop = asyncio.Event()
        self._next = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._loop() for _ in range(self.in_flight)))

    async def _loop(self) -> None:
        while not self.stop.is_set() and self._next < self.limit:
            n, self._next = self._next, self._next + 1
            rid, lane = f"r{n}", GPU if n % 3 == 0 else ECHO
            self.lanes[rid] = lane
            headers = {"X-Request-ID": rid, "X-Machine-Profile": lane.machine_profile}
            try:
                r = await asyncio.wait_for(self.gw.infer(lane.model, items=[{"text": rid}], headers=headers), 60)
                self.answers[rid] = (r.status, r.body)
            except (TimeoutError, OSError) as exc:
                self.answers[rid] = (0, repr(exc))
            if self.answers[rid][0] in (200, 202):
                self.accepted += 1
                await asyncio.sleep(0.1)  # paced: a few hundred requests over the whole test
            else:
                await asyncio.sleep(0.5)  # what Retry-After asks for, roughly: no busy loop while leaderless

    async def until_accepted(self, n: int, what: str, timeout: float = 60.0) -> None:
        await until(lambda: self.accepted >= n or self._next >= self.limit, timeout, what)
        assert self.accepted >= n, f"request limit reached before: {what}"


async def new_leader(nc: NATS, gone: str, timeout: float = 30.0) -> str:
    js = nc.jetstream(timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader = (await js.stream_info(WORK_STREAM)).cluster.leader
            if leader and leader != gone:
                return leader
        except Exception:  # noqa: BLE001 - no leader yet: the request times out or is refused
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"no new leader for {WORK_STREAM} within {timeout}s of losing {gone}")


async def test_stream_leader_sigkilled_mid_traffic_every_accepted_item_reaches_one_final_state(
        cluster: NatsCluster, tmp_path: Path) -> None:
    conf = manifests(tmp_path / "conf", cluster.url, 3)
    runs: Counter[str] = Counter()  # handler executions per request, keyed by the id inside the item

    def counting_echo(items: list[Any], ctx: Any) -> list[Any]:
        runs[items[0]["text"]] += 1
        return items

    async with client(cluster.url) as nc, gateway(cluster.url, conf) as gw, \
            worker(cluster.url, counting_echo, concurrency=8):
        await gw.wait_for_workers(ECHO)
        await until_replicas(nc, 3)
        traffic = Traffic(gw)
        flowing = asyncio.create_task(traffic.run())
        try:
            await traffic.until_accepted(90, "traffic before the kill")
            leader = cluster.server((await nc.jetstream().stream_info(WORK_STREAM)).cluster.leader)
            leader.stop(kill=True)  # SIGKILL, mid-traffic
            await new_leader(nc, leader.name or "")
            await traffic.until_accepted(traffic.accepted + 60, "traffic on the new leader, one server down")
            leader.start()  # same ports, name and store directory
            await asyncio.get_running_loop().run_in_executor(None, cluster.wait_healthy, 30.0)
            await traffic.until_accepted(traffic.accepted + 60, "traffic after the restart")
        finally:
            traffic.stop.set()
            await flowing
        await until_replicas(nc, 3)  # the restarted server caught up

        # The GPU lane gets its worker: every 202 job must end succeeded, and stay so.
        answers, lanes = traffic.answers, traffic.lanes
        finals: dict[str, Any] = {}
        async with worker(cluster.url, counting_echo, model="test/gpu", machine_profile="l4", concurrency=8):
            for rid, (status, body) in answers.items():
                if status == 200:
                    assert body["items"] == [{"text": rid}], (rid, body)
                elif status == 202:
                    done = await job_final(gw, body["job_id"], timeout=60)
                    assert done.body["state"] == "succeeded", (rid, done.body)
                    assert done.body["result"]["items"] == [{"text": rid}], (rid, done.body)
                    finals[rid] = done.body
        for rid, first in finals.items():
            again = await gw.call("GET", f"/v1/jobs/{answers[rid][1]['job_id']}", headers=ADMIN)
            assert (again.body["state"], again.body["result"]) == (first["state"], first["result"]), rid

    statuses = Counter(s for s, _ in answers.values())
    accepted = [rid for rid, (s, _) in answers.items() if s in (200, 202)]
    lost = [rid for rid in accepted if runs[rid] == 0]
    twice = sorted(rid for rid in accepted if runs[rid] > 1)
    refused = Counter(b["error"]["message"] for s, b in answers.values() if s not in (200, 202) and isinstance(b, dict))
    print(f"\n{len(answers)} requests, by status {dict(statuses)}; accepted and ran more than once: "
          f"{len(twice)} {twice[:10]}; not accepted but ran: "
          f"{sum(1 for r, (s, _) in answers.items() if s not in (200, 202) and runs[r])}; refusals: {dict(refused)}")
    assert not lost, f"accepted but never ran: {lost}"
    assert set(statuses) <= {200, 202, 503, 504}, statuses
    assert statuses[200] > 0 and statuses[202] > 0
    # A GPU request accepted is a 202; an echo one is a 200 or, had heartbeats lapsed, a 202 the echo worker ran.
    assert all(answers[r][0] == 202 for r in accepted if lanes[r] == GPU)
