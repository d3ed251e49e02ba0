"""Regenerate the committed stubs of proto/switchyard/v1/inference.proto: `python -m switchyard.gateway.grpc.generate`.

protoc names the proto's own path in the gRPC stub's import (`from switchyard.v1 import
inference_pb2`); the stubs live in this package instead, so that one import is made relative.
Descriptors keep the proto's path, `switchyard/v1/inference.proto`, which reflection serves.
tests/unit/test_inference_stubs.py fails when the committed stubs differ from what this writes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "proto"
PROTO = Path("switchyard/v1/inference.proto")
PACKAGE = Path(__file__).resolve().parent
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate(out: Path, proto_dir: Path = PROTO_DIR) -> None:
    """Write the three stubs into `out`."""
    from grpc_tools import protoc  # grpcio-tools: the `test` extra, pinned to grpcio's version

    with tempfile.TemporaryDirectory() as tmp:
        # grpc_tools ships google/protobuf/*.proto; protoc needs that include for struct.proto.
        well_known = Path(protoc.__file__).parent / "_proto"
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={tmp}",
                          f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", str(proto_dir / PROTO)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto_dir / PROTO} (exit {rc})")
        made = Path(tmp) / PROTO.parent
        for name in GENERATED:
            text = (made / name).read_text()
            if name.endswith("_grpc.py"):
                text = text.replace("from switchyard.v1 import inference_pb2", "from . import inference_pb2")
            (out / name).write_text(text)


if __name__ == "__main__":
    generate(PACKAGE)
    print(f"wrote {', '.join(GENERATED)} to {PACKAGE}", file=sys.stderr)
