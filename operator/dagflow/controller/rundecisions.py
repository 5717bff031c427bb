"""When a run starts, and why: pure, from the flow (spec, status, annotations) and the time now.

Every pass asks `decide_run` one question: start a new run, stop the current one, or go on with it.
The answer, by priority:

1. The flow's first pass starts run 1 (Created). Run requests already on the flow then are taken as
   answered by it: a manifest applied with a request annotation does not run twice.
2. A stop request stops the current run if it is active or has works still running (a run that
   failed under failurePolicy Continue): its running Jobs are deleted, its works that have not
   finished end Stopped, and so does the run.
3. A change to what runs starts a run (SpecChange). "What runs" is every spec field but the
   run-control fields (`RUN_CONTROL_FIELDS`: schedule, timeZone, concurrencyPolicy,
   startingDeadlineSeconds, suspend, historyRuns); `metadata.generation` moves for those too, so
   the status records a fingerprint of the rest (`status.runSpecHash`) instead.
4. A rerun request starts a run of every work (Rerun).
5. A retry request starts a run of the works that did not succeed, and of every work that depends
   on one of them, and carries the other works' outcomes over (Retry). While the current run is
   active, the request waits for it to end; with nothing to retry it is dropped, saying so.
6. A due schedule tick starts a run (Schedule), replaces the active one (Replace), or is skipped
   (Forbid while a run is active, or later than startingDeadlineSeconds): see `dagflow.controller.schedule`.

A pass starts at most one run. That run answers whatever else asked for one in the same pass: a
run of every work answers a pending rerun and retry, and a tick that came due is dealt with by it.
A new run that begins while the current one is active ends that one (Stopped).

Requests are annotations whose value is a token (`dagflow.dev/rerun: "1735787045"`); a request is
new while its token differs from the last one acted on, kept in `status.handledRequests`. So
applying the same request twice acts once, and a request never changes the spec or its generation.

`spec.suspend` holds time, not requests: while it is true no work starts and no tick starts a run,
but a spec change or a request still starts its run, which then waits with the rest.

The reconciler records a decided run in the status (`status.run`, the trigger in `status.runs`,
`runSpecHash`, `handledRequests`, the schedule times) before it creates any child for it, so a
request is acted on once even when the operator stops between the two steps.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from dagflow.api.models import (
    RUN_CONTROL_FIELDS,
    DAGFlowSpec,
    DAGFlowStatus,
    FlowPhase,
    HandledRequests,
    RunRequest,
    RunTrigger,
    WorkPhase,
    WorkStatus,
)
from dagflow.controller.schedule import ScheduleAction, decide_schedule, schedule_of
from dagflow.rules.params import requested_params, run_params

ACTIVE_PHASES = frozenset({FlowPhase.PENDING, FlowPhase.RUNNING})
# Outcomes a retry keeps: everything else runs again.
KEPT_BY_RETRY = frozenset({WorkPhase.SUCCEEDED, WorkPhase.SERVING})
# Works still under way when their run is stopped.
UNFINISHED = frozenset({WorkPhase.PENDING, WorkPhase.RUNNING, WorkPhase.WAITING})
FINGERPRINT_LENGTH = 16
# Tokens up to this long are kept in the status as they are; longer ones by their hash.
MAX_TOKEN_LENGTH = 128
# The status fields a decision reads besides the works (read only for a retry).
_STATUS_FIELDS = ("phase", "run", "runSpecHash", "observedGeneration", "handledRequests", "params")
_SCHEDULE_FIELDS = ("lastScheduleTime", "nextScheduleTime")


class RunAction(StrEnum):
    """What a pass does about runs."""

    CONTINUE = "Continue"  # go on with the current run
    START = "Start"  # record `new_run` in the status, then start it
    STOP = "Stop"  # stop the current run


@dataclass(frozen=True)
class Notice:
    """Something a decision did that no status field shows on its own: worth an Event."""

    reason: str
    message: str
    warning: bool = False

    @property
    def event_type(self) -> str:
        return "Warning" if self.warning else "Normal"


@dataclass(frozen=True)
class NewRun:
    """A run to begin."""

    number: int
    trigger: RunTrigger
    spec_hash: str
    # The works that run in it, in spec order: all of them but the ones a retry carries over.
    works: tuple[str, ...]
    # A retry's outcomes carried over from earlier runs, each naming the run it came from.
    carried: tuple[WorkStatus, ...] = ()
    # The active run this one ends (Stopped), if any.
    replaces: int | None = None
    # The schedule tick it starts for (Schedule only).
    schedule_time: datetime | None = None
    # Parameter values of the run.
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDecision:
    """The verdict of one pass, and the run-control fields of the status after it."""

    action: RunAction
    # The current run after this decision: the new run's number when one starts.
    run: int
    handled: HandledRequests
    last_schedule_time: datetime | None
    next_schedule_time: datetime | None
    # spec.suspend: no work starts, in whichever run.
    hold: bool
    new_run: NewRun | None = None
    notices: tuple[Notice, ...] = ()
    # Requests that wait (a retry of an active run), in words, for the status message.
    waiting: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryPlan:
    """What a retry of a run runs again and what it carries over."""

    rerun: tuple[str, ...]
    carried: tuple[WorkStatus, ...]


def run_fingerprint(spec: DAGFlowSpec) -> str:
    """A hash of what runs: every spec field but the run-control fields.

    Fields left at their defaults are left out, so spelling a default out changes nothing, and
    neither does an operator upgrade that adds a field with a default.
    """
    shaping = spec.model_dump(
        mode="json", by_alias=True, exclude=set(RUN_CONTROL_FIELDS), exclude_defaults=True
    )
    if shaping.get("podDefaults") == {}:
        del shaping["podDefaults"]  # `podDefaults: {}` sets nothing
    canonical = json.dumps(shaping, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def requested_tokens(annotations: Mapping[str, str]) -> dict[RunRequest, str]:
    """The run requests on a flow, by kind: their tokens as the status records them."""
    found = {}
    for request in RunRequest:
        value = str(annotations.get(request.annotation) or "").strip()
        if value:
            found[request] = recorded_token(value)
    return found


def recorded_token(value: str) -> str:
    """A request's token as the status keeps it: itself, or the hash of a very long one."""
    if len(value) <= MAX_TOKEN_LENGTH:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def run_is_active(run: int, phase: FlowPhase | None) -> bool:
    """Whether run `run` still has works to run. A Serving flow has none: its batch works are done
    and its serve works serve."""
    return run > 0 and (phase is None or phase in ACTIVE_PHASES)


