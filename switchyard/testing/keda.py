"""The real KEDA operator, and its metrics adapter behind the aggregation layer, for tests.

Both run out of cluster against a `ControlPlane`, as in /work/shared/keda-recipe.md:
the binaries are compiled from the pinned Go modules by tests/controlplane/build-keda.sh
(with kube-controller-manager) and cached per version, so only the first run on a
machine pays for the build (about 10 minutes on 2 cores).

    with ControlPlane() as cp, KedaOperator(cp) as keda:
        ...  # ScaledObjects in any namespace are now reconciled and scaled

Everything listens on 127.0.0.1 only, on ports picked per run.
"""

from __future__ import annotations

import atexit
import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .controlplane import _EC_KEY, ControlPlane, ControlPlaneError, _free_ports, _openssl
from .processes import Server, ServerHelper

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tests/controlplane/build-keda.sh"
APISERVICE = "v1beta1.external.metrics.k8s.io"


class KedaBuildError(ControlPlaneError):
    """build-keda.sh failed: the Go toolchain or the module proxy could not build KEDA."""


def ensure_built() -> Path:
    """Run build-keda.sh (a no-op once cached); the dir holds keda, keda-adapter, kube-controller-manager."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise KedaBuildError(f"{BUILD_SCRIPT} failed with exit code {done.returncode}")
    return Path(done.stdout.strip().splitlines()[-1])


def make_certs(d: Path) -> None:
    """ca.crt, tls.crt, tls.key: the operator <-> adapter gRPC link is mTLS with one cert for both ends."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-nodes", *_EC_KEY, "-days", "2", "-subj", "/CN=keda-test-ca",
             "-keyout", d / "ca.key", "-out", d / "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,digitalSignature")
    (d / "tls.ext").write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                               "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-new", "-nodes", *_EC_KEY, "-subj", "/CN=keda", "-keyout", d / "tls.key", "-out", d / "tls.csr")
    _openssl("x509", "-req", "-in", d / "tls.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", d / "tls.ext", "-out", d / "tls.crt")


@dataclass
class KedaOperator(ServerHelper):
    cp: ControlPlane
    bin_dir: Path | None = None  # default: run build-keda.sh
    namespace: str = "keda"  # KEDA's own namespace (cluster-scoped objects' secrets)
    start_timeout: float = 60.0

    workdir: Path | None = field(default=None, init=False)
    grpc_port: int = field(default=0, init=False)  # the metrics service the adapter dials
    health_port: int = field(default=0, init=False)
    server: Server | None = field(default=None, init=False)

    def start(self) -> KedaOperator:
        self.bin_dir = self.bin_dir or ensure_built()
        workdir = self._make_workdir("switchyard-keda-")
        try:
            make_certs(self.certs)
            (workdir / "ca-dir").mkdir()
            self.cp.kubectl("apply", "-f", "-", check=True, input=json.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}))
            self.health_port, self.grpc_port = _free_ports(2)
            self.server = Server("keda", [
                str(self.bin_dir / "keda"), "--metrics-bind-address=0",
                f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
                f"--metrics-service-bind-address=127.0.0.1:{self.grpc_port}",
                f"--cert-dir={self.certs}", f"--ca-dir={workdir / 'ca-dir'}",
                # Rotation would write a Secret and exit 0 on the first start ("so pod can be restarted").
                "--enable-cert-rotation=false", "--leader-elect=false",
                "--zap-log-level=info", "--zap-encoder=console",
            ], workdir / "keda.log", env=self.env).start()
            _wait_http(f"http://127.0.0.1:{self.health_port}/readyz", self.server, self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def certs(self) -> Path:
        assert self.workdir is not None, "KEDA not started"
        return self.workdir / "certs"

    @property
    def env(self) -> dict[str, str]:
        # WATCH_NAMESPACE must be set (empty: every namespace); the other two replace the pod's files.
        return {"KUBECONFIG": str(self.cp.kubeconfig), "WATCH_NAMESPACE": "",
                "KEDA_CLUSTER_OBJECT_NAMESPACE": self.namespace, "POD_NAMESPACE": self.namespace}


@dataclass
class MetricsAdapter:
    """KEDA's metrics adapter, served to the HPA as external.metrics.k8s.io through the aggregator.

    The API server dials an APIService's Service; out of cluster that is an
    ExternalName Service `localhost` (a ClusterIP would not route, and Endpoints
    refuse loopback addresses). Needs a ControlPlane(aggregation=True).
    """

    keda: KedaOperator
    start_timeout: float = 60.0
    port: int = field(default=0, init=False)
    server: Server | None = field(default=None, init=False)

    def start(self) -> MetricsAdapter:
        cp, keda = self.keda.cp, self.keda
        if not cp.aggregation:
            raise ControlPlaneError("the metrics adapter needs ControlPlane(aggregation=True)")
        atexit.register(self.stop)
        try:
            self.port, metrics_port = _free_ports(2)
            kc, certs = str(cp.kubeconfig), keda.certs
            assert keda.bin_dir is not None and keda.workdir is not None
            self.server = Server("keda-adapter", [
                str(keda.bin_dir / "keda-adapter"), f"--secure-port={self.port}", "--bind-address=127.0.0.1",
                f"--port={metrics_port}", f"--cert-dir={certs}", f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}", f"--lister-kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                f"--metrics-service-address=127.0.0.1:{keda.grpc_port}",
            ], keda.workdir / "keda-adapter.log", env=keda.env).start()
            ns = keda.namespace
            objects = [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "keda-metrics-apiserver", "namespace": ns},
                 "spec": {"type": "ExternalName", "externalName": "localhost",
                          "ports": [{"name": "https", "port": self.port}]}},
                {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": APISERVICE},
                 "spec": {"service": {"name": "keda-metrics-apiserver", "namespace": ns, "port": self.port},
                          "group": "external.metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                          "groupPriorityMinimum": 100, "versionPriority": 100}},
            ]
            cp.kubectl("apply", "-f", "-", check=True,
                       input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
            deadline = time.monotonic() + self.start_timeout
            while cp.kubectl("wait", "--for=condition=Available", "--timeout=5s",
                             f"apiservice/{APISERVICE}").returncode != 0:
                if self.server.exited is not None or time.monotonic() > deadline:
                    raise ControlPlaneError(f"APIService {APISERVICE} not Available:\n{self.server.tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Never leave an APIService behind whose backend is gone: discovery of every
        # API group (kubectl included) would report it as failing.
        cp = self.keda.cp
        if cp.workdir is not None:
            cp.kubectl("delete", "apiservice", APISERVICE, "--ignore-not-found", "--wait=false")
            cp.kubectl("delete", "service", "keda-metrics-apiserver", "-n", self.keda.namespace,
                       "--ignore-not-found", "--wait=false")
        if self.server is not None:
            self.server.stop()
        atexit.unregister(self.stop)

    def __enter__(self) -> MetricsAdapter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_http(url: str, server: Server, timeout: float) -> None:
    """Poll until `url` answers 200 over HTTP or HTTPS (any certificate: loopback only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if server.exited is not None:
            raise ControlPlaneError(f"{server.name} exited with {server.exited}:\n{server.tail()}")
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"{url} not OK after {timeout}s:\n{server.tail()}")
        time.sleep(0.2)
