"""Run history: the run summaries kept in `status.runs`, and which Jobs of earlier runs go.

A flow keeps its latest `spec.historyRuns` runs, the current one included (the operator's
DAGFLOW_HISTORY_RUNS when unset): their summaries stay in the status and their finished Jobs in the
cluster, for `kubectl logs`. Older runs' finished Jobs are deleted, except those whose outcome the
current run carries over, which its status still points at. A Job of an earlier run that is still
running is stopped whatever the history: a work never runs in two runs at once. A matrix work's
ConfigMaps (its values, its instances' outputs) go once nothing uses them any more.

Everything is pure, and every function gives the same answer when called again with its own
output, so a pass that is repeated (its status patch lost) records nothing twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from dagflow.api.models import MAX_HISTORY_RUNS, DAGFlowSpec, FlowPhase, RunSummary, RunTrigger
from dagflow.controller.observe import ConfigMapObservation, JobObservation
from dagflow.controller.rundecisions import ACTIVE_PHASES


@dataclass(frozen=True)
class JobRetirement:
    """What becomes of the Jobs of earlier runs."""

    # Still running: deleted in the foreground, so the new run waits until their pods are gone.
    stop: tuple[str, ...]
    # Finished, of runs beyond the kept history.
    delete: tuple[str, ...]


def history_limit(spec: DAGFlowSpec, default: int) -> int:
    """How many runs the flow keeps: its own setting, else the operator's, within 1..MAX_HISTORY_RUNS."""
    wanted = spec.history_runs if spec.history_runs is not None else default
    return max(1, min(wanted, MAX_HISTORY_RUNS))


def begin_run(
    runs: Sequence[RunSummary],
    number: int,
    trigger: RunTrigger,
    now: datetime,
    keep: int,
    workspace_claim: str | None = None,
) -> list[RunSummary]:
    """`status.runs` once run `number` begins: a run still active ends Stopped (the new one
    replaced it), the new run is added as Pending with its workspace claim, and the oldest runs
    beyond `keep` are dropped (a claim that no kept run names is deleted then)."""
    if any(summary.number == number for summary in runs):
        return trim(runs, keep)
    ended = [
        summary.model_copy(update={"phase": FlowPhase.STOPPED, "finished_at": now})
        if summary.phase in ACTIVE_PHASES
        else summary
        for summary in runs
    ]
    begun = RunSummary(
        number=number,
        trigger=trigger,
        phase=FlowPhase.PENDING,
        started_at=now,
        workspace_claim=workspace_claim,
    )
    return trim([*ended, begun], keep)


def record_run(
    runs: Sequence[RunSummary],
    number: int,
    phase: FlowPhase,
    started_at: datetime | None,
    finished_at: datetime | None,
    keep: int,
) -> list[RunSummary]:
    """`status.runs` with run `number`'s summary in step with the status of that run.

    A status written before run history has no summary yet: the run gets one, whose trigger is what
    started runs then (its creation for run 1, else a new generation of the spec).
    """
    update = {"phase": phase, "started_at": started_at, "finished_at": finished_at}
    if any(summary.number == number for summary in runs):
        kept = [
            summary.model_copy(update=update) if summary.number == number else summary for summary in runs
        ]
        return trim(kept, keep)
    trigger = RunTrigger.CREATED if number == 1 else RunTrigger.SPEC_CHANGE
    return trim([*runs, RunSummary(number=number, trigger=trigger, **update)], keep)


def trim(runs: Iterable[RunSummary], keep: int) -> list[RunSummary]:
    """The latest `keep` runs, oldest first."""
    ordered = sorted(runs, key=lambda summary: summary.number)
    return ordered[-keep:] if keep > 0 else []


def retire_jobs(
    jobs: Iterable[JobObservation], run: int, keep: int, carried: Collection[str] = ()
) -> JobRetirement:
    """Which Jobs of runs other than `run`, the current one, to stop and which to delete.

    `keep` counts runs by number, the current one included, as `status.runs` does; `carried` names
    the Jobs whose outcomes the current run carries over (`rundecisions.carried_job_names`).
    """
    oldest_kept = run - keep + 1
    stop, delete = [], []
    for job in jobs:
        if job.run == run or job.deleting:
            continue
        if job.outcome is None:
            stop.append(job.name)
        elif job.run < oldest_kept and job.name not in carried:
            delete.append(job.name)
    return JobRetirement(stop=tuple(sorted(stop)), delete=tuple(sorted(delete)))


def stale_config_maps(
    config_maps: Iterable[ConfigMapObservation],
    jobs: Iterable[JobObservation],
    run: int,
    unfinished: Collection[str],
    referenced: Collection[str],
) -> list[ConfigMapObservation]:
    """The flow's ConfigMaps that nothing uses any more, to delete.

    A ConfigMap of (run, work) is used while a Job of that run and work exists (its pods mount the
    values, even while the Job is being deleted), while the work has not ended in the current run
    (its Job is about to be made), and, for outputs, while the status names it (a retry carries it
    over). So none is left behind after a stop, a lower `historyRuns`, or its Job deleted by someone
    else. `config_maps` are the flow's own (by owner uid); `unfinished` the works of run `run` that
    have not ended; `referenced` the ConfigMaps the status names.
    """
    mounted = {(job.run, job.work) for job in jobs}
    return [
        config_map
        for config_map in config_maps
        if not config_map.deleting
        and (config_map.run, config_map.work) not in mounted
        and not (config_map.run == run and config_map.work in unfinished)
        and config_map.name not in referenced
    ]
