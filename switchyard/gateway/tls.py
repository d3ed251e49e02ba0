"""TLS for the gateway's listeners, from a certificate and key on disk, reloaded when they change.

The files come from `--tls-cert`/`--tls-key` (standalone) or from a `kubernetes.io/tls` Secret
the operator mounts into the gateway pod (spec.listeners.tls). The kubelet rotates a mounted
Secret by swapping a symlink, so the files are polled by content, not by mtime or inotify.

Rotation never touches an open connection: the listener's context only picks, during each
new handshake, the context built from the newest good pair (SNI callback). A pair that does
not load (a key that does not match, a half-written file) is logged and the previous one is
kept, so a botched rotation cannot take the listener down.

Weak settings are refused: TLS 1.2 is the floor, and Python's default cipher list (no RC4,
3DES, export or anonymous suites) is kept as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

log = logging.getLogger("switchyard.gateway.tls")

MinVersion = Literal["1.2", "1.3"]
_VERSIONS: dict[str, ssl.TLSVersion] = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
POLL_S = 2.0  # how often the files are read for a change (a Secret's update takes the kubelet ~1 min anyway)


class TlsConfigError(ValueError):
    """The certificate or key cannot be used (missing, unreadable, not a matching pair)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM chain, leaf first (a Secret's tls.crt)
    key: Path  # PEM private key (tls.key)
    min_version: MinVersion = "1.2"
    poll_s: float = POLL_S

    def __post_init__(self) -> None:
        if self.min_version not in _VERSIONS:
            raise TlsConfigError(f"TLS minimum version must be one of {', '.join(_VERSIONS)}, "
                                 f"not {self.min_version!r}")


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context holding the pair as it is on disk now; TlsConfigError when it cannot load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[files.min_version]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE  # no CRIME; our cipher order
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except FileNotFoundError as exc:
        raise TlsConfigError(f"TLS file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load the TLS certificate {files.cert} with key {files.key}: {exc}") from None
    return ctx


class ReloadingTls:
    """The SSLContext a listener serves with; `watch()` swaps in a rotated pair for new handshakes."""

    def __init__(self, files: TlsFiles, on_reload: Callable[[str, float | None], None] | None = None) -> None:
        self.files = files
        # on_reload(outcome, not_after): "started" or "loaded" with the served certificate's expiry, or "rejected"
        self._on_reload = on_reload or (lambda outcome, not_after: None)
        self.pem = self._read()  # (cert, key) as last loaded; gRPC's credentials serve the same bytes
        self._digest = _digest(self.pem)
        self._current = server_context(files)  # the first pair must load: fail at startup, not later
        self._failed: bytes | None = None  # the digest of a pair that did not load (logged once)
        self.reloads = 0  # pairs swapped in since start
        self.rejected = 0  # changed pairs that did not load
        # The listener's own context: never changed, so sites and open connections keep it; each
        # handshake is moved to the current pair's context by the SNI callback (called with or without SNI).
        self.context = server_context(files)
        self.context.sni_callback = self._pick
        self._on_reload("started", not_after(files.cert))

    def _pick(self, sslobj: Any, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self._current
        return None

    def _read(self) -> tuple[bytes, bytes]:
        def read(path: Path) -> bytes:
            try:
                return path.read_bytes()
            except OSError:
                return b""
        return read(self.files.cert), read(self.files.key)

    def check(self) -> bool:
        """Load the pair if its files changed; True when a new pair now serves."""
        pem = self._read()
        digest = _digest(pem)
        if digest == self._digest or digest == self._failed:
            return False
        try:
            ctx = server_context(self.files)
        except TlsConfigError as exc:
            self._failed = digest
            self.rejected += 1
            self._on_reload("rejected", None)
            log.warning("TLS files changed but do not load; still serving the previous certificate",
                        extra={"error": str(exc)})
            return False
        if _digest(self._read()) != digest:
            return False  # changed while loading: load again on the next poll
        self._current, self.pem, self._digest, self._failed = ctx, pem, digest, None
        self.reloads += 1
        self._on_reload("loaded", not_after(self.files.cert))
        log.info("TLS certificate reloaded", extra={"cert": str(self.files.cert)})
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.files.poll_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # keep serving the pair we have; try again next poll
                log.exception("TLS reload check failed")


class TlsSite(web.TCPSite):
    """aiohttp's TCPSite with a deadline on the TLS handshake (asyncio's default is 60 s).

    A connection counts against maxConnections only once its handshake is done, so a client
    that opens sockets and never finishes a handshake is cut off by this deadline instead."""

    def __init__(self, *args: Any, handshake_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout_s = handshake_timeout_s

    async def start(self) -> None:
        self._runner._reg_site(self)  # BaseSite.start; TCPSite.start's create_server has no handshake timeout
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout_s)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


def grpc_server_credentials(tls: ReloadingTls) -> Any:
    """grpcio server credentials that follow the same files: gRPC asks before each new handshake.

    `server.add_secure_port(addr, grpc_server_credentials(tls))`; run `tls.watch()` (or share the
    one the HTTP listener's `ReloadingTls` runs) so that rotated files are picked up.
    """
    import grpc

    def config(pem: tuple[bytes, bytes]) -> Any:
        return grpc.ssl_server_certificate_configuration([(pem[1], pem[0])])

    served = [tls.pem]

    def fetch() -> Any:  # gRPC's core calls this before each handshake; None keeps the current config
        pem = tls.pem
        if pem is served[0]:
            return None
        served[0] = pem
        return config(pem)

    return grpc.dynamic_ssl_server_credentials(config(tls.pem), fetch)


def not_after(cert: Path) -> float | None:
    """The leaf certificate's expiry as Unix time, for the metrics; None when it cannot be read."""
    try:  # the ssl module's own PEM decoder (no parser dependency in the gateway)
        return ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(str(cert))["notAfter"])  # type: ignore[attr-defined]
    except (OSError, ValueError, KeyError) as exc:  # ssl.SSLError is an OSError: a gauge left unset, no failed reload
        log.warning("certificate expiry unreadable", extra={"cert": str(cert), "error": str(exc)})
        return None


def _digest(pem: tuple[bytes, bytes]) -> bytes:
    return hashlib.sha256(pem[0] + b"\0" + pem[1]).digest()