def decide_run(
    spec: DAGFlowSpec,
    status: Mapping[str, Any],
    annotations: Mapping[str, str],
    now: datetime,
    *,
    generation: int,
    newest_child_run: int = 0,
    spec_hash: str | None = None,
) -> RunDecision:
    """What this pass does about runs; see the module's description for the rules.

    `status` is the flow's status as stored (camelCase). `generation` is `metadata.generation`,
    read only for a status written before `runSpecHash` existed. `newest_child_run` is the newest
    run label on the flow's children, so a new run never takes a number already used.
    `spec_hash` is `run_fingerprint(spec)` when the caller keeps it with the parsed spec (it costs
    a pass over the whole spec).
    """
    record = _read_status(status)
    run = record.run or 0
    active = run_is_active(run, record.phase)
    spec_hash = spec_hash or run_fingerprint(spec)
    handled = record.handled_requests or HandledRequests()
    asked = requested_tokens(annotations)
    pending = {request: token for request, token in asked.items() if handled.token(request) != token}
    schedule = decide_schedule(
        schedule_of(spec),
        last_schedule_time=record.last_schedule_time,
        next_schedule_time=record.next_schedule_time,
        run_active=active,
        now=now,
        concurrency_policy=spec.concurrency_policy,
        starting_deadline_seconds=spec.starting_deadline_seconds,
        suspended=spec.suspend,
    )
    notices: list[Notice] = []

    def start(
        trigger: RunTrigger, works: Sequence[str] | None = None, carried: Sequence[WorkStatus] = ()
    ) -> RunDecision:
        # A run of every work answers every request pending; a retry answers itself; the first run
        # answers whatever the flow was created with.
        answered = set(asked) if trigger == RunTrigger.CREATED else set(pending)
        if trigger == RunTrigger.RETRY:
            answered = {RunRequest.RETRY}
        ticked = schedule if trigger == RunTrigger.SCHEDULE else schedule.answered_by_another_run()
        if ticked.missed and ticked.starts_run:
            notices.append(Notice("ScheduleMissed", _sentence(ticked.reason or ""), warning=True))
        requested: dict[str, str] = {}
        if trigger == RunTrigger.SCHEDULE:
            known = {param.name for param in spec.params}
            requested = {name: value for name, value in spec.schedule_params.items() if name in known}
        if answered & {RunRequest.RERUN, RunRequest.RETRY}:
            # The parameters given with a rerun or retry go to the run that answers it, whatever
            # started that run (a spec change, a tick in the same pass): never silently dropped.
            given, problems = requested_params(spec, annotations)
            requested.update(given)
            notices.extend(Notice("ParamsIgnored", _sentence(problem), warning=True) for problem in problems)
        base = record.params if trigger == RunTrigger.RETRY else None
        new_run = NewRun(
            number=max(run, newest_child_run) + 1,
            trigger=trigger,
            spec_hash=spec_hash,
            works=tuple(works if works is not None else (work.name for work in spec.works)),
            carried=tuple(carried),
            replaces=run if active else None,
            schedule_time=ticked.tick if ticked.starts_run else None,
            params=run_params(spec, base, requested),
        )
        return RunDecision(
            action=RunAction.START,
            run=new_run.number,
            handled=_with_tokens(handled, {request: asked[request] for request in answered}),
            last_schedule_time=ticked.last_schedule_time,
            next_schedule_time=ticked.next_schedule_time,
            hold=spec.suspend,
            new_run=new_run,
            notices=tuple(notices),
        )

    if run == 0:
        return start(RunTrigger.CREATED)

    if RunRequest.STOP in pending:
        token = pending.pop(RunRequest.STOP)
        handled = _with_tokens(handled, {RunRequest.STOP: token})
        # A run that failed may still have works running (failurePolicy Continue): they stop too.
        if active or any(work.get("phase") in UNFINISHED for work in status.get("works") or []):
            ticked = schedule.answered_by_another_run(f"run {run} was being stopped")
            return RunDecision(
                action=RunAction.STOP,
                run=run,
                handled=handled,
                last_schedule_time=ticked.last_schedule_time,
                next_schedule_time=ticked.next_schedule_time,
                hold=spec.suspend,
            )
        notices.append(
            Notice(
                "StopIgnored", f"Stop request {token!r} ignored: run {run} is not running ({_phase(record)})"
            )
        )

    current_hash = record.run_spec_hash
    if current_hash is None and record.observed_generation == generation:
        current_hash = spec_hash  # a status from before fingerprints, of this very spec
    if current_hash != spec_hash:
        return start(RunTrigger.SPEC_CHANGE)
    if RunRequest.RERUN in pending:
        return start(RunTrigger.RERUN)

    waiting: tuple[str, ...] = ()
    if RunRequest.RETRY in pending:
        token = pending[RunRequest.RETRY]
        if active and not schedule.starts_run:
            waiting = (f"retry request {token!r} waits for run {run} to end",)
        elif not active:
            plan = plan_retry(spec, _works_of(status), run)
            if plan.rerun:
                return start(RunTrigger.RETRY, plan.rerun, plan.carried)
            del pending[RunRequest.RETRY]
            handled = _with_tokens(handled, {RunRequest.RETRY: token})
            notices.append(
                Notice(
                    "RetryIgnored",
                    f"Retry request {token!r} ignored: every work of run {run} succeeded or serves",
                )
            )

    if schedule.starts_run:
        return start(RunTrigger.SCHEDULE)
    if schedule.action == ScheduleAction.SKIP:
        message = f"No run for a schedule tick: {schedule.reason}"
        notices.append(Notice("ScheduleSkipped", message, warning=schedule.late))
    return RunDecision(
        action=RunAction.CONTINUE,
        run=run,
        handled=handled,
        last_schedule_time=schedule.last_schedule_time,
        next_schedule_time=schedule.next_schedule_time,
        hold=spec.suspend,
        notices=tuple(notices),
        waiting=waiting,
    )


