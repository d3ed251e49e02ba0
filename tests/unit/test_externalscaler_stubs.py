"""The committed gRPC stubs match the committed proto, and the proto is KEDA's own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path("switchyard/gateway/externalscaler")
PROTO = PACKAGE / "externalscaler.proto"
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")
KEDA_GO_MOD = ROOT / "tests/controlplane/keda/go.mod"


def test_stubs_are_generated_from_the_committed_proto(tmp_path: Path) -> None:
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    (tmp_path / PACKAGE).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    # The same -I layout as the committed stubs, so their imports name the package.
    rc = grpc_tools.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                          f"--grpc_python_out={tmp_path}", str(tmp_path / PROTO)])
    assert rc == 0
    stale = [name for name in GENERATED
             if (tmp_path / PACKAGE / name).read_bytes() != (ROOT / PACKAGE / name).read_bytes()]
    assert not stale, (f"stale stubs {stale}: regenerate with `.venv/bin/python -m grpc_tools.protoc -I. "
                       f"--python_out=. --pyi_out=. --grpc_python_out=. {PROTO}`")


def test_proto_is_the_one_in_the_keda_module_we_build(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.skip("`go` is not on PATH: cannot fetch the KEDA module to compare the proto")
    version = re.search(r"github.com/kedacore/keda/v2 (v\S+)", KEDA_GO_MOD.read_text())
    assert version, f"no KEDA require in {KEDA_GO_MOD}"
    done = subprocess.run(["go", "mod", "download", "-json", f"github.com/kedacore/keda/v2@{version[1]}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    keda_proto = Path(json.loads(done.stdout)["Dir"]) / "pkg/scalers/externalscaler/externalscaler.proto"
    assert keda_proto.read_bytes() == (ROOT / PROTO).read_bytes()
