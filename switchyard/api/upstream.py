"""Upstream: one model served by a fleet of workers."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from .meta import DNS_LABEL, Label, Model, Resource, Status
from .pool import MODEL_ID

# image and speech: text-to-image and text-to-speech (POST /v1/images/generations, /v1/audio/speech).
Operation = Literal["encode", "score", "generate", "chat", "extract", "rerank", "classify", "image", "speech"]


class Bundle(Model):
    """A worker runtime able to serve this model; the lowest priority wins."""

    name: str = Field(pattern=DNS_LABEL, max_length=63,
                      description="Bundle name; workers announce the bundle they run.")
    priority: int = Field(default=100, ge=0, le=1_000_000,
                          description="Lower wins when several bundles are compatible.")
    profiles: list[Label] = Field(
        default_factory=list, max_length=32,
        description="Model profiles this bundle can serve; empty means every profile.",
    )
    weight: int | None = Field(
        default=None, ge=0, le=100,
        description="Percent of the model's requests this bundle takes (a canary or A/B split). The weights set "
                    "on an Upstream's bundles sum to 100; a request's bundle is a hash of its tenant and "
                    "X-Request-ID, so the same id always gets the same bundle. X-Bundle overrides the split; "
                    "without weights, priority decides.")


class ModelProfile(Model):
    """A named variant of the model, selected by a `:profile` suffix on the model id."""

    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Selected by a `:name` suffix on the model id.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Defaults merged under the request's params."
    )


class Scaling(Model):
    min_replicas: int = Field(default=0, ge=0, le=10_000, description="0 lets KEDA scale the workers to zero.")
    max_replicas: int = Field(default=1, ge=1, le=10_000, description="Upper bound for KEDA.")
    target_pending_per_replica: int = Field(default=4, ge=1, le=100_000,
                                            description="Queued items one worker is expected to absorb.")
    activation_threshold: int = Field(
        default=0, ge=0, description="Pending items above which workers scale up from zero."
    )
    cooldown_seconds: int = Field(default=300, ge=0, le=86_400,
                                  description="Idle time before scaling back to minReplicas.")
    polling_interval_seconds: int = Field(
        default=30, ge=1, le=3600,
        description="How often KEDA polls the scaler (IsActive, GetMetrics). Scale-up from zero is pushed at "
                    "once; scaling down and up past one replica follow this poll.")
    cold_start_seconds: int = Field(
        default=180, ge=1, le=86_400,
        description="Expected time from the first request at zero to a live worker, used for a 202's "
                    "estimated_wait_s and Retry-After until the gateways have measured a cold start.")

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        return self


class CircuitBreaker(Model):
    """Fail fast on a lane whose workers keep failing, then let probes through (per gateway process)."""

    consecutive_failures: int = Field(
        ge=1, le=1000,
        description="Worker failures in a row on one lane (worker_error after every attempt, worker_lost, no "
                    "result within timeoutSeconds) that open its circuit; a refused input (invalid_input) or "
                    "a cancel is no failure, and a success resets the count.")
    cool_off_seconds: int = Field(
        default=30, ge=1, le=3600,
        description="How long an open circuit answers 503 circuit_open (Retry-After: the time left) before "
                    "it lets probes through.")
    half_open_probes: int = Field(
        default=1, ge=1, le=100,
        description="Requests let through at once after the cool-off; a success closes the circuit, a "
                    "failure opens it again.")


class Fallback(Model):
    """Another model to serve a request when this one cannot start a worker soon enough."""

    model: str = Field(pattern=MODEL_ID, max_length=200,
                       description="The model (an Upstream's spec.model on the same Gateway) to use instead.")
    after_seconds: int = Field(
        ge=1, le=86_400,
        description="A request for a lane with no live worker whose learned cold-start ETA is longer than "
                    "this goes to the fallback model, if that one has a live worker and the key may use it.")


class Fleet(Model):
    """The workers of one machine profile (and optionally one bundle): KEDA scales them on the
    demand of exactly those lanes, so a request for one profile never starts another's workers."""

    machine_profile: Label = Field(description="One of the Upstream's machineProfiles.")
    bundle: Label | None = Field(default=None, description="One of the Upstream's bundles; empty: every bundle.")
    deployment: str | None = Field(
        default=None, pattern=DNS_LABEL, max_length=63,
        description="A Deployment you manage, which KEDA scales. Empty: the operator renders the fleet's "
                    "Deployment from workers.template, named <upstream>-<machineProfile>[-<bundle>].")


