"""Pure assembly of a DAGFlow's `status` from a plan, and the work transitions worth an Event."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from dagflow.api.models import READY_PHASES, FlowPhase, WorkPhase
from dagflow.controller.planner import Plan

READY_CONDITION = "Ready"
SERVING_CONDITION = "Serving"
FINISHED = frozenset({FlowPhase.SUCCEEDED, FlowPhase.FAILED, FlowPhase.STOPPED})
# Status fields about runs rather than the current run's works: every status written keeps them
# (`dagflow.controller.runcontrol` brings them up to date).
RUN_CONTROL_STATUS_FIELDS = (
    "runSpecHash",
    "handledRequests",
    "lastScheduleTime",
    "nextScheduleTime",
    "runs",
    "params",
    "noCache",
    # Named when the run begins; every later status of the run keeps it (its files are there).
    "workspaceClaim",
    # Where the run's works left their artifacts and logs.
    "artifactStore",
)
# More works than this making the same move in one pass get one Event between them.
EVENTS_PER_PASS_AND_REASON = 5


class FlowEvent(Protocol):
    """What an Event on the flow says: a work's move, or a run decision's notice."""

    @property
    def reason(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def event_type(self) -> str: ...


@dataclass(frozen=True)
class Transition:
    """A work that changed phase, for one Event on the flow."""

    work: str
    phase: WorkPhase
    message: str
    previous: WorkPhase | None = None
    # A work of spec.finally: its failure is told apart (FinallyFailed), as it fails no run.
    is_finally: bool = False

    @property
    def unavailable(self) -> bool:
        """A serve work that was serving and no longer is."""
        return self.previous == WorkPhase.SERVING and self.phase == WorkPhase.RUNNING

    @property
    def reason(self) -> str:
        if self.unavailable:
            return "WorkUnavailable"
        if self.is_finally and self.phase == WorkPhase.FAILED:
            return "FinallyFailed"
        return {
            WorkPhase.RUNNING: "WorkStarted",
            WorkPhase.SUCCEEDED: "WorkSucceeded",
            WorkPhase.FAILED: "WorkFailed",
            WorkPhase.SKIPPED: "WorkSkipped",
            WorkPhase.SERVING: "WorkServing",
            WorkPhase.PENDING: "WorkPending",
            WorkPhase.STOPPED: "WorkStopped",
            WorkPhase.WAITING: "ApprovalRequired",
        }[self.phase]

    @property
    def event_type(self) -> str:
        return "Warning" if self.phase == WorkPhase.FAILED or self.unavailable else "Normal"


def build_status(
    plan: Plan,
    previous: Mapping[str, Any],
    run: int,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The whole `status` for a plan; fields that did not change keep their earlier timestamps."""
    same_run = previous.get("run") == run
    started_at = previous.get("startedAt") if same_run and previous.get("startedAt") else now
    status: dict[str, Any] = {
        "phase": plan.phase.value,
        "progress": plan.progress,
        "run": run,
        "observedGeneration": generation,
        "startedAt": started_at,
        "works": [state.to_status() for state in plan.works],
    }
    if plan.outcome is not None:
        status["outcome"] = plan.outcome.value
    if plan.phase in FINISHED:
        kept = same_run and previous.get("phase") == plan.phase.value and previous.get("finishedAt")
        status["finishedAt"] = previous["finishedAt"] if kept else now
    endpoints = [state.endpoint for state in plan.works if state.endpoint]
    if len(endpoints) == 1:
        status["endpoint"] = endpoints[0]
    if plan.message:
        status["message"] = plan.message
    if plan.queued:
        status["queued"] = plan.queued
    status["conditions"] = [_ready_condition(plan, previous, generation, now)]
    if plan.serve_works:
        status["conditions"].append(_serving_condition(plan, previous, generation, now))
    status.update(run_control_fields(previous))
    return status


def run_control_fields(previous: Mapping[str, Any]) -> dict[str, Any]:
    """The run-control fields of a status, to carry into the next one."""
    return {field: previous[field] for field in RUN_CONTROL_STATUS_FIELDS if previous.get(field) is not None}


def invalid_status(message: str, previous: Mapping[str, Any], generation: int, now: str) -> dict[str, Any]:
    """Status of a flow the validator refused: Failed with the validator's message, nothing run."""
    kept = previous.get("phase") == FlowPhase.FAILED.value and previous.get("message") == message
    status: dict[str, Any] = {
        "phase": FlowPhase.FAILED.value,
        "progress": previous.get("progress", "0/0"),
        "run": previous.get("run", 0),
        "observedGeneration": generation,
        "message": message,
        "finishedAt": previous.get("finishedAt", now) if kept else now,
        "works": previous.get("works", []),
    }
    status["conditions"] = [
        _condition(False, "Invalid", message, previous, generation, now),
    ]
    status.update(run_control_fields(previous))
    return status


def transitions(previous_works: Mapping[str, Mapping[str, Any]], plan: Plan) -> list[Transition]:
    """Works whose phase differs from the one in the previous status of the same run."""
    changed = []
    for state in plan.works:
        before = previous_works.get(state.name, {}).get("phase", WorkPhase.PENDING.value)
        if state.phase.value != before and state.phase != WorkPhase.PENDING:
            previous = WorkPhase(before) if before in WorkPhase._value2member_map_ else None
            transition = Transition(state.name, state.phase, "", previous, state.is_finally)
            detail = f": {state.message}" if state.message else ""
            changed.append(replace(transition, message=f"Work {state.name} {_verb(transition)}{detail}"))
    return changed


