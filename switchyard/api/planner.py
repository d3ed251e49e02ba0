"""Planner: a named DAG of model calls, run through the queue by POST /v1/plans/{planner} (docs/jobs.md)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from .meta import DNS_LABEL, Label, Model, Resource, Status
from .upstream import Operation


class Step(Model):
    name: str = Field(pattern=DNS_LABEL, max_length=63, description="Step name, referenced by dependsOn.")
    model: str = Field(min_length=1, max_length=260, description="Model id, optionally with :profile.")
    operation: Operation = Field(description="Operation to call on the model.")
    depends_on: list[Label] = Field(default_factory=list, max_length=64,
                                    description="Steps whose results this step needs.")
    params: dict[str, Any] = Field(default_factory=dict, description="Params sent with the call.")


class PlannerSpec(Model):
    steps: list[Step] = Field(min_length=1, max_length=64, description="The DAG; it must be acyclic.")
    output: str | None = Field(default=None, description="Step whose result is returned; default the last.")
    gateway_ref: str | None = Field(default=None, description="Gateway serving the planner; empty means every Gateway.")

    @model_validator(mode="after")
    def _is_dag(self) -> PlannerSpec:
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"steps has duplicate names: {', '.join(dupes)}")
        known = set(names)
        for s in self.steps:
            missing = [d for d in s.depends_on if d not in known]
            if missing:
                raise ValueError(f"step {s.name!r} depends on unknown step(s) {', '.join(missing)}")
        if self.output is not None and self.output not in known:
            raise ValueError(f"output names unknown step {self.output!r}")
        cycle = find_cycle({s.name: s.depends_on for s in self.steps})
        if cycle:
            raise ValueError(f"steps form a cycle: {' -> '.join(cycle)}")
        return self


class PlannerFailure(Model):
    at: str = Field(description="When the run failed (RFC 3339).")
    step: str | None = Field(default=None, max_length=63,
                             description="The step that failed it; empty when the run failed before its steps "
                                         "could run (its API key was removed, a join of unequal item counts).")
    code: str = Field(max_length=64, description="The run's error code (as its job's `result.error.code`).")


class PlannerRuns(Model):
    """Runs of the Planner on every gateway sharing its NATS, every tenant's; counts, not the runs themselves."""

    started: int = Field(ge=0, description="Runs accepted since the counts began.")
    running: int = Field(ge=0, description="Of those, the runs not ended yet.")
    succeeded: int = Field(ge=0, description="Runs that answered their output step's result.")
    failed: int = Field(ge=0, description="Runs a failed step (or a refused one) ended.")
    cancelled: int = Field(ge=0, description="Runs cancelled through POST /v1/jobs/{id}/cancel.")
    last_run_at: str | None = Field(default=None, description="When the latest run started (RFC 3339).")
    last_failure: PlannerFailure | None = Field(default=None, description="The latest failed run.")


class PlannerStatus(Status):
    phase: str | None = Field(default=None, description="Valid or Invalid (the operator's).")
    runs: PlannerRuns | None = Field(
        default=None, description="Run counts, written by the gateways every few seconds while they change "
                                  "(kept in JetStream, exact across gateway replicas; docs/jobs.md#planners).")


class Planner(Resource[PlannerSpec, PlannerStatus]):
    KIND: ClassVar[str] = "Planner"
    PLURAL: ClassVar[str] = "planners"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("syplan",)

    kind: Literal["Planner"] = "Planner"


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in deps:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None
