"""A real Kubernetes control plane (etcd + kube-apiserver) for tests.

Like controller-runtime's envtest: no kubelet, scheduler or controller-manager,
just the API server with real admission, RBAC, CRD validation and storage.
The binaries are compiled from pinned Go modules by tests/controlplane/build.sh
and cached per version, so only the first run on a machine pays for the build.

    with ControlPlane() as cp:
        cp.kubectl("get", "namespaces", check=True)

Everything listens on 127.0.0.1 only. Certificates are made with the `openssl`
CLI so the helper needs no Python dependency beyond the standard library.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tests/controlplane/build.sh"
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# These admission plugins wait on controllers that do not run here (the
# ServiceAccount controller, the PVC protection controller).
DISABLED_ADMISSION = "ServiceAccount,StorageObjectInUseProtection"


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started."""


@dataclass
class ControlPlane:
    bin_dir: Path | None = None  # prebuilt binaries; default: run build.sh
    kubectl_path: str = field(default_factory=lambda: shutil.which("kubectl") or "/usr/bin/kubectl")
    start_timeout: float = 60.0
    # Keep the temp dir (logs, etcd data, certs) after stop() for debugging.
    keep_workdir: bool = field(default_factory=lambda: bool(os.environ.get("SWITCHYARD_KEEP_CONTROLPLANE")))
    apiserver_args: tuple[str, ...] = ()  # extra kube-apiserver flags
    # The aggregation layer (APIService -> an extension API server, e.g. KEDA's metrics
    # adapter): a front-proxy client cert and the requestheader flags.
    aggregation: bool = False

    workdir: Path | None = field(default=None, init=False)
    etcd_port: int = field(default=0, init=False)
    apiserver_port: int = field(default=0, init=False)
    _etcd_peer_port: int = field(default=0, init=False)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> ControlPlane:
        self.bin_dir = self.bin_dir or self.ensure_built()
        self.workdir = Path(tempfile.mkdtemp(prefix="switchyard-cp-"))
        atexit.register(self.stop)  # never leak servers if a test run aborts
        try:
            self.etcd_port, self._etcd_peer_port, self.apiserver_port = _free_ports(3)
            self._make_pki()
            self._write_kubeconfig(self.kubeconfig, {"client-certificate": str(self._pki("admin.crt")),
                                                     "client-key": str(self._pki("admin.key"))})
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # API server first, so it does not log a storm of etcd errors.
        for name in ("kube-apiserver", "etcd"):
            self._stop_process(name)
        if self.workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        atexit.unregister(self.stop)

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver alone (same ports, certs and etcd)."""
        self._stop_process("kube-apiserver")
        self._start_apiserver()
        self._wait_ready()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def ensure_built() -> Path:
        """Run build.sh (a no-op once cached) and return the binaries' dir."""
        # stdout carries only the output dir; progress goes to our stderr.
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {done.returncode}")
        return Path(done.stdout.strip().splitlines()[-1])

    # -- public helpers ------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self._dir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def kubectl(self, *args: str, input: str | None = None, check: bool = False,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:  # unlike CalledProcessError, show kubectl's reason
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """Kubeconfig authenticating as a ServiceAccount via a TokenRequest token."""
        objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                   {"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": namespace}}]
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
                     check=True)
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=1h", check=True).stdout.strip()
        path = self._dir / f"sa-{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(path, {"token": token}, namespace=namespace)
        return path

    def apply_keda_crds(self, timeout: str = "60s") -> None:
        """Install the real KEDA CRDs and wait until they are served."""
        crds = str(self._bin / "keda-crds")
        # Server-side apply: ScaledJob's CRD is too big for the client-side
        # last-applied-configuration annotation.
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", crds, check=True)
        self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout}", "-f", crds, check=True)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """Last lines of `etcd` or `kube-apiserver` log, for failure messages."""
        path = self._dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # -- processes -----------------------------------------------------------

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self._etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            "--name=default", f"--data-dir={self._dir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",  # throwaway data: durability across crashes is not needed
        ])

    def _start_apiserver(self) -> None:
        pki = self._pki
        self._spawn("kube-apiserver", [
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # The `kubernetes` Service endpoint may not be loopback; nothing here needs it.
            "--endpoint-reconciler-type=none",
            f"--secure-port={self.apiserver_port}",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            # Compact etcd often, so watches that fall behind really get 410 Gone, as in big clusters.
            "--etcd-compaction-interval=5s",
            *self.apiserver_args,
            f"--tls-cert-file={pki('serving.crt')}", f"--tls-private-key-file={pki('serving.key')}",
            f"--client-ca-file={pki('ca.crt')}",
            "--authorization-mode=RBAC",
            # Issuer + keys make the TokenRequest API (kubectl create token) work.
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki('sa.pub')}",
            f"--service-account-signing-key-file={pki('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--disable-admission-plugins={DISABLED_ADMISSION}",
            "--allow-privileged=true",
            *(self._aggregation_args() if self.aggregation else ()),
        ])

    def _aggregation_args(self) -> list[str]:
        pki = self._pki
        return [f"--requestheader-client-ca-file={pki('ca.crt')}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki('front-proxy-client.crt')}",
                f"--proxy-client-key-file={pki('front-proxy-client.key')}"]

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self._dir / f"{name}.log", "ab") as log:  # append: restarts keep history
            self._procs[name] = subprocess.Popen(die_with_parent([str(self._bin / name), *args]),
                                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _stop_process(self, name: str, grace: float = 10.0) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _wait_ready(self) -> None:
        """Poll /readyz, then wait for the `default` namespace the API server bootstraps."""
        deadline = time.monotonic() + self.start_timeout
        for path in ("/readyz", "/api/v1/namespaces/default"):
            while self._get(path) != 200:
                for name, proc in self._procs.items():
                    if proc.poll() is not None:
                        raise ControlPlaneError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{path} not OK after {self.start_timeout}s:\n"
                                            f"{self.log_tail('kube-apiserver')}")
                time.sleep(0.2)

    def _get(self, path: str) -> int:
        ctx = ssl.create_default_context(cafile=self._pki("ca.crt"))
        ctx.load_cert_chain(self._pki("admin.crt"), self._pki("admin.key"))
        try:
            with urllib.request.urlopen(self.server + path, context=ctx, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as err:
            return err.code
        except (OSError, ssl.SSLError):
            return 0  # not listening yet

    # -- PKI and kubeconfigs -------------------------------------------------

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("control plane not started")
        return self.workdir

    @property
    def _bin(self) -> Path:
        if self.bin_dir is None:
            raise ControlPlaneError("control plane not started")
        return self.bin_dir

    def _pki(self, name: str) -> Path:
        return self._dir / "pki" / name

    def _make_pki(self) -> None:
        (self._dir / "pki").mkdir()
        _openssl("req", "-x509", "-nodes", *_EC_KEY, "-days", "2", "-subj", "/CN=switchyard-test-ca",
                 "-keyout", self._pki("ca.key"), "-out", self._pki("ca.crt"),
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
        self._issue("serving", "/CN=kube-apiserver",
                    "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost")
        # O=system:masters is the group RBAC grants cluster-admin to.
        self._issue("admin", "/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth")
        if self.aggregation:  # what the API server shows an extension API server it proxies to
            self._issue("front-proxy-client", "/CN=front-proxy-client", "extendedKeyUsage=clientAuth")
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", self._pki("sa.key"))
        _openssl("pkey", "-in", self._pki("sa.key"), "-pubout", "-out", self._pki("sa.pub"))

    def _issue(self, name: str, subject: str, extensions: str) -> None:
        key, csr, crt, ext = (self._pki(f"{name}.{suffix}") for suffix in ("key", "csr", "crt", "ext"))
        ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                       + extensions + "\n")
        _openssl("req", "-new", "-nodes", *_EC_KEY, "-subj", subject, "-keyout", key, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", self._pki("ca.crt"), "-CAkey", self._pki("ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)

    def _write_kubeconfig(self, path: Path, user: dict[str, str], namespace: str = "default") -> None:
        # JSON is valid YAML, and kubectl/kubernetes clients read it as a kubeconfig.
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "switchyard",
            "clusters": [{"name": "switchyard", "cluster": {
                "server": self.server, "certificate-authority": str(self._pki("ca.crt"))}}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "switchyard", "context": {
                "cluster": "switchyard", "user": "user", "namespace": namespace}}],
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ControlPlaneError(f"openssl {args[0]} failed: {done.stderr}")


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for distinct free loopback ports (all held open until chosen)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def die_with_parent(argv: list[str]) -> list[str]:
    """`argv` made to get SIGKILL when the test process dies (Linux), so a killed pytest
    run leaves no servers behind. SIGKILL, not SIGTERM: a graceful kube-apiserver
    shutdown stalls for a minute once etcd is gone, and the data is throwaway anyway.

    Through `setpriv --pdeathsig` (util-linux), not a preexec_fn: running Python in the
    forked child ran gRPC's fork handlers there whenever the test process had gRPC
    threads (the KEDA scaler tests), and the child aborted before it could exec.
    The signal fires when the spawning *thread* exits, so only the main thread arms it
    (a restart from asyncio.to_thread must survive its thread).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]