# Flags the operator gives every rendered worker; a template may not set them too.
FLEET_FLAGS = ("--nats", "--model", "--bundle", "--machine-profile", "--pool", "--health-port", "--health-host",
               "--drain-timeout")
# Volume sources Pod Security "restricted" allows.
Arg = Annotated[str, Field(max_length=4096)]
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                                "projected", "secret"})


class WorkerTemplate(Model):
    """What every rendered worker runs; the operator adds the fleet's flags, scheduling and security."""

    image: str = Field(min_length=1, max_length=512, description="Worker image.")
    command: list[Arg] | None = Field(default=None, max_length=16,
                                      description="Entrypoint; default the image's (`switchyard` in ours).")
    args: list[Arg] = Field(
        default_factory=list, max_length=64,
        description="The worker's own arguments, e.g. [worker, --handler, pkg.mod:fn]. The operator appends "
                    "--nats, --model, --bundle, --machine-profile, --pool, --health-port, --health-host and "
                    "--drain-timeout, so these may not appear here.")
    env: list[dict[str, Any]] = Field(default_factory=list, max_length=64, description="Container env (EnvVar).")
    resources: dict[str, Any] = Field(
        default_factory=dict,
        description="Container resources (requests, limits); the machine profile's GPU resources are added.")
    volumes: list[dict[str, Any]] = Field(
        default_factory=list, max_length=32,
        description="Pod volumes (kinds Pod Security \"restricted\" allows: configMap, secret, emptyDir, "
                    "persistentVolumeClaim, projected, downwardAPI, csi, ephemeral).")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, max_length=32,
                                                description="Container volumeMounts of those volumes.")

    @model_validator(mode="after")
    def _checked(self) -> WorkerTemplate:
        for arg in self.args:
            if arg.split("=", 1)[0] in FLEET_FLAGS:
                raise ValueError(f"workers.template.args: {arg.split('=', 1)[0]} is set by the operator")
        for v in self.volumes:
            kinds = set(v) - {"name"}
            if not kinds <= RESTRICTED_VOLUMES:
                raise ValueError(f"workers.template.volumes: {', '.join(sorted(kinds - RESTRICTED_VOLUMES))} "
                                 "is not allowed by Pod Security \"restricted\"")
        return self


class WorkerRef(Model):
    service: str = Field(pattern=DNS_LABEL, max_length=63, description="Worker Service name.")
    deployment: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Deployment KEDA scales when there are no fleets and no template; defaults to the Service name.",
    )
    template: WorkerTemplate | None = Field(
        default=None,
        description="Render the workers: the operator makes each fleet's Deployment from it (one fleet per machine "
                    "profile, or per profile and bundle, when fleets is empty) and the Service.")
    fleets: list[Fleet] = Field(
        default_factory=list, max_length=64,
        description="One Deployment per machine profile (or per profile and bundle), each scaled on its own "
                    "lanes' demand. Empty: one Deployment for every profile, or with a template one rendered "
                    "fleet per profile (per profile and bundle when there are several bundles). When set, every "
                    "machine profile has exactly one fleet, or one per bundle.")


