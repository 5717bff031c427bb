"""The status of a run as run control shapes it: pure, from a run decision and the status before it.

`dagflow.controller.rundecisions` says whether a pass starts a run, stops one or goes on; this module writes
what that means into the status: the status of a run that begins (recorded before any child of it
is made), of a run that is stopped, and the run-control fields every other status carries (the
handled request tokens, the schedule times and the run history).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dagflow.api.models import (
    DAGFlowSpec,
    FlowPhase,
    NotificationState,
    RunSummary,
    RunTrigger,
    WorkPhase,
    WorkStatus,
)
from dagflow.controller.history import begin_run, record_run
from dagflow.controller.planner import STOPPED_MESSAGE
from dagflow.controller.rundecisions import NewRun, RunDecision, carried_job_names, stopped_works
from dagflow.controller.status import SERVING_CONDITION, stopped_ready_condition
from dagflow.rules.naming import workspace_claim_name
from dagflow.rules.times import parse_time, timestamp

# Work phases that count as finished in `status.progress`.
_FINISHED_WORKS = frozenset(
    {WorkPhase.SUCCEEDED, WorkPhase.FAILED, WorkPhase.SKIPPED, WorkPhase.SERVING, WorkPhase.STOPPED}
)


def precise_timestamp(moment: datetime) -> str:
    """A time to the millisecond, UTC: when a run began, so that flows begun within one second
    still have an order (a Kueue queue keeps it)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def begun_status(
    previous: Mapping[str, Any],
    decision: RunDecision,
    spec: DAGFlowSpec,
    generation: int,
    now: datetime,
    keep: int,
    began_at: datetime | None = None,
    flow_name: str = "",
) -> dict[str, Any]:
    """The status of the run `decision` begins, before any of its works starts: its works Pending
    but those a retry carries over, which keep their outcome and the run they came from.
    `began_at` is the moment to the millisecond (status.startedAt), `now` to the second. The run's
    workspace claim, where the spec asks for one, is named (`run_workspace`) before it is made."""
    new_run = decision.new_run
    assert new_run is not None
    claim = run_workspace(previous, spec, new_run, flow_name)
    works = begun_works(spec, new_run)
    done = sum(1 for work in works if work["phase"] in _FINISHED_WORKS)
    runs = [RunSummary.model_validate(summary) for summary in previous.get("runs") or []]
    began = precise_timestamp(began_at or now)
    status: dict[str, Any] = {
        "phase": FlowPhase.PENDING.value,
        "progress": f"{done}/{len(works)}",
        "run": new_run.number,
        "observedGeneration": generation,
        "runSpecHash": new_run.spec_hash,
        "startedAt": began,
        "works": works,
        "message": f"run {new_run.number} begins ({new_run.trigger.value})",
        "runs": _dump_runs(
            begin_run(runs, new_run.number, new_run.trigger, _whole_seconds(now), keep, claim)
        ),
        # Ready follows the new run from now on; whether an earlier run's model serves does not change.
        "conditions": [
            *(c for c in previous.get("conditions") or [] if c.get("type") == SERVING_CONDITION),
        ],
    }
    if previous.get("endpoint"):
        status["endpoint"] = previous["endpoint"]
    if claim is not None:
        status["workspaceClaim"] = claim
    # A notification of an earlier run still being posted is told when its pod ends.
    posting = [
        entry
        for entry in previous.get("notifications") or []
        if entry.get("state") == NotificationState.PENDING.value
    ]
    if posting:
        status["notifications"] = posting
    if new_run.params:
        status["params"] = dict(new_run.params)
    _set_decided_fields(status, decision)
    return status


def run_workspace(
    previous: Mapping[str, Any], spec: DAGFlowSpec, new_run: NewRun, flow_name: str
) -> str | None:
    """The workspace claim of a run that begins: none without spec.workspace; a retry's is the
    retried run's (its carried works' files are there); any other run gets its own."""
    if spec.workspace is None:
        return None
    retried = previous.get("workspaceClaim")
    if new_run.trigger == RunTrigger.RETRY and isinstance(retried, str) and retried:
        return retried
    return workspace_claim_name(flow_name, new_run.number)


def referenced_claims(status: Mapping[str, Any]) -> set[str]:
    """The workspace claims a status still uses: the current run's and those of the runs it keeps."""
    claims = {status.get("workspaceClaim")}
    claims.update(
        summary.get("workspaceClaim") for summary in status.get("runs") or [] if isinstance(summary, Mapping)
    )
    return {claim for claim in claims if isinstance(claim, str) and claim}


def begun_works(spec: DAGFlowSpec, new_run: NewRun) -> list[dict[str, Any]]:
    """`status.works` of a run that begins, in spec order."""
    carried = {work.name: _dump_work(work) for work in new_run.carried}
    return [
        *(
            carried.get(work.name) or {"name": work.name, "phase": WorkPhase.PENDING.value}
            for work in spec.works
        ),
        *(
            {"name": work.name, "phase": WorkPhase.PENDING.value, "finally": True}
            for work in spec.finally_works
        ),
    ]


