"""Run history: summaries begun, kept in step and trimmed, and the Jobs of earlier runs retired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dagflow.api.models import DAGFlowSpec, FlowPhase, RunSummary, RunTrigger
from dagflow.controller.history import begin_run, history_limit, record_run, retire_jobs, trim
from dagflow.controller.observe import JobObservation

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
