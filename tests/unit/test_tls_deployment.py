"""spec.listeners.tls: the operator mounts the Secret into the gateway pod and the gateway reads it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api.gateway import Gateway
from switchyard.cli.gateway import tls_files
from switchyard.cli.main import build_parser
from switchyard.operator import children


def gateway(**spec: Any) -> Gateway:
    return Gateway.model_validate({"kind": "Gateway", "metadata": {"name": "main", "namespace": "team", "uid": "u1"},
                                   "spec": spec})


def pod(gw: Gateway) -> dict[str, Any]:
    return children.gateway_deployment(gw, "img")["spec"]["template"]["spec"]


def test_the_secret_is_mounted_whole_and_passed_to_the_gateway() -> None:
    spec = pod(gateway(listeners={"tls": {"secretName": "gw-cert", "minVersion": "1.3"}}))
    container = spec["containers"][0]
    assert {"name": "tls", "secret": {"secretName": "gw-cert"}} in spec["volumes"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": children.TLS_DIR, "readOnly": True}  # no subPath: rotation reaches it
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    # The gateway's command line accepts exactly what the operator passes, and reads the mounted pair.
    args = build_parser().parse_args(container["args"])
    assert (args.tls_cert, args.tls_key, args.tls_min_version) == (
        f"{children.TLS_DIR}/tls.crt", f"{children.TLS_DIR}/tls.key", "1.3")


def test_without_tls_nothing_is_mounted_and_probes_stay_http() -> None:
    spec = pod(gateway())
    container = spec["containers"][0]
    assert [v["name"] for v in spec["volumes"]] == ["tmp"]
    assert "--tls-cert" not in container["args"]
    assert "scheme" not in container["readinessProbe"]["httpGet"]
    assert tls_files(build_parser().parse_args(container["args"])) is None


@pytest.mark.parametrize("tls", [{"secretName": "../etc"}, {"secretName": "Cert"},
                                 {"secretName": "c", "minVersion": "1.1"}, {"secretName": "c", "verify": False}, {}])
def test_bad_tls_blocks_are_refused(tls: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        gateway(listeners={"tls": tls})
