"""Worker fleets rendered from an Upstream's template: flags, scheduling, security, probes, grace."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from switchyard.api.gateway import Gateway
from switchyard.api.pool import Pool
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


# -- Pool fleets ---------------------------------------------------------------------------------

def pool(name: str = "team-a", **spec: Any) -> Pool:
    return Pool.model_validate({"kind": "Pool", "metadata": {"name": name, "namespace": "team", "uid": "p1"},
                                "spec": {"gpus": {"l4": 2}, "models": ["BAAI/bge-m3"], "ttlSeconds": 60, **spec}})


def test_a_pool_renders_the_upstream_fleet_on_each_reserved_profile_with_its_pool_and_size() -> None:
    up, gw = upstream(), gateway()
    (pf,), problems = fleets.pool_fleets(pool(gpus={"l4": 2, "cpu": 0}), up, gw)  # cpu 0: nothing reserved
    assert problems == [] and pf.replicas == 2
    assert (pf.fleet.deployment, pf.fleet.machine_profile, pf.fleet.run_bundle) == \
        ("pool-team-a-bge-l4", "l4", "default")
    dep = fleets.pool_deployment(pf, gw, gw.spec.machine_profiles[1])
    assert dep["spec"]["replicas"] == 2  # held by the operator: no ScaledObject scales a pool fleet
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pool", "team-a", "p1")
    assert dep["metadata"]["labels"]["switchyard.dev/pool"] == "team-a"
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    args = build_parser().parse_args([a.replace("$(POD_IP)", "10.0.0.7") for a in c["args"]][1:])
    assert (args.pool, args.model, args.machine_profile, args.bundle) == ("team-a", ["BAAI/bge-m3"], "l4", "default")
    assert pod["metadata"]["labels"]["switchyard.dev/pool"] == "team-a"
    # The Upstream's worker Service selects the pool's pods too (gateways admit workers by its endpoints),
    # while the Upstream's own fleet's selector does not: the two Deployments never share pods.
    assert fleets.worker_service(up)["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    own = rendered(up)["bge-l4"]
    assert not own["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert "switchyard.dev/pool" not in own["spec"]["template"]["metadata"]["labels"]
    # The rest is the Upstream's rendering: scheduling, GPUs, security, probes, grace.
    assert pod["spec"]["nodeSelector"] == own["spec"]["template"]["spec"]["nodeSelector"]
    assert c["resources"] == own["spec"]["template"]["spec"]["containers"][0]["resources"]
    grace = own["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace


def test_a_profile_the_upstream_does_not_offer_renders_nothing_for_that_model() -> None:
    assert fleets.pool_fleets(pool(gpus={"h100": 3}), upstream(), gateway()) == ([], [])


def test_a_pool_runs_one_fleet_per_bundle_where_the_upstream_has_several() -> None:
    up = Upstream.model_validate({
        "kind": "Upstream", "metadata": {"name": "bge", "namespace": "team", "uid": "u1"},
        "spec": {"model": "BAAI/bge-m3", "operations": ["encode"], "machineProfiles": ["l4"],
                 "bundles": [{"name": "a"}, {"name": "b"}], "workers": {"service": "w", "template": TEMPLATE}}})
    found, problems = fleets.pool_fleets(pool(gpus={"l4": 1}), up, gateway())
    assert problems == []
    assert [(pf.fleet.deployment, pf.fleet.run_bundle, pf.replicas) for pf in found] == [
        ("pool-team-a-bge-l4-a", "a", 1), ("pool-team-a-bge-l4-b", "b", 1)]


def test_what_a_pool_cannot_render_is_said_with_the_reason() -> None:
    mine = Upstream.model_validate({**upstream().model_dump(by_alias=True, exclude_none=True), "spec": {
        **upstream().spec.model_dump(by_alias=True, exclude_none=True),
        "workers": {"service": "bge-workers", "deployment": "my-workers"}}})
    found, (why,) = fleets.pool_fleets(pool(), mine, gateway())
    assert found == [] and "Upstream 'bge' has no workers.template" in why and "--pool team-a" in why
    found, (why,) = fleets.pool_fleets(pool("p" * 60), upstream(), gateway())
    assert found == [] and "longer than 63 characters" in why and "shorter pool name" in why
    gw = Gateway.model_validate({**gateway().model_dump(by_alias=True, exclude_none=True), "spec": {
        "machineProfiles": [{"name": "cpu"}]}})
    found, (why,) = fleets.pool_fleets(pool(), upstream(), gw)
    assert found == [] and "machine profile 'l4' is not in Gateway 'main' spec.machineProfiles" in why


def test_an_upstream_fleet_is_scaled_on_the_default_pool_only() -> None:
    # Its workers run --pool default, so a pool's demand (its own fleets' work) never scales it.
    up = upstream()
    so = children.scaled_object(up, gateway(), children.fleets(up)[0])
    assert so["spec"]["triggers"][0]["metadata"]["pool"] == "default"
    mine = upstream(template=None, fleets=[{"machineProfile": "cpu", "deployment": "a"},
                                           {"machineProfile": "l4", "deployment": "b"}])
    assert "pool" not in children.scaled_object(mine, gateway(), children.fleets(mine)[0])["spec"]["triggers"][0][
        "metadata"]  # your own Deployment's workers: we do not know their pool


def test_the_gateway_role_manages_pools_and_nothing_more() -> None:
    rules = children.gateway_role(gateway())["rules"]
    assert [r for r in rules if r["apiGroups"] == ["switchyard.dev"]] == [
        {"apiGroups": ["switchyard.dev"], "resources": ["pools"],
         "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
        # Planner run counts (gateway/plannerstatus.py): a patch of the status subresource, nothing else.
        {"apiGroups": ["switchyard.dev"], "resources": ["planners/status"], "verbs": ["patch"]}]


T0 = 1_800_000_000.0  # the lease's renewTime in these cases


def at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize(("annotation", "now", "moved"), [
    (at(T0 + 20), T0 + 20.5, T0 + 20),  # a renewal within the ttl moves renewTime to it
    (at(T0 + 20), T0 + 75, T0 + 20),  # seen late, but made in time: it counts
    (at(T0 - 5), T0 + 1, None),  # never backwards
    (at(T0), T0 + 1, None),  # already applied
    (at(T0 + 60), T0 + 61, None),  # made when the lease had lapsed: an expired pool stays expired
    (at(T0 + 3600), T0 + 30, T0 + 30 + children.RENEW_SKEW_S),  # a clock far ahead: at most now + skew
    ("tomorrow", T0 + 1, None),  # not a time: ignored
    (None, T0 + 1, None),
])
def test_a_renewal_annotation_moves_the_lease_forward_only_and_never_revives(annotation: str | None, now: float,
                                                                             moved: float | None) -> None:
    got = children.renewal(T0, 60, annotation, now)
    assert got == pytest.approx(moved) if moved is not None else got is None


def test_a_pool_that_never_expires_ignores_renewals() -> None:
    assert children.renewal(T0, 0, at(T0 + 20), T0 + 21) is None
    assert children.renewal(T0, 60, at(T0 + 20).replace("Z", ""), T0 + 21) == pytest.approx(T0 + 20)  # naive: UTC
