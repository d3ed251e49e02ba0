"""TLS on the gateway's HTTP and metrics listeners: a CA of the test's own, rotation without
dropping an open connection, a bad rotation kept out, TLS older than 1.2 refused, and the
standalone CLI's --tls-cert/--tls-key."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from cli_processes import installed_script
from cli_processes import start as start_process
from cli_processes import stop as stop_process
from dataplane import ADMIN, MANIFESTS, copy_manifests, until
from tlscerts import Leaf, TestCA, serial_of

from switchyard.gateway.app import Listen, Running, new_state, start
from switchyard.gateway.config import directory
from switchyard.gateway.tls import TlsConfigError, TlsFiles
from switchyard.natsserver import NatsServer, free_port


@asynccontextmanager
async def tls_gateway(nats_url: str, files: TlsFiles,
                      config: Path = MANIFESTS) -> AsyncIterator[tuple[Running, int, int]]:
    st = new_state(nats_url, directory(config))
    st.source.load()
    port, mport = free_port(), free_port()
    running = await start(st, Listen("127.0.0.1", port, mport, tls=files), access_log=False)
    try:
        yield running, port, mport
    finally:
        await running.stop()


def tls_files(tmp_path: Path) -> TlsFiles:
    return TlsFiles(tmp_path / "tls.crt", tmp_path / "tls.key", poll_s=0.1)


async def fresh_serial(port: int, ca: TestCA) -> int:
    """The serial of the certificate a brand-new connection is handed."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ca.client_context(),
                                              server_hostname="127.0.0.1")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return serial_of(der)
    finally:
        writer.close()


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
              authorization: str = "") -> tuple[int, bytes]:
    """One keep-alive GET on an open connection: (status, body)."""
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    assert headers.get("connection", "").lower() != "close"
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(lines[0].split()[1]), body


async def test_rotation_keeps_open_connections_and_new_ones_get_the_new_certificate(
        nats_server: NatsServer, tmp_path: Path) -> None:
    ca = TestCA()
    first, second = ca.issue(), ca.issue()
    files = tls_files(tmp_path)
    first.write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files) as (running, port, mport):
        assert running.tls is not None
        # One keep-alive HTTP/1.1 connection, held open across the rotation.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ca.client_context(),
                                                      server_hostname="127.0.0.1")
        try:
            assert serial_of(writer.get_extra_info("ssl_object").getpeercert(True)) == first.serial
            status, _ = await get(reader, writer, "/healthz")
            assert status == 200
            assert await fresh_serial(port, ca) == first.serial

            second.write(files.cert, files.key)
            await until(lambda: running.tls.reloads == 1, 10, "the rotated pair loaded")  # type: ignore[union-attr]
            assert await fresh_serial(port, ca) == second.serial

            # The connection opened before the rotation is still served, on its old session.
            status, body = await get(reader, writer, "/v1/configs/models", ADMIN["Authorization"])
            assert status == 200, body
            assert b"test/echo" in body
            assert serial_of(writer.get_extra_info("ssl_object").getpeercert(True)) == first.serial
        finally:
            writer.close()

        # The metrics listener rotated with it.
        assert await fresh_serial(mport, ca) == second.serial
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as s:
            async with s.get(f"https://127.0.0.1:{mport}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
        assert 'switchyard_gateway_tls_reloads_total{outcome="loaded"} 1.0' in text
        expiry = next(float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith("switchyard_gateway_tls_certificate_expiry_timestamp_seconds{"))
        assert expiry == second.not_after


async def test_a_rotation_that_does_not_load_keeps_the_previous_certificate(
        nats_server: NatsServer, tmp_path: Path) -> None:
    ca = TestCA()
    good, other = ca.issue(), ca.issue()
    files = tls_files(tmp_path)
    good.write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files) as (running, port, _):
        assert running.tls is not None
        files.cert.write_bytes(other.cert_pem)  # the new certificate with the old key: not a pair
        await until(lambda: running.tls.rejected == 1, 10, "the mismatched pair tried")  # type: ignore[union-attr]
        assert running.state.metrics.tls_reloads.labels("rejected")._value.get() == 1
        assert await fresh_serial(port, ca) == good.serial
        files.key.write_bytes(other.key_pem)  # the pair completes: now it loads
        await until(lambda: running.tls.reloads == 1, 10, "the completed pair loaded")  # type: ignore[union-attr]
        assert await fresh_serial(port, ca) == other.serial


