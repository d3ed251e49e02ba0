"""The real kube-controller-manager, with only the controllers a test asks for.

Built with KEDA by tests/controlplane/build-keda.sh (from the same k8s.io/kubernetes
module as kube-apiserver). By default it runs the Deployment, ReplicaSet and HPA
controllers, syncing HPAs every second: KEDA's HPA then really scales 1 -> N.
There is no scheduler or kubelet, so the Pods it creates stay Pending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .controlplane import ControlPlane, _free_ports
from .keda import _wait_http, ensure_built
from .processes import Server, ServerHelper

DEFAULT_CONTROLLERS = ("deployment-controller", "replicaset-controller", "horizontal-pod-autoscaler-controller")


@dataclass
class ControllerManager(ServerHelper):
    cp: ControlPlane
    bin_dir: Path | None = None  # default: run build-keda.sh
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    hpa_sync_period: str = "1s"
    start_timeout: float = 60.0

    workdir: Path | None = field(default=None, init=False)
    port: int = field(default=0, init=False)
    server: Server | None = field(default=None, init=False)

    def start(self) -> ControllerManager:
        self.bin_dir = self.bin_dir or ensure_built()
        workdir = self._make_workdir("switchyard-kcm-")
        try:
            (self.port,) = _free_ports(1)
            kc = str(self.cp.kubeconfig)
            self.server = Server("kube-controller-manager", [
                str(self.bin_dir / "kube-controller-manager"), f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--leader-elect=false", "--use-service-account-credentials=false",
                f"--secure-port={self.port}", "--bind-address=127.0.0.1",
                f"--cert-dir={workdir}", f"--controllers={','.join(self.controllers)}",
                f"--horizontal-pod-autoscaler-sync-period={self.hpa_sync_period}",
            ], workdir / "kube-controller-manager.log").start()
            _wait_http(f"https://127.0.0.1:{self.port}/healthz", self.server, self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self