class UpstreamSpec(Model):
    model: str = Field(pattern=MODEL_ID, max_length=200, description="Model id clients call, e.g. BAAI/bge-m3.")
    operations: list[Operation] = Field(min_length=1, max_length=9,
                                        description="Operations the model supports (POST /v1/{op}/{model}).")
    bundles: list[Bundle] = Field(default_factory=lambda: [Bundle(name="default", priority=0)], min_length=1,
                                  max_length=16, description="Runtimes able to serve the model.")
    profiles: list[ModelProfile] = Field(default_factory=list, max_length=32,
                                         description="Named variants of the model.")
    machine_profiles: list[Label] = Field(min_length=1, max_length=16,
                                          description="Machine profiles (GPU types) offered, e.g. l4, a100-80gb.")
    default_machine_profile: str | None = Field(default=None,
                                                description="Used when a request names none; default the first.")
    timeout_seconds: float = Field(default=60.0, gt=0, le=3600,
                                   description="How long a synchronous request waits for its result.")
    max_attempts: int = Field(default=3, ge=1, le=20, description="Deliveries before an item is failed.")
    scaling: Scaling = Field(default_factory=Scaling, description="KEDA scaling of the worker Deployment.")
    workers: WorkerRef = Field(description="The worker Service and Deployment.")
    gateway_ref: str | None = Field(
        default=None, description="Gateway that serves this model; empty means every Gateway."
    )
    aliases: list[Annotated[str, Field(pattern=MODEL_ID, max_length=200)]] = Field(
        default_factory=list, max_length=16,
        description="Other names clients may call the model by; unique across the Gateway's models and aliases. "
                    "An API key's models list names the model, not an alias.")
    circuit_breaker: CircuitBreaker | None = Field(
        default=None, description="Fail fast on a lane after consecutive worker failures; empty: off.")
    fallback: Fallback | None = Field(
        default=None, description="The model a request goes to when this one's lane has no live worker and "
                                  "cannot start one within afterSeconds; empty: none.")

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamSpec:
        _unique("bundles", [b.name for b in self.bundles])
        _unique("aliases", self.aliases)
        if self.model in self.aliases:
            raise ValueError(f"aliases: {self.model!r} is the model itself")
        if self.fallback is not None and self.fallback.model in (self.model, *self.aliases):
            raise ValueError("fallback.model: a model cannot fall back to itself")
        weights = [b.weight for b in self.bundles if b.weight is not None]
        if weights and sum(weights) != 100:
            raise ValueError(f"bundles: the weights sum to {sum(weights)}; the weights set must sum to 100")
        _unique("profiles", [p.name for p in self.profiles])
        _unique("machineProfiles", self.machine_profiles)
        if self.default_machine_profile and self.default_machine_profile not in self.machine_profiles:
            raise ValueError("defaultMachineProfile must be one of machineProfiles")
        known = {p.name for p in self.profiles}
        for b in self.bundles:
            for p in b.profiles:
                if p not in known:
                    raise ValueError(f"bundle {b.name!r} names unknown profile {p!r}")
        _check_fleets(self)
        return self


class UpstreamStatus(Status):
    live_workers: dict[str, int] | None = Field(default=None)


class Upstream(Resource[UpstreamSpec, UpstreamStatus]):
    KIND: ClassVar[str] = "Upstream"
    PLURAL: ClassVar[str] = "upstreams"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("syu",)

    kind: Literal["Upstream"] = "Upstream"


def _check_fleets(spec: UpstreamSpec) -> None:
    """Every lane (machine profile, bundle) is served by exactly one fleet."""
    fleets = spec.workers.fleets
    if spec.workers.template is not None and spec.workers.deployment is not None:
        raise ValueError("workers: a template renders the Deployments; deployment names one you manage. Set one")
    for f in fleets:
        if f.deployment is None and spec.workers.template is None:
            raise ValueError(f"workers.fleets: fleet {f.machine_profile!r} names no deployment and there is no "
                             "workers.template to render it from")
        if f.deployment is None and f.bundle is None and len(spec.bundles) > 1:
            raise ValueError(f"workers.fleets: a rendered fleet runs one bundle; fleet {f.machine_profile!r} needs "
                             "a bundle because the Upstream has several")
    if not fleets:
        return
    bundles = {b.name for b in spec.bundles}
    for f in fleets:
        if f.machine_profile not in spec.machine_profiles:
            raise ValueError(f"workers.fleets: machine profile {f.machine_profile!r} is not in machineProfiles")
        if f.bundle is not None and f.bundle not in bundles:
            raise ValueError(f"workers.fleets: bundle {f.bundle!r} is not in bundles")
    _unique("workers.fleets deployments", [f.deployment for f in fleets if f.deployment])
    for mp in spec.machine_profiles:
        mine = [f.bundle for f in fleets if f.machine_profile == mp]
        if mine == [None]:
            continue
        if not mine:
            raise ValueError(f"workers.fleets: no fleet for machine profile {mp!r}")
        named = [b for b in mine if b is not None]
        if len(named) != len(mine) or sorted(named) != sorted(bundles):
            raise ValueError(f"workers.fleets: machine profile {mp!r} needs one fleet for every bundle, "
                             "or one fleet without a bundle")


def _unique(field: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{field} has duplicate names: {', '.join(dupes)}")
