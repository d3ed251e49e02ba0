"""The committed switchyard.v1 stubs match proto/switchyard/v1/inference.proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.gateway.grpc import generate


def test_stubs_are_generated_from_the_committed_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools.protoc")
    generate.generate(tmp_path)
    stale = [name for name in generate.GENERATED
             if (tmp_path / name).read_bytes() != (generate.PACKAGE / name).read_bytes()]
    assert not stale, f"stale stubs {stale}: regenerate with `.venv/bin/python -m switchyard.gateway.grpc.generate`"


def test_a_changed_proto_is_caught(tmp_path: Path) -> None:
    """The comparison above can fail: a proto with one more field generates other stubs."""
    pytest.importorskip("grpc_tools.protoc")
    proto_dir = tmp_path / "proto"
    (proto_dir / generate.PROTO.parent).mkdir(parents=True)
    text = (generate.PROTO_DIR / generate.PROTO).read_text()
    added = text.replace("string bundle = 8;", "string bundle = 8;\n  string x = 99;", 1)
    (proto_dir / generate.PROTO).write_text(added)
    out = tmp_path / "out"
    out.mkdir()
    generate.generate(out, proto_dir)
    assert (out / "inference_pb2.py").read_bytes() != (generate.PACKAGE / "inference_pb2.py").read_bytes()


def test_descriptor_keeps_the_proto_path() -> None:
    """Reflection serves the file by this name; grpcurl resolves imports by it."""
    from switchyard.gateway.grpc import inference_pb2

    assert inference_pb2.DESCRIPTOR.name == "switchyard/v1/inference.proto"
    assert inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name == "switchyard.v1.Inference"