async def test_tls_older_than_1_2_and_plain_http_are_refused(nats_server: NatsServer, tmp_path: Path) -> None:
    ca = TestCA()
    files = tls_files(tmp_path)
    ca.issue().write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files) as (_, port, _):
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(cadata=ca.pem.decode())
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with warnings.catch_warnings():  # the point is to offer what is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # a protocol_version alert, or a reset
            await asyncio.open_connection("127.0.0.1", port, ssl=old, server_hostname="127.0.0.1")

        # Plain HTTP on the TLS port gets no answer: the handshake fails and the connection closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 10)
        assert b"HTTP/1.1 200" not in data
        writer.close()

        # A 1.2 client with the test CA is served.
        modern = ca.client_context()
        modern.maximum_version = ssl.TLSVersion.TLSv1_2
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=modern, server_hostname="127.0.0.1")
        assert w.get_extra_info("ssl_object").version() == "TLSv1.2"
        w.close()


def test_a_pair_that_does_not_load_fails_at_startup(tmp_path: Path) -> None:
    ca = TestCA()
    a, b = ca.issue(), ca.issue()
    files = tls_files(tmp_path)
    files.cert.write_bytes(a.cert_pem)
    files.key.write_bytes(b.key_pem)
    from switchyard.gateway.tls import ReloadingTls

    with pytest.raises(TlsConfigError, match="cannot load the TLS certificate"):
        ReloadingTls(files)
    with pytest.raises(TlsConfigError, match="not found"):
        ReloadingTls(TlsFiles(tmp_path / "missing.crt", files.key))
    with pytest.raises(TlsConfigError, match="minimum version"):
        TlsFiles(files.cert, files.key, min_version="1.1")  # type: ignore[arg-type]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_standalone_cli_serves_https_from_files(nats_server: NatsServer, tmp_path: Path) -> None:
    ca = TestCA()
    cert, key = tmp_path / "gw.crt", tmp_path / "gw.key"
    ca.issue().write(cert, key)
    port, mport = free_port(), free_port()
    base = [installed_script(), "gateway", "--config-dir", str(MANIFESTS), "--nats", nats_server.url,
            "--port", str(port), "--metrics-port", str(mport)]

    only_cert = subprocess.run([*base, "--tls-cert", str(cert)], capture_output=True, text=True, timeout=60)
    assert only_cert.returncode == 2
    assert "--tls-cert and --tls-key go together" in only_cert.stderr
    wrong = subprocess.run([*base, "--tls-cert", str(cert), "--tls-key", str(cert)],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert "cannot load the TLS certificate" in wrong.stderr

    proc = start_process([*base, "--tls-cert", str(cert), "--tls-key", str(key)], tmp_path / "gateway.log")
    try:
        await until(lambda: _port_open(port) or proc.poll() is not None, 30, "the gateway listening")
        assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as s:
            async with s.get(f"https://127.0.0.1:{port}/v1/configs/models", headers=ADMIN) as resp:
                assert resp.status == 200
                assert "test/echo" in await resp.text()
            with pytest.raises(aiohttp.ClientError):  # HTTPS only: a plain client gets no answer
                async with s.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
    finally:
        assert stop_process(proc) == 0


async def test_websocket_over_tls(nats_server: NatsServer, tmp_path: Path) -> None:
    ca = TestCA()
    files = tls_files(tmp_path)
    ca.issue().write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files) as (_, port, _):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context())) as s:
            async with s.ws_connect(f"wss://127.0.0.1:{port}/v1/ws", headers=ADMIN) as ws:
                await ws.send_json({"type": "infer", "id": "q", "op": "encode", "model": "no/such", "items": [1]})
                m = await asyncio.wait_for(ws.receive_json(), 15)
                assert m["id"] == "q" and m["error"]["code"] == "unknown_model"