def finally_stop_status(
    previous: Mapping[str, Any], decision: RunDecision, generation: int, now: datetime, keep: int
) -> dict[str, Any]:
    """The status of the current run stopped before its finally works began: its works that had not
    finished end Stopped, and the run goes on with its finally works, as cleanup, told the run was
    Stopped. A stop once they have begun stops them too (`stopped_status`)."""
    works = [WorkStatus.model_validate(work) for work in previous.get("works") or []]
    ended = [
        *stopped_works(
            [work for work in works if not work.finally_work], _whole_seconds(now), STOPPED_MESSAGE
        ),
        *(work for work in works if work.finally_work),
    ]
    dumped = [_dump_work(work) for work in ended]
    done = sum(1 for work in dumped if work["phase"] in _FINISHED_WORKS)
    status = dict(previous)
    status.pop("queued", None)  # the stopped works' Jobs are gone from their queues
    status.update(
        {
            "phase": FlowPhase.RUNNING.value,
            "progress": f"{done}/{len(dumped)}",
            "observedGeneration": generation,
            "outcome": FlowPhase.STOPPED.value,
            "message": f"run {decision.run} {STOPPED_MESSAGE}: running the finally works",
            "works": dumped,
        }
    )
    return with_run_control(status, decision, keep)


def stopped_status(
    previous: Mapping[str, Any], decision: RunDecision, generation: int, now: datetime, keep: int
) -> dict[str, Any]:
    """The status of the current run once stopped: its works that had not finished end Stopped."""
    ended = timestamp(now)
    works = stopped_works(
        [WorkStatus.model_validate(work) for work in previous.get("works") or []],
        _whole_seconds(now),
        STOPPED_MESSAGE,
    )
    dumped = [_dump_work(work) for work in works]
    done = sum(1 for work in dumped if work["phase"] in _FINISHED_WORKS)
    status = dict(previous)
    status.pop("queued", None)  # a stopped run's Jobs are gone from their queues
    status.update(
        {
            "phase": FlowPhase.STOPPED.value,
            "progress": f"{done}/{len(dumped)}",
            "observedGeneration": generation,
            "finishedAt": ended,
            "message": f"run {decision.run} {STOPPED_MESSAGE}",
            "works": dumped,
            "conditions": [
                stopped_ready_condition(f"run {decision.run} {STOPPED_MESSAGE}", previous, generation, ended),
                *(c for c in previous.get("conditions") or [] if c.get("type") == SERVING_CONDITION),
            ],
        }
    )
    return with_run_control(status, decision, keep)


def with_run_control(status: dict[str, Any], decision: RunDecision | None, keep: int) -> dict[str, Any]:
    """`status` with the run-control fields of `decision` (None: as they were) and the current
    run's summary in step with it."""
    if decision is not None:
        _set_decided_fields(status, decision)
    runs = recorded_runs(status, keep)
    if runs:
        status["runs"] = runs
    return status


def recorded_runs(status: Mapping[str, Any], keep: int) -> list[dict[str, Any]]:
    """`status.runs` with the current run's summary taken from the rest of the status."""
    run = int(status.get("run") or 0)
    runs = [RunSummary.model_validate(summary) for summary in status.get("runs") or []]
    if run < 1 or not status.get("phase"):
        return _dump_runs(runs)
    updated = record_run(
        runs,
        run,
        FlowPhase(status["phase"]),
        parse_time(status.get("startedAt")),
        parse_time(status.get("finishedAt")),
        keep,
    )
    return _dump_runs(updated)


def carried_jobs(works: Sequence[Mapping[str, Any]]) -> set[str]:
    """The Jobs of earlier runs whose outcomes the current run's works (as in the status) carry over."""
    carried = [WorkStatus.model_validate(work) for work in works if work.get("carriedFromRun")]
    return carried_job_names(carried)


def _set_decided_fields(status: dict[str, Any], decision: RunDecision) -> None:
    decided = {
        "handledRequests": decision.handled.model_dump(mode="json", by_alias=True, exclude_none=True) or None,
        "lastScheduleTime": timestamp(decision.last_schedule_time) if decision.last_schedule_time else None,
        "nextScheduleTime": timestamp(decision.next_schedule_time) if decision.next_schedule_time else None,
    }
    for field, value in decided.items():
        if value is None:
            status.pop(field, None)
        else:
            status[field] = value


def _dump_work(work: WorkStatus) -> dict[str, Any]:
    entry = work.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not entry.get("attempts"):
        entry.pop("attempts", None)
    for field in ("startedAt", "finishedAt"):
        if field in entry:
            entry[field] = timestamp(getattr(work, "started_at" if field == "startedAt" else "finished_at"))
    return entry


def _dump_runs(runs: Sequence[RunSummary]) -> list[dict[str, Any]]:
    dumped = []
    for summary in runs:
        entry = summary.model_dump(mode="json", by_alias=True, exclude_none=True)
        for field, moment in (("startedAt", summary.started_at), ("finishedAt", summary.finished_at)):
            if moment is not None:
                entry[field] = timestamp(moment)
        dumped.append(entry)
    return dumped


def _whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)