def plan_retry(spec: DAGFlowSpec, works: Sequence[WorkStatus], run: int) -> RetryPlan:
    """What a retry of run `run` (its works' status) runs again and what it carries over.

    Runs again: every work that did not succeed (Failed, Skipped, Stopped, or never finished), and
    every work that depends on one of those, directly or not: what it did came from an outcome that
    is about to change (a serve work rolls out the retrained model). The others keep their outcome,
    marked with the run it came from.
    """
    outcomes = {work.name: work for work in works}
    dependents: dict[str, list[str]] = {work.name: [] for work in spec.works}
    for work in spec.works:
        for dependency in work.depends_on:
            if dependency in dependents:
                dependents[dependency].append(work.name)
    again = {
        work.name
        for work in spec.works
        if work.name not in outcomes or outcomes[work.name].phase not in KEPT_BY_RETRY
    }
    queue = deque(again)
    while queue:
        for dependent in dependents[queue.popleft()]:
            if dependent not in again:
                again.add(dependent)
                queue.append(dependent)
    carried = tuple(
        outcomes[work.name].model_copy(
            update={"carried_from_run": outcomes[work.name].carried_from_run or run}
        )
        for work in spec.works
        if work.name not in again
    )
    return RetryPlan(rerun=tuple(work.name for work in spec.works if work.name in again), carried=carried)


