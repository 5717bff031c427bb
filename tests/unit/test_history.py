"""Run history: summaries begun, kept in step and trimmed, and the Jobs of earlier runs retired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dagflow.api.models import DAGFlowSpec, FlowPhase, RunSummary, RunTrigger
from dagflow.controller.history import (
    begin_run,
    history_limit,
    record_run,
    retire_jobs,
    stale_config_maps,
    trim,
)
from dagflow.controller.observe import ConfigMapObservation, JobObservation

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def summary(number: int, phase: str = "Succeeded", trigger: str = "Schedule") -> RunSummary:
    return RunSummary(
        number=number,
        trigger=RunTrigger(trigger),
        phase=FlowPhase(phase),
        started_at=T0 + timedelta(hours=number),
    )


def job(name: str, run: int, outcome: str | None = "Succeeded", deleting: bool = False) -> JobObservation:
    return JobObservation(
        name=name,
        work=name.rsplit("-", 1)[-1],
        run=run,
        active=0 if outcome else 1,
        succeeded=1 if outcome == "Succeeded" else 0,
        failed=1 if outcome == "Failed" else 0,
        outcome=outcome,
        reason=None,
        message=None,
        started_at=None,
        finished_at=None,
        deleting=deleting,
    )


def spec(**fields: object) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": [{"name": "a", "container": {"image": "x"}}], **fields})


def test_the_flow_s_own_setting_wins_over_the_operator_s_within_bounds() -> None:
    assert history_limit(spec(), default=2) == 2
    assert history_limit(spec(historyRuns=5), default=2) == 5
    assert history_limit(spec(), default=1000) == 100
    assert history_limit(spec(), default=0) == 1


def test_a_new_run_is_added_pending_and_the_oldest_are_dropped() -> None:
    runs = [summary(1, trigger="Created"), summary(2), summary(3, "Failed")]
    begun = begin_run(runs, 4, RunTrigger.RETRY, T0, keep=3)
    assert [(s.number, s.trigger, s.phase) for s in begun] == [
        (2, RunTrigger.SCHEDULE, FlowPhase.SUCCEEDED),
        (3, RunTrigger.SCHEDULE, FlowPhase.FAILED),
        (4, RunTrigger.RETRY, FlowPhase.PENDING),
    ]
    assert begun[-1].started_at == T0 and begun[-1].finished_at is None


def test_a_run_still_active_when_the_next_begins_ends_stopped() -> None:
    begun = begin_run([summary(1, "Running")], 2, RunTrigger.SPEC_CHANGE, T0, keep=5)
    assert (begun[0].phase, begun[0].finished_at) == (FlowPhase.STOPPED, T0)
    kept = begin_run([summary(1, "Failed")], 2, RunTrigger.RERUN, T0, keep=5)
    assert (kept[0].phase, kept[0].finished_at) == (FlowPhase.FAILED, None)


def test_beginning_the_same_run_twice_records_it_once() -> None:
    once = begin_run([summary(1, "Running")], 2, RunTrigger.RERUN, T0, keep=5)
    assert begin_run(once, 2, RunTrigger.RERUN, T0 + timedelta(seconds=5), keep=5) == once


def test_the_current_run_s_summary_follows_its_status() -> None:
    runs = begin_run([summary(1)], 2, RunTrigger.SCHEDULE, T0, keep=5)
    finished = record_run(runs, 2, FlowPhase.SERVING, T0, T0 + timedelta(minutes=3), keep=5)
    assert (finished[-1].phase, finished[-1].finished_at, finished[-1].trigger) == (
        FlowPhase.SERVING,
        T0 + timedelta(minutes=3),
        RunTrigger.SCHEDULE,
    )
    assert finished[0] == runs[0]
    assert record_run(finished, 2, FlowPhase.SERVING, T0, T0 + timedelta(minutes=3), keep=5) == finished


def test_a_status_from_before_run_history_gets_its_current_run_s_summary() -> None:
    (first,) = record_run([], 1, FlowPhase.RUNNING, T0, None, keep=2)
    assert (first.number, first.trigger) == (1, RunTrigger.CREATED)
    (later,) = record_run([], 7, FlowPhase.SUCCEEDED, T0, T0, keep=2)
    assert later.trigger == RunTrigger.SPEC_CHANGE


@given(numbers=st.lists(st.integers(1, 500), unique=True, max_size=30), keep=st.integers(1, 10))
def test_trim_keeps_the_latest_runs_oldest_first(numbers: list[int], keep: int) -> None:
    kept = trim([summary(number) for number in numbers], keep)
    assert [s.number for s in kept] == sorted(numbers)[-keep:]


def test_running_jobs_of_earlier_runs_stop_and_finished_ones_beyond_the_history_go() -> None:
    jobs = [
        job("f-1-a", 1),
        job("f-1-b", 1, "Failed"),
        job("f-2-a", 2),
        job("f-3-a", 3, outcome=None),
        job("f-4-a", 4, outcome=None),
        job("f-1-c", 1, deleting=True),
    ]
    retirement = retire_jobs(jobs, run=4, keep=2)
    assert retirement.stop == ("f-3-a",)
    assert retirement.delete == ("f-1-a", "f-1-b", "f-2-a")


def test_jobs_whose_outcome_the_current_run_carries_over_stay() -> None:
    jobs = [job("f-1-a", 1), job("f-2-b", 2, "Failed")]
    retirement = retire_jobs(jobs, run=5, keep=1, carried={"f-1-a"})
    assert retirement.delete == ("f-2-b",)


def test_a_history_of_one_keeps_only_the_current_run_s_jobs() -> None:
    retirement = retire_jobs([job("f-1-a", 1), job("f-2-a", 2)], run=2, keep=1)
    assert retirement.delete == ("f-1-a",) and retirement.stop == ()


def config_map(run: int, work: str, kind: str = "matrix", deleting: bool = False) -> ConfigMapObservation:
    return ConfigMapObservation(
        name=f"f-{run}-{work}-{kind}",
        work=work,
        run=run,
        owner_uid="u",
        deleting=deleting,
        uid=f"{run}{work}{kind}",
    )


def stale_names(
    config_maps: list[ConfigMapObservation],
    jobs: list[JobObservation],
    run: int,
    unfinished: tuple[str, ...] = (),
    referenced: tuple[str, ...] = (),
) -> list[str]:
    return sorted(cm.name for cm in stale_config_maps(config_maps, jobs, run, unfinished, referenced))


def test_a_config_map_stays_while_a_job_of_its_run_and_work_exists_even_one_being_deleted() -> None:
    maps = [config_map(1, "train"), config_map(1, "train", "outputs")]
    assert stale_names(maps, [job("f-1-train", 1)], run=2) == []
    assert stale_names(maps, [job("f-1-train", 1, outcome=None, deleting=True)], run=2) == []


def test_config_maps_go_once_their_job_is_gone_whatever_took_it() -> None:
    # History lowered, the run stopped, or someone deleted the Job: no Job of (run, work) is left.
    maps = [config_map(1, "train"), config_map(1, "train", "outputs"), config_map(2, "train")]
    assert stale_names(maps, [job("f-2-train", 2)], run=2) == ["f-1-train-matrix", "f-1-train-outputs"]


def test_the_values_of_a_work_about_to_start_stay_before_its_job_exists() -> None:
    maps = [config_map(3, "train")]
    assert stale_names(maps, [], run=3, unfinished=("train",)) == []
    assert stale_names(maps, [], run=3) == ["f-3-train-matrix"]


def test_outputs_the_status_names_stay_for_the_works_that_read_them() -> None:
    maps = [config_map(1, "train", "outputs"), config_map(1, "train")]
    assert stale_names(maps, [], run=2, referenced=("f-1-train-outputs",)) == ["f-1-train-matrix"]


def test_a_config_map_already_being_deleted_is_not_deleted_again() -> None:
    assert stale_names([config_map(1, "train", deleting=True)], [], run=2) == []