def summarize(changed: list[Transition], limit: int = EVENTS_PER_PASS_AND_REASON) -> list[Transition]:
    """The Events to post for one pass: one per work, unless more than `limit` works made the
    same move at once, in which case a single Event names them (the first `limit` of them).

    A wide flow would otherwise post thousands of Events, each an API write; the status holds every
    work's detail anyway.
    """
    by_reason: dict[str, list[Transition]] = {}
    for transition in changed:
        by_reason.setdefault(transition.reason, []).append(transition)
    events = []
    for group in by_reason.values():
        phase = group[0].phase
        if len(group) <= limit:
            events.extend(group)
            continue
        names = ", ".join(transition.work for transition in group[:limit])
        shown = f"{names} and {len(group) - limit} more"
        verb = _verb(group[0], plural=True)
        events.append(Transition(shown, phase, f"{len(group)} works {verb}: {shown}", group[0].previous))
    return events


# What an Event says a work did, by its reason: of one work, of several.
_VERBS = {
    "WorkStarted": ("started", "started"),
    "WorkSucceeded": ("succeeded", "succeeded"),
    "WorkFailed": ("failed", "failed"),
    "WorkSkipped": ("was skipped", "were skipped"),
    "WorkServing": ("is serving", "are serving"),
    "WorkUnavailable": ("is unavailable", "are unavailable"),
    "WorkStopped": ("was stopped", "were stopped"),
    "FinallyFailed": ("(a finally work) failed", "(finally works) failed"),
    "ApprovalRequired": ("waits for approval", "wait for approval"),
}


def _verb(transition: Transition, plural: bool = False) -> str:
    fallback = transition.phase.value.lower()
    return _VERBS.get(transition.reason, (fallback, fallback))[plural]


def _ready_condition(plan: Plan, previous: Mapping[str, Any], generation: int, now: str) -> dict[str, Any]:
    ready = plan.phase in READY_PHASES
    message = plan.message or f"{plan.progress} works finished or serving"
    return _condition(ready, plan.phase.value, message, previous, generation, now)


def _serving_condition(plan: Plan, previous: Mapping[str, Any], generation: int, now: str) -> dict[str, Any]:
    endpoints = {state.name: state.endpoint for state in plan.works if state.endpoint}
    return serving_condition(plan.serve_works, plan.serving, endpoints, previous, generation, now)


def serving_condition(
    serve_works: Sequence[str],
    serving: Mapping[str, int],
    endpoints: Mapping[str, str],
    previous: Mapping[str, Any],
    generation: int,
    now: str,
) -> dict[str, Any]:
    """Whether every serve work has available pods, and which run's model they run: the model an
    earlier run rolled out keeps serving while a later run retrains or rolls out its own, after that
    run failed, and after it was stopped."""
    missing = [name for name in serve_works if name not in serving]
    if missing:
        message = f"no available Deployment for {', '.join(missing)}"
        return _condition(False, "NotServing", message, previous, generation, now, SERVING_CONDITION)
    served = [
        f"run {serving[name]}'s model serves at {endpoints.get(name) or name}"
        if len(serve_works) == 1
        else f"{name}: run {serving[name]}'s model serves at {endpoints.get(name) or name}"
        for name in serve_works
    ]
    return _condition(True, "Serving", "; ".join(served), previous, generation, now, SERVING_CONDITION)


def stopped_ready_condition(
    message: str, previous: Mapping[str, Any], generation: int, now: str
) -> dict[str, Any]:
    """The Ready condition of a stopped run."""
    return _condition(False, FlowPhase.STOPPED.value, message, previous, generation, now)


def _condition(
    ready: bool,
    reason: str,
    message: str,
    previous: Mapping[str, Any],
    generation: int,
    now: str,
    kind: str = READY_CONDITION,
) -> dict[str, Any]:
    status = "True" if ready else "False"
    earlier = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)
    since = earlier["lastTransitionTime"] if earlier and earlier.get("status") == status else now
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


# etcd stores objects of at most 1.5 MiB; what the API server adds (managed fields) needs some room.
MAX_STORED_OBJECT_BYTES = 1536 * 1024
OBJECT_MARGIN_BYTES = 32 * 1024
# What a work's message is cut to when the status would not fit otherwise.
SHORT_MESSAGE_CHARS = 120
SHORT_FAILED_INSTANCES = 3


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def fit_in_object(status: dict[str, Any], room: int) -> dict[str, Any]:
    """`status`, or a shorter one when it would not fit in `room` bytes: first every work's message
    cut short and a matrix work's failed instances listed fewer, then the works' messages left out.
    Outputs never weigh much here (past a budget they are kept in ConfigMaps), so this is the last
    line: a write etcd would refuse is never attempted, and the flow's status keeps moving."""
    if json_size(status) <= room:
        return status
    works = []
    for work in status.get("works") or []:
        work = dict(work)
        if len(work.get("message", "")) > SHORT_MESSAGE_CHARS:
            work["message"] = work["message"][: SHORT_MESSAGE_CHARS - 1] + "…"
        if work.get("failedInstances"):
            work["failedInstances"] = work["failedInstances"][:SHORT_FAILED_INSTANCES]
        works.append(work)
    shorter = {**status, "works": works}
    if json_size(shorter) <= room:
        return shorter
    note = "the works' messages are left out of the status to keep it within the object size limit"
    return {
        **shorter,
        "works": [{key: value for key, value in work.items() if key != "message"} for work in works],
        "message": f"{status['message']}; {note}" if status.get("message") else note,
    }
