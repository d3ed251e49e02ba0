"""Worker fleets rendered from an Upstream's template: flags, scheduling, security, probes, grace."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api.gateway import Gateway
from switchyard.api.upstream import Upstream
from switchyard.operator import children, fleets
from switchyard.worker.cli import build_parser

TEMPLATE = {"image": "ghcr.io/switchyard-dev/switchyard:0.1.0",
            "args": ["worker", "--handler", "switchyard.worker.handlers:echo"],
            "env": [{"name": "HF_HOME", "value": "/models"}],
            "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
            "volumes": [{"name": "models", "emptyDir": {}}],
            "volumeMounts": [{"name": "models", "mountPath": "/models"}]}


def gateway() -> Gateway:
    return Gateway.model_validate({
        "kind": "Gateway", "metadata": {"name": "main", "namespace": "team", "uid": "g1"},
        "spec": {"nats": {"url": "nats://nats:4222"}, "machineProfiles": [
            {"name": "cpu"},
            {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
             "resources": {"nvidia.com/gpu": "1"}}]}})


def upstream(**workers: Any) -> Upstream:
    return Upstream.model_validate({
        "kind": "Upstream", "metadata": {"name": "bge", "namespace": "team", "uid": "u1"},
        "spec": {"model": "BAAI/bge-m3", "operations": ["encode"], "machineProfiles": ["cpu", "l4"],
                 "timeoutSeconds": 42.5, "workers": {"service": "bge-workers", "template": TEMPLATE, **workers}}})


def rendered(up: Upstream) -> dict[str, dict[str, Any]]:
    gw = gateway()
    profiles = {p.name: p for p in gw.spec.machine_profiles}
    return {f.deployment: fleets.fleet_deployment(up, gw, f, profiles[f.machine_profile or ""])
            for f in children.fleets(up)}


def test_a_template_renders_one_fleet_per_machine_profile_scaled_on_its_own_lanes() -> None:
    up = upstream()
    refs = children.fleets(up)
    assert [(f.name, f.deployment, f.machine_profile, f.run_bundle, f.rendered) for f in refs] == [
        ("bge.cpu", "bge-cpu", "cpu", "default", True), ("bge.l4", "bge-l4", "l4", "default", True)]
    so = children.scaled_object(up, gateway(), refs[1])
    assert so["spec"]["scaleTargetRef"] == {"name": "bge-l4"}
    assert so["spec"]["triggers"][0]["metadata"]["machineProfile"] == "l4"


def test_worker_flags_carry_model_bundle_profile_and_pool_and_parse() -> None:
    dep = rendered(upstream())["bge-l4"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    argv = [a.replace("$(POD_IP)", "10.0.0.7") for a in c["args"]]
    assert argv[0] == "worker"  # `switchyard worker` hands the rest to the worker's parser
    args = build_parser().parse_args(argv[1:])
    assert (args.model, args.bundle, args.machine_profile, args.pool, args.nats) == (
        ["BAAI/bge-m3"], "default", "l4", "default", "nats://nats:4222")
    assert (args.handler, args.health_port, args.health_host) == ("switchyard.worker.handlers:echo", 8081, "10.0.0.7")
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # heartbeats' host
    assert env["HF_HOME"] == {"name": "HF_HOME", "value": "/models"}
    assert "command" not in c  # the image's entrypoint


def test_machine_profile_scheduling_and_gpu_resources_come_from_the_gateway() -> None:
    deps = rendered(upstream())
    gpu, cpu = deps["bge-l4"]["spec"]["template"]["spec"], deps["bge-cpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu["containers"][0]["resources"] == {"requests": {"cpu": "1", "nvidia.com/gpu": "1"},
                                                 "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}}
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert cpu["containers"][0]["resources"] == TEMPLATE["resources"]


def test_worker_pods_are_restricted_probed_and_drained_within_their_grace_period() -> None:
    dep = rendered(upstream())["bge-cpu"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": fleets.HEALTH_PORT} in c["ports"]
    drain = float(c["args"][c["args"].index("--drain-timeout") + 1])
    assert 42.5 < drain < pod["terminationGracePeriodSeconds"]  # the drain ends before the SIGKILL
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "models"}
    # KEDA owns replicas: the applied object never names them; the seed starts the fleet at zero.
    assert "replicas" not in dep["spec"] and fleets.seed(dep)["spec"]["replicas"] == 0


def test_the_worker_service_selects_every_rendered_pod_on_the_health_port() -> None:
    up = upstream()
    svc = fleets.worker_service(up)
    assert svc["metadata"]["name"] == "bge-workers" and svc["spec"]["clusterIP"] == "None"
    for dep in rendered(up).values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"] == [{"name": "health", "port": fleets.HEALTH_PORT, "targetPort": "health"}]


def test_fleets_mix_rendered_and_your_own_deployments() -> None:
    up = upstream(fleets=[{"machineProfile": "cpu", "deployment": "mine"}, {"machineProfile": "l4"}])
    assert [(f.deployment, f.rendered) for f in children.fleets(up)] == [("mine", False), ("bge-l4", True)]


def test_a_profile_the_gateway_does_not_schedule_is_a_problem() -> None:
    up = Upstream.model_validate({**upstream().model_dump(by_alias=True, exclude_none=True),
                                  "spec": {**upstream().spec.model_dump(by_alias=True, exclude_none=True),
                                           "machineProfiles": ["h100"]}})
    (fleet,) = children.fleets(up)
    assert "not in Gateway 'main' spec.machineProfiles" in (fleets.problem(up, gateway(), fleet) or "")


@pytest.mark.parametrize(("workers", "error"), [
    ({"template": {**TEMPLATE, "args": ["worker", "--model", "x"]}}, "--model is set by the operator"),
    ({"template": {**TEMPLATE, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}, "hostPath is not allowed"),
    ({"template": None, "fleets": [{"machineProfile": "cpu"}, {"machineProfile": "l4", "deployment": "d"}]},
     "no workers.template to render it from"),
    ({"deployment": "mine"}, "Set one"),
])
def test_what_cannot_be_rendered_is_refused(workers: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        upstream(**workers)


def test_several_bundles_render_one_fleet_per_profile_and_bundle() -> None:
    up = Upstream.model_validate({
        "kind": "Upstream", "metadata": {"name": "bge", "namespace": "team", "uid": "u1"},
        "spec": {"model": "m", "operations": ["encode"], "machineProfiles": ["l4"],
                 "bundles": [{"name": "a"}, {"name": "b"}], "workers": {"service": "w", "template": TEMPLATE}}})
    assert [(f.name, f.deployment, f.run_bundle) for f in children.fleets(up)] == [
        ("bge.l4.a", "bge-l4-a", "a"), ("bge.l4.b", "bge-l4-b", "b")]
    with pytest.raises(ValidationError, match="needs a bundle"):
        Upstream.model_validate({**up.model_dump(by_alias=True, exclude_none=True), "spec": {
            **up.spec.model_dump(by_alias=True, exclude_none=True), "workers": {
                "service": "w", "template": TEMPLATE, "fleets": [{"machineProfile": "l4"}]}}})