def stopped_works(
    works: Sequence[WorkStatus], now: datetime, reason: str = "stopped by request"
) -> list[WorkStatus]:
    """The works of a run as they end when it is stopped: those not finished become Stopped."""
    return [
        work.model_copy(
            update={
                "phase": WorkPhase.STOPPED,
                "message": reason,
                "reason": None,
                "finished_at": now if work.phase == WorkPhase.RUNNING else work.finished_at,
            }
        )
        if work.phase in UNFINISHED
        else work
        for work in works
    ]


def carried_job_names(works: Collection[WorkStatus]) -> set[str]:
    """The Jobs whose outcomes the current run carries over: kept while it shows them."""
    return {work.job for work in works if work.carried_from_run is not None and work.job}


def _read_status(status: Mapping[str, Any]) -> DAGFlowStatus:
    """The fields of the status a decision needs, without the works (which may be thousands)."""
    wanted = {key: status[key] for key in (*_STATUS_FIELDS, *_SCHEDULE_FIELDS) if status.get(key) is not None}
    return DAGFlowStatus.model_validate(wanted)


def _works_of(status: Mapping[str, Any]) -> list[WorkStatus]:
    return [WorkStatus.model_validate(work) for work in status.get("works") or []]


def _with_tokens(handled: HandledRequests, tokens: Mapping[RunRequest, str]) -> HandledRequests:
    if not tokens:
        return handled
    return handled.model_copy(update={request.value: token for request, token in tokens.items()})


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _phase(record: DAGFlowStatus) -> str:
    return record.phase.value if record.phase else "no phase"