async def test_grpc_credentials_follow_the_rotation(tmp_path: Path) -> None:
    """The helper a gRPC listener uses: a new handshake gets the rotated pair, an open channel keeps working."""
    import grpc

    from switchyard.gateway.tls import ReloadingTls, grpc_server_credentials

    ca = TestCA()
    first, second = ca.issue(), ca.issue()
    files = tls_files(tmp_path)
    first.write(files.cert, files.key)
    tls = ReloadingTls(files)

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_secure_port("127.0.0.1:0", grpc_server_credentials(tls))
    await server.start()
    watch = asyncio.create_task(tls.watch())
    creds = grpc.ssl_channel_credentials(root_certificates=ca.pem)
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as kept:
            call = kept.unary_unary("/test.Echo/Echo")
            assert await call(b"one", timeout=10) == b"one"
            assert await fresh_serial(port, ca) == first.serial
            second.write(files.cert, files.key)
            await until(lambda: tls.reloads == 1, 10, "the rotated pair loaded")
            assert await fresh_serial(port, ca) == second.serial
            assert await call(b"two", timeout=10) == b"two"  # the channel opened before still serves
    finally:
        watch.cancel()
        await server.stop(None)


async def test_a_handshake_that_never_comes_is_cut_off(nats_server: NatsServer, tmp_path: Path) -> None:
    """A socket that opens and sends nothing is closed after headerTimeoutSeconds, not asyncio's 60 s."""
    config = copy_manifests(tmp_path / "config")
    manifest = config / "gateway.yaml"
    manifest.write_text(manifest.read_text().replace(
        "  maxRequestBodyBytes: 4096\n",
        "  maxRequestBodyBytes: 4096\n  listeners: {http: {headerTimeoutSeconds: 1}}\n"))
    ca = TestCA()
    files = tls_files(tmp_path)
    ca.issue().write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files, config) as (running, port, _):
        assert running.state.holder.table.http.header_timeout_s == 1
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # TCP only: no ClientHello
        try:
            assert await asyncio.wait_for(reader.read(), 20) == b""  # closed by the gateway
        finally:
            writer.close()


def kubelet_write(volume: Path, leaf: Leaf, generation: int) -> None:
    """Update a mounted Secret the way the kubelet's AtomicWriter does: a new timestamped directory,
    `..data` swapped to it by one rename, the visible files symlinks through `..data`."""
    new = volume / f"..2026_01_01_00_00_0{generation}.{generation}"
    new.mkdir()
    (new / "tls.crt").write_bytes(leaf.cert_pem)
    (new / "tls.key").write_bytes(leaf.key_pem)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, volume / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(f"..data/{name}")


async def test_a_secret_volume_rotated_as_the_kubelet_does_is_picked_up(nats_server: NatsServer,
                                                                        tmp_path: Path) -> None:
    ca = TestCA()
    first, second = ca.issue(), ca.issue()
    volume = tmp_path / "tls"
    volume.mkdir()
    kubelet_write(volume, first, 1)
    files = TlsFiles(volume / "tls.crt", volume / "tls.key", poll_s=0.1)
    async with tls_gateway(nats_server.url, files) as (running, port, _):
        assert await fresh_serial(port, ca) == first.serial
        kubelet_write(volume, second, 2)
        await until(lambda: running.tls.reloads == 1, 10, "the swapped Secret loaded")  # type: ignore[union-attr]
        assert await fresh_serial(port, ca) == second.serial


async def test_the_python_client_over_https(nats_server: NatsServer, tmp_path: Path) -> None:
    """The SDK takes a session: give it one that trusts the CA."""
    from switchyard.client import AsyncClient

    ca = TestCA()
    files = tls_files(tmp_path)
    ca.issue().write(files.cert, files.key)
    async with tls_gateway(nats_server.url, files) as (_, port, _):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ca.client_context()))
        async with session, AsyncClient(f"https://127.0.0.1:{port}", "admin-key-0123456789abcdef",
                                        session=session) as client:
            assert "test/echo" in [m.id for m in await client.models()]
        async with AsyncClient(f"https://127.0.0.1:{port}", "admin-key-0123456789abcdef", max_retries=0) as plain:
            with pytest.raises(Exception) as refused:  # a CA the system does not know: verification fails
                await plain.models()
            assert "certificate" in str(refused.value).lower()
