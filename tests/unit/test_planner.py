"""The planner: which works start when, and what the flow's phase and progress say."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagflow.api.models import DAGFlowSpec, FlowPhase, WorkPhase
from dagflow.controller.builders import FlowRef, build_matrix_values
from dagflow.controller.observe import DeploymentObservation, JobObservation
from dagflow.controller.planner import (
    Plan,
    WorkState,
    defer_start,
    needs_outputs_read,
    plan_run,
    reject_start,
)
from dagflow.rules.validation import topological_order

FLOW = FlowRef(name="ml-pipeline", namespace="default", uid="0b6c1f7e-uid")
NOW = "2024-05-01T10:00:00Z"
EARLIER = "2024-05-01T09:00:00Z"


# -- factories -----------------------------------------------------------------------------------


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def serve_work(name: str, *depends_on: str, port: int = 8080, **fields: Any) -> dict[str, Any]:
    return work(name, *depends_on, serve={"port": port}, **fields)


def spec(*works: dict[str, Any], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": list(works), **fields})


def job_obs(
    work: str,
    outcome: str | None = None,
    *,
    run: int = 1,
    failed: int | None = None,
    reason: str | None = None,
    message: str | None = None,
    deleting: bool = False,
) -> JobObservation:
    """A Job of `work`: running (outcome None), "Succeeded" or "Failed"."""
    if failed is None:
        failed = 1 if outcome == "Failed" else 0
    return JobObservation(
        name=f"{FLOW.name}-{run}-{work}",
        work=work,
        run=run,
        active=1 if outcome is None else 0,
        succeeded=1 if outcome == "Succeeded" else 0,
        failed=failed,
        outcome=outcome,
        reason=reason or ("BackoffLimitExceeded" if outcome == "Failed" else None),
        message=message,
        started_at=EARLIER,
        finished_at=NOW if outcome else None,
        deleting=deleting,
    )


def deploy_obs(
    work: str,
    *,
    available: bool = True,
    run: int = 1,
    message: str | None = None,
    serving_run: int | None = None,
    stalled: bool = False,
) -> DeploymentObservation:
    """A serve work's Deployment: rolled out and available (its pods run `run`'s model), or not;
    `serving_run` names the run whose pods serve while it rolls out."""
    return DeploymentObservation(
        name=f"{FLOW.name}-{work}",
        work=work,
        run=run,
        replicas=1,
        available=available,
        started_at=EARLIER,
        available_at=NOW if available else None,
        message=message,
        serving_run=run if available else serving_run,
        stalled=stalled,
    )


def plan(
    flow_spec: DAGFlowSpec,
    jobs: Iterable[JobObservation] = (),
    deployments: Iterable[DeploymentObservation] = (),
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    run: int = 1,
    hold: bool = False,
    stored_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    return plan_run(
        FLOW,
        flow_spec,
        topological_order(flow_spec),
        run,
        {job.work: job for job in jobs},
        {deployment.work: deployment for deployment in deployments},
        previous or {},
        NOW,
        hold=hold,
        stored_outputs=stored_outputs,
    )


def phases(result: Plan) -> dict[str, str]:
    return {state.name: state.phase.value for state in result.works}


def started(result: Plan) -> list[str]:
    return [w.name for w in result.start]


def state(result: Plan, name: str) -> WorkState:
    return next(s for s in result.works if s.name == name)


def previous_of(result: Plan) -> dict[str, dict[str, Any]]:
    """`status.works` of a plan by name, as the next pass reads it back."""
    return {s.name: s.to_status() for s in result.works}


CLASSIC = spec(
    work("process"),
    work("train-a", "process", gpu=1, retries=2, timeoutSeconds=3600),
    work("train-b", "process", gpu=1),
    serve_work("serve", "train-a", "train-b"),
    work("smoke-test", "serve"),
)


# -- what starts when ----------------------------------------------------------------------------


def test_first_pass_starts_only_the_works_without_dependencies() -> None:
    result = plan(CLASSIC)
    assert started(result) == ["process"]
    assert phases(result) == {
        "process": "Running",
        "train-a": "Pending",
        "train-b": "Pending",
        "serve": "Pending",
        "smoke-test": "Pending",
    }
    process = state(result, "process")
    assert process.job == "ml-pipeline-1-process"
    assert process.started_at == NOW
    assert result.phase == FlowPhase.RUNNING
    assert result.progress == "0/5"


def test_a_running_job_is_not_started_again() -> None:
    result = plan(CLASSIC, jobs=[job_obs("process")])
    assert started(result) == []
    assert phases(result)["process"] == "Running"
    assert state(result, "process").started_at == EARLIER


def test_dependents_start_together_once_their_dependency_succeeded() -> None:
    result = plan(CLASSIC, jobs=[job_obs("process", "Succeeded")])
    assert started(result) == ["train-a", "train-b"]
    assert phases(result)["serve"] == "Pending"
    assert result.progress == "1/5"


def test_job_names_carry_the_run() -> None:
    result = plan(CLASSIC, run=7)
    assert state(result, "process").job == "ml-pipeline-7-process"


def test_works_are_listed_in_spec_order_whatever_the_dependency_order() -> None:
    flow_spec = spec(work("last", "first"), work("middle", "first"), work("first"))
    result = plan(flow_spec)
    assert [s.name for s in result.works] == ["last", "middle", "first"]
    assert started(result) == ["first"]


def test_a_work_waits_for_every_dependency_by_default() -> None:
    result = plan(
        CLASSIC, jobs=[job_obs("process", "Succeeded"), job_obs("train-a", "Succeeded"), job_obs("train-b")]
    )
    assert started(result) == []
    assert phases(result)["serve"] == "Pending"


# -- serve works ---------------------------------------------------------------------------------

BOTH_TRAINED = [
    job_obs("process", "Succeeded"),
    job_obs("train-a", "Succeeded"),
    job_obs("train-b", "Succeeded"),
]


def test_serve_work_starts_when_training_succeeded_and_runs_until_available() -> None:
    result = plan(CLASSIC, jobs=BOTH_TRAINED)
    assert started(result) == ["serve"]
    assert phases(result)["serve"] == "Running"
    assert result.phase == FlowPhase.RUNNING

    rolling = plan(CLASSIC, jobs=BOTH_TRAINED, deployments=[deploy_obs("serve", available=False)])
    assert started(rolling) == []
    assert phases(rolling)["serve"] == "Running"
    assert "available" in (state(rolling, "serve").message or "")
    assert phases(rolling)["smoke-test"] == "Pending"


def test_dependency_on_a_serve_work_is_met_once_it_is_serving() -> None:
    result = plan(CLASSIC, jobs=BOTH_TRAINED, deployments=[deploy_obs("serve")])
    assert phases(result)["serve"] == "Serving"
    assert started(result) == ["smoke-test"]
    assert result.phase == FlowPhase.RUNNING


def test_flow_is_serving_once_every_batch_work_is_done_and_the_serve_work_available() -> None:
    result = plan(
        CLASSIC, jobs=[*BOTH_TRAINED, job_obs("smoke-test", "Succeeded")], deployments=[deploy_obs("serve")]
    )
    assert result.phase == FlowPhase.SERVING
    assert result.message is None
    assert result.progress == "5/5"


def test_serve_work_reports_its_endpoint_and_batch_works_none() -> None:
    result = plan(CLASSIC)
    assert state(result, "serve").endpoint == "http://ml-pipeline-serve.default.svc:8080"
    assert state(result, "process").endpoint is None


def test_flow_with_two_serve_works_serves_only_when_both_are_available() -> None:
    flow_spec = spec(work("train"), serve_work("api", "train"), serve_work("ui", "train", port=3000))
    jobs = [job_obs("train", "Succeeded")]
    one = plan(flow_spec, jobs=jobs, deployments=[deploy_obs("api"), deploy_obs("ui", available=False)])
    assert one.phase == FlowPhase.RUNNING
    both = plan(flow_spec, jobs=jobs, deployments=[deploy_obs("api"), deploy_obs("ui")])
    assert both.phase == FlowPhase.SERVING


def test_serve_work_of_an_earlier_run_keeps_serving_until_this_runs_dependencies_are_met() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"))
    waiting = plan(flow_spec, jobs=[job_obs("train", run=2)], deployments=[deploy_obs("serve", run=1)], run=2)
    assert started(waiting) == []
    assert phases(waiting)["serve"] == "Pending"
    assert "keeps serving" in (state(waiting, "serve").message or "")
    assert waiting.phase == FlowPhase.RUNNING

    ready = plan(
        flow_spec,
        jobs=[job_obs("train", "Succeeded", run=2)],
        deployments=[deploy_obs("serve", run=1)],
        run=2,
    )
    assert started(ready) == ["serve"]
    assert phases(ready)["serve"] == "Running"


def test_serve_work_keeps_the_time_it_first_started() -> None:
    flow_spec = spec(serve_work("serve"))
    result = plan(
        flow_spec,
        deployments=[deploy_obs("serve")],
        previous={"serve": {"name": "serve", "phase": "Running", "startedAt": "2024-05-01T08:00:00Z"}},
    )
    assert state(result, "serve").started_at == "2024-05-01T08:00:00Z"


def test_serve_work_status_names_its_deployment() -> None:
    # The API documents `job` as "Name of the Job (batch work) or Deployment (serve work)".
    flow_spec = spec(serve_work("serve"))
    result = plan(flow_spec, deployments=[deploy_obs("serve", available=False)])
    assert state(result, "serve").job == "ml-pipeline-serve"


# -- flow outcome --------------------------------------------------------------------------------


def test_flow_without_serve_works_succeeds_when_every_work_succeeded() -> None:
    flow_spec = spec(work("a"), work("b", "a"))
    result = plan(flow_spec, jobs=[job_obs("a", "Succeeded"), job_obs("b", "Succeeded")])
    assert result.phase == FlowPhase.SUCCEEDED
    assert result.progress == "2/2"
    assert started(result) == []


def test_finished_work_records_when_it_finished_and_its_attempts() -> None:
    flow_spec = spec(work("a", retries=3))
    result = plan(flow_spec, jobs=[job_obs("a", "Succeeded", failed=2)])
    a = state(result, "a")
    assert (a.phase, a.started_at, a.finished_at, a.attempts) == (WorkPhase.SUCCEEDED, EARLIER, NOW, 3)


def test_progress_counts_failed_skipped_and_serving_works_as_done() -> None:
    flow_spec = spec(work("a"), work("b", "a"), serve_work("s"), work("c"), failurePolicy="Continue")
    result = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("c")], deployments=[deploy_obs("s")])
    assert phases(result) == {"a": "Failed", "b": "Skipped", "s": "Serving", "c": "Running"}
    assert result.progress == "3/4"


# -- failures and trigger rules ------------------------------------------------------------------


def test_fail_fast_starts_nothing_new_after_a_failure_stops_what_runs_and_fails_the_flow() -> None:
    flow_spec = spec(work("a"), work("b"), work("c"), work("after-b", "b"), parallelism=2)
    result = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b")])
    assert started(result) == []
    # A failed run holds no nodes or GPUs: b's Job is deleted and b ends Stopped, saying why.
    assert phases(result) == {"a": "Failed", "b": "Stopped", "c": "Skipped", "after-b": "Skipped"}
    assert result.stop == [f"{FLOW.name}-1-b"]
    assert state(result, "b").message == "stopped: a failed and failurePolicy is FailFast"
    assert state(result, "b").finished_at == NOW
    assert "a failed" in (state(result, "c").message or "")
    assert "FailFast" in (state(result, "c").message or "")
    assert result.phase == FlowPhase.FAILED
    assert result.message is not None and result.message.startswith("work a failed: ")

    # The running work finishes; its dependent is not started either.
    later = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Succeeded")])
    assert started(later) == []
    assert phases(later)["after-b"] == "Skipped"
    assert later.phase == FlowPhase.FAILED


def test_fail_fast_does_not_start_an_all_done_work_either() -> None:
    flow_spec = spec(work("a"), work("cleanup", "a", when="AllDone"))
    result = plan(flow_spec, jobs=[job_obs("a", "Failed")])
    assert started(result) == []
    assert phases(result)["cleanup"] == "Skipped"


def test_continue_runs_every_work_that_still_can_and_fails_the_flow_at_the_end() -> None:
    flow_spec = spec(
        work("a"), work("b"), work("after-a", "a"), work("after-b", "b"), failurePolicy="Continue"
    )
    result = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Succeeded")])
    assert started(result) == ["after-b"]
    assert phases(result)["after-a"] == "Skipped"
    assert "dependency a failed" in (state(result, "after-a").message or "")
    assert result.phase == FlowPhase.RUNNING

    done = plan(
        flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Succeeded"), job_obs("after-b", "Succeeded")]
    )
    assert done.phase == FlowPhase.FAILED
    assert done.message is not None
    assert "work a failed" in done.message and "skipped: after-a" in done.message


def test_skips_cascade_down_a_chain_in_one_pass() -> None:
    flow_spec = spec(work("a"), work("b", "a"), work("c", "b"), failurePolicy="Continue")
    result = plan(flow_spec, jobs=[job_obs("a", "Failed")])
    assert phases(result) == {"a": "Failed", "b": "Skipped", "c": "Skipped"}
    assert "dependency b skipped" in (state(result, "c").message or "")
    assert result.phase == FlowPhase.FAILED
    assert result.progress == "3/3"


def test_all_done_waits_for_every_dependency_then_runs_despite_a_failure() -> None:
    flow_spec = spec(work("a"), work("b"), work("report", "a", "b", when="AllDone"), failurePolicy="Continue")
    waiting = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b")])
    assert started(waiting) == []
    assert phases(waiting)["report"] == "Pending"

    ready = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Succeeded")])
    assert started(ready) == ["report"]


def test_any_succeeded_starts_on_the_first_success_without_waiting_for_the_rest() -> None:
    flow_spec = spec(work("a"), work("b"), work("best", "a", "b", when="AnySucceeded"))
    assert started(plan(flow_spec, jobs=[job_obs("a"), job_obs("b")])) == []
    assert started(plan(flow_spec, jobs=[job_obs("a"), job_obs("b", "Succeeded")])) == ["best"]


def test_any_succeeded_is_skipped_when_every_dependency_failed_or_was_skipped() -> None:
    flow_spec = spec(
        work("a"),
        work("b"),
        work("after-b", "b"),
        work("best", "a", "after-b", when="AnySucceeded"),
        failurePolicy="Continue",
    )
    waiting = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b")])
    assert phases(waiting)["best"] == "Pending"

    result = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Failed")])
    assert phases(result)["best"] == "Skipped"
    assert "none of a, after-b succeeded" in (state(result, "best").message or "")


def test_serve_work_that_can_no_longer_start_fails_the_flow_at_once() -> None:
    flow_spec = spec(
        work("train-a"), work("train-b"), serve_work("serve", "train-a", "train-b"), failurePolicy="Continue"
    )
    result = plan(flow_spec, jobs=[job_obs("train-a", "Failed"), job_obs("train-b")])
    assert phases(result) == {"train-a": "Failed", "train-b": "Running", "serve": "Skipped"}
    assert result.phase == FlowPhase.FAILED


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            job_obs("train", "Failed", failed=3, reason="BackoffLimitExceeded"),
            "failed after 3 attempts, retries used up",
        ),
        (
            job_obs("train", "Failed", failed=1, reason="FailedIndexes"),
            "failed after 1 attempt, retries used up",
        ),
        (job_obs("train", "Failed", reason="DeadlineExceeded"), "timed out after 3600s"),
        (
            job_obs("train", "Failed", reason="PodFailurePolicy", message="Container main exited with 42"),
            "Job failed (PodFailurePolicy): Container main exited with 42",
        ),
    ],
)
def test_failed_work_says_why(job: JobObservation, expected: str) -> None:
    flow_spec = spec(work("train", retries=2, timeoutSeconds=3600))
    result = plan(flow_spec, jobs=[job])
    assert phases(result)["train"] == "Failed"
    assert expected in (state(result, "train").message or "")
    assert result.phase == FlowPhase.FAILED
    assert expected in (result.message or "")


def test_flow_message_summarises_many_failures() -> None:
    names = [f"w{i}" for i in range(5)]
    flow_spec = spec(*(work(n) for n in names), failurePolicy="Continue")
    result = plan(flow_spec, jobs=[job_obs(n, "Failed") for n in names])
    assert result.message is not None
    assert "work w0 failed" in result.message and "work w2 failed" in result.message
    assert "work w3 failed" not in result.message
    assert "and 2 more failed" in result.message


# -- parallelism ---------------------------------------------------------------------------------


def test_parallelism_caps_the_batch_works_started_at_once() -> None:
    flow_spec = spec(work("a"), work("b"), work("c"), parallelism=2)
    first = plan(flow_spec)
    assert started(first) == ["a", "b"]
    assert phases(first)["c"] == "Pending"
    assert "parallelism 2" in (state(first, "c").message or "")

    still_full = plan(flow_spec, jobs=[job_obs("a"), job_obs("b")])
    assert started(still_full) == []

    freed = plan(flow_spec, jobs=[job_obs("a", "Succeeded"), job_obs("b")])
    assert started(freed) == ["c"]
    assert state(freed, "c").message is None


def test_serve_works_do_not_count_against_parallelism() -> None:
    flow_spec = spec(work("a"), work("b"), serve_work("s"), parallelism=1)
    result = plan(flow_spec, deployments=[deploy_obs("s", available=False)])
    assert started(result) == ["a"]
    result = plan(flow_spec, jobs=[job_obs("a")])
    assert started(result) == ["s"]


def test_zero_parallelism_means_no_limit() -> None:
    flow_spec = spec(*(work(f"w{i}") for i in range(20)))
    assert len(started(plan(flow_spec))) == 20


# -- restarts, lost Jobs, refused children -------------------------------------------------------


def test_a_finished_work_whose_job_disappeared_keeps_its_outcome() -> None:
    flow_spec = spec(work("a"), work("b", "a"))
    previous = {
        "a": {
            "name": "a",
            "phase": "Succeeded",
            "job": "ml-pipeline-1-a",
            "attempts": 2,
            "startedAt": EARLIER,
            "finishedAt": NOW,
        }
    }
    result = plan(flow_spec, previous=previous)
    assert started(result) == ["b"]
    a = state(result, "a")
    assert (a.phase, a.job, a.attempts, a.finished_at) == (WorkPhase.SUCCEEDED, "ml-pipeline-1-a", 2, NOW)


def test_a_failed_work_whose_job_disappeared_is_not_retried() -> None:
    flow_spec = spec(work("a"), work("b", "a"), failurePolicy="Continue")
    previous = {"a": {"name": "a", "phase": "Failed", "message": "failed after 1 attempt"}}
    result = plan(flow_spec, previous=previous)
    assert started(result) == []
    assert phases(result) == {"a": "Failed", "b": "Skipped"}
    assert state(result, "a").message == "failed after 1 attempt"
    assert result.phase == FlowPhase.FAILED


def test_a_running_work_whose_job_is_missing_is_started_again_under_the_same_name() -> None:
    flow_spec = spec(work("a"))
    previous = {"a": {"name": "a", "phase": "Running", "job": "ml-pipeline-1-a", "startedAt": EARLIER}}
    result = plan(flow_spec, previous=previous)
    assert started(result) == ["a"]
    assert state(result, "a").job == "ml-pipeline-1-a"


def test_a_job_being_deleted_is_waited_for_not_duplicated() -> None:
    flow_spec = spec(work("a"))
    result = plan(flow_spec, jobs=[job_obs("a", deleting=True)])
    assert started(result) == []
    assert phases(result)["a"] == "Running"
    assert "being deleted" in (state(result, "a").message or "")


def test_a_refused_child_fails_its_work_and_the_flow() -> None:
    flow_spec = spec(work("a"), work("b"), work("c", "a"))
    result = plan(flow_spec)
    assert started(result) == ["a", "b"]
    reject_start(result, flow_spec, "a", "rejected by the API server: quota exceeded")
    assert started(result) == ["b"]
    a = state(result, "a")
    assert (a.phase, a.message, a.job) == (
        WorkPhase.FAILED,
        "rejected by the API server: quota exceeded",
        None,
    )
    assert result.phase == FlowPhase.FAILED
    assert "quota exceeded" in (result.message or "")
    # Its dependent is Skipped in the same pass: a failed flow never shows it still waiting.
    assert state(result, "c").phase == WorkPhase.SKIPPED

    # The next pass does not try again: the refusal sticks and the dependent is skipped.
    again = plan(flow_spec, jobs=[job_obs("b")], previous=previous_of(result))
    assert started(again) == []
    assert phases(again) == {"a": "Failed", "b": "Stopped", "c": "Skipped"}


def test_a_refused_child_under_continue_leaves_the_flow_running_while_others_can_still_run() -> None:
    flow_spec = spec(work("a"), work("b"), failurePolicy="Continue")
    result = plan(flow_spec)
    reject_start(result, flow_spec, "a", "rejected")
    assert phases(result) == {"a": "Failed", "b": "Running"}
    assert result.phase == FlowPhase.RUNNING
    assert started(result) == ["b"]


def test_a_refused_serve_child_fails_the_flow() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"), failurePolicy="Continue")
    result = plan(flow_spec, jobs=[job_obs("train", "Succeeded")])
    assert started(result) == ["serve"]
    reject_start(result, flow_spec, "serve", "rejected by the API server: forbidden")
    assert phases(result)["serve"] == "Failed"
    assert result.phase == FlowPhase.FAILED
    assert result.start == []


def test_the_same_observations_always_give_the_same_plan() -> None:
    jobs = [job_obs("process", "Succeeded"), job_obs("train-a")]
    first, second = plan(CLASSIC, jobs=jobs), plan(CLASSIC, jobs=jobs)
    assert started(first) == started(second) == ["train-b"]
    assert [s.to_status() for s in first.works] == [s.to_status() for s in second.works]


# -- property: a flow where every work succeeds runs to the end ----------------------------------


@st.composite
def random_flows(draw: st.DrawFn, rules: bool = False) -> tuple[DAGFlowSpec, int]:
    """A random DAG in a random spec order; with `rules`, random trigger rules and failure policy."""
    count = draw(st.integers(min_value=1, max_value=9))
    works = []
    for index in range(count):
        depends_on = draw(st.lists(st.integers(0, index - 1), max_size=3, unique=True)) if index else []
        is_serve = draw(st.integers(0, 4)) == 0
        fields: dict[str, Any] = {"serve": {"port": 8000 + index}} if is_serve else {}
        if rules:
            fields["when"] = draw(st.sampled_from(["AllSucceeded", "AllDone", "AnySucceeded"]))
        works.append(work(f"w{index}", *(f"w{d}" for d in depends_on), **fields))
    shuffled = draw(st.permutations(works))
    parallelism = draw(st.integers(0, 3))
    policy = draw(st.sampled_from(["FailFast", "Continue"])) if rules else "FailFast"
    return spec(*shuffled, parallelism=parallelism, failurePolicy=policy), parallelism


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow=random_flows(), data=st.data())
def test_a_flow_whose_works_all_succeed_runs_every_work_once_in_dependency_order(
    flow: tuple[DAGFlowSpec, int], data: st.DataObject
) -> None:
    flow_spec, parallelism = flow
    works = {w.name: w for w in flow_spec.works}
    order = topological_order(flow_spec)
    jobs: dict[str, JobObservation] = {}
    deployments: dict[str, DeploymentObservation] = {}
    running: list[str] = []
    met: set[str] = set()
    previous: dict[str, dict[str, Any]] = {}

    result = None
    for _ in range(3 * len(works) + 3):
        result = plan_run(FLOW, flow_spec, order, 1, jobs, deployments, previous, NOW)
        for started_work in result.start:
            name = started_work.name
            assert name not in jobs and name not in deployments, f"{name} started twice"
            assert set(started_work.depends_on) <= met, f"{name} started before its dependencies"
            running.append(name)
            if started_work.serve is None:
                jobs[name] = job_obs(name)
            else:
                deployments[name] = deploy_obs(name, available=False)
        if parallelism:
            batch_running = [n for n in running if works[n].serve is None]
            assert len(batch_running) <= parallelism
        previous = {s.name: s.to_status() for s in result.works}
        if not running:
            break
        finishing = data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
        for name in finishing:
            running.remove(name)
            met.add(name)
            if works[name].serve is None:
                jobs[name] = job_obs(name, "Succeeded")
            else:
                deployments[name] = deploy_obs(name)

    assert result is not None
    assert not running
    assert met == set(works)
    expected = {n: "Serving" if w.serve is not None else "Succeeded" for n, w in works.items()}
    assert phases(result) == expected
    has_serve = any(w.serve is not None for w in works.values())
    assert result.phase == (FlowPhase.SERVING if has_serve else FlowPhase.SUCCEEDED)
    assert result.progress == f"{len(works)}/{len(works)}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flow=random_flows(rules=True), data=st.data())
def test_a_flow_with_failures_always_comes_to_an_end_that_follows_its_rules(
    flow: tuple[DAGFlowSpec, int], data: st.DataObject
) -> None:
    flow_spec, parallelism = flow
    fail_fast = flow_spec.failure_policy.value == "FailFast"
    works = {w.name: w for w in flow_spec.works}
    order = topological_order(flow_spec)
    jobs: dict[str, JobObservation] = {}
    deployments: dict[str, DeploymentObservation] = {}
    running: list[str] = []
    outcome: dict[str, str] = {}  # what each finished work really did
    previous: dict[str, dict[str, Any]] = {}

    result = None
    rank = {"Pending": 0, "Running": 1}
    for _ in range(3 * len(works) + 3):
        result = plan_run(FLOW, flow_spec, order, 1, jobs, deployments, previous, NOW)
        again = plan_run(FLOW, flow_spec, order, 1, jobs, deployments, previous, NOW)
        assert [s.to_status() for s in again.works] == [s.to_status() for s in result.works], (
            "not deterministic"
        )
        assert [w.name for w in again.start] == [w.name for w in result.start]
        for state in result.works:
            before = previous.get(state.name, {}).get("phase", "Pending")
            if rank.get(before, 2) == 2:
                assert state.phase.value == before, f"{state.name} went from {before} to {state.phase.value}"
            else:
                assert rank.get(state.phase.value, 2) >= rank[before], (
                    f"{state.name} went back to {state.phase.value}"
                )
        assert len({s.job for s in result.works if s.job}) == len([s for s in result.works if s.job])
        skipped = {s.name for s in result.works if s.phase == WorkPhase.SKIPPED}
        assert not skipped & outcome.keys(), "a work that ran was reported Skipped"
        for started_work in result.start:
            name, rule = started_work.name, started_work.when.value
            assert name not in outcome and name not in running, f"{name} started twice"
            assert not (fail_fast and "Failed" in outcome.values()), (
                f"{name} started after a failure (FailFast)"
            )
            deps = [outcome.get(d, "Skipped" if d in skipped else None) for d in started_work.depends_on]
            good = [d in ("Succeeded", "Serving") for d in deps]
            if rule == "AllSucceeded":
                assert all(good), f"{name} ({rule}) started with dependencies {deps}"
            elif rule == "AllDone":
                assert None not in deps, f"{name} ({rule}) started with dependencies {deps}"
            else:
                assert not deps or any(good), f"{name} ({rule}) started with dependencies {deps}"
            running.append(name)
            if started_work.serve is None:
                jobs[name] = job_obs(name)
            else:
                deployments[name] = deploy_obs(name, available=False)
        if parallelism:
            assert len([n for n in running if works[n].serve is None]) <= parallelism
        # The reconciler deletes the Jobs the plan stops (FailFast after a failure): gone, never done.
        for job_name in result.stop:
            (name,) = [n for n, j in jobs.items() if j.name == job_name]
            assert fail_fast and "Failed" in outcome.values(), f"{name} stopped without a failure"
            running.remove(name)
            outcome[name] = "Stopped"
            del jobs[name]
        previous = {s.name: s.to_status() for s in result.works}
        if not running:
            break
        finishing = data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True))
        for name in finishing:
            running.remove(name)
            if works[name].serve is not None:
                outcome[name] = "Serving"
                deployments[name] = deploy_obs(name)
            else:
                outcome[name] = data.draw(st.sampled_from(["Succeeded", "Failed"]))
                jobs[name] = job_obs(name, outcome[name])

    assert result is not None
    assert not running, "the flow never came to an end"
    final = phases(result)
    assert {n: p for n, p in final.items() if n in outcome} == outcome
    assert all(p == "Skipped" for n, p in final.items() if n not in outcome), final
    assert result.progress == f"{len(works)}/{len(works)}"
    serve = [n for n, w in works.items() if w.serve is not None]
    batch = [n for n in works if n not in serve]
    if not serve and all(final[n] == "Succeeded" for n in batch):
        assert result.phase == FlowPhase.SUCCEEDED
    elif (
        serve and all(final[n] == "Serving" for n in serve) and not (fail_fast and "Failed" in final.values())
    ):
        assert result.phase == FlowPhase.SERVING
    else:
        assert result.phase == FlowPhase.FAILED
        assert result.message


# -- status churn ------------------------------------------------------------------------------------


def test_a_started_work_reads_the_same_from_job_creation_to_its_pod_running() -> None:
    """Its Job appearing and its pod starting change nothing a user sees: no status patch each time."""
    flow_spec = spec(work("train"))
    started = plan(flow_spec)
    assert [w.name for w in started.start] == ["train"]
    recorded = {state.name: state.to_status() for state in started.works}

    created = job_obs("train")
    just_created = dataclasses.replace(created, active=0, started_at=None)
    pod_running = dataclasses.replace(created, started_at="2024-05-01T10:00:07Z")
    for observed in (just_created, pod_running):
        again = plan(flow_spec, [observed], previous=recorded)
        assert {state.name: state.to_status() for state in again.works} == recorded


def test_a_retried_work_counts_each_attempt() -> None:
    retrying = dataclasses.replace(job_obs("train"), failed=1, active=1)
    state = plan(spec(work("train", retries=2)), [retrying]).works[0]
    assert (state.phase, state.attempts) == (WorkPhase.RUNNING, 2)


# -- runs that follow one another ----------------------------------------------------------------


def test_no_batch_work_of_a_new_run_starts_while_an_earlier_runs_jobs_stop() -> None:
    flow_spec = spec(work("a"), serve_work("web"))
    result = plan_run(FLOW, flow_spec, topological_order(flow_spec), 2, {}, {}, {}, NOW, draining=2)
    assert started(result) == ["web"]
    assert state(result, "a").phase == WorkPhase.PENDING
    assert state(result, "a").message == "waiting for 2 Jobs of an earlier run to stop"
    assert result.phase == FlowPhase.RUNNING


def test_a_deferred_start_leaves_the_work_pending_with_the_reason() -> None:
    flow_spec = spec(work("a"), work("b", "a"))
    result = plan(flow_spec)
    assert started(result) == ["a"]
    defer_start(result, flow_spec, "a", "waiting for Job x, left by a deleted flow, to be removed")
    assert started(result) == []
    a = state(result, "a")
    assert (a.phase, a.job, a.started_at, a.attempts) == (WorkPhase.PENDING, None, None, 0)
    assert a.message == "waiting for Job x, left by a deleted flow, to be removed"
    assert result.phase == FlowPhase.RUNNING


def test_a_job_whose_pods_are_refused_says_why() -> None:
    flow_spec = spec(work("a"))
    result = plan_run(
        FLOW,
        flow_spec,
        ["a"],
        1,
        {"a": job_obs("a")},
        {},
        {},
        NOW,
        pod_refusals={"a": 'pods "x" is forbidden: exceeded quota'},
    )
    assert state(result, "a").phase == WorkPhase.RUNNING
    assert state(result, "a").message == 'its pods are refused: pods "x" is forbidden: exceeded quota'


def test_a_serving_work_whose_deployment_loses_availability_says_so() -> None:
    flow_spec = spec(serve_work("web"))
    result = plan(
        flow_spec, deployments=[deploy_obs("web", available=False)], previous={"web": {"phase": "Serving"}}
    )
    web = state(result, "web")
    assert web.phase == WorkPhase.RUNNING
    assert web.message == "Deployment ml-pipeline-web lost availability: fewer available replicas than wanted"


# -- run control ---------------------------------------------------------------------------------


def test_a_held_flow_starts_nothing_and_says_it_is_suspended() -> None:
    result = plan(CLASSIC, hold=True)
    assert started(result) == []
    assert state(result, "process").message == "suspended: starts once spec.suspend is false"
    assert result.phase == FlowPhase.RUNNING
    assert result.message and result.message.startswith("suspended")


def test_a_held_flow_lets_its_running_works_finish_and_then_resumes_where_it_was() -> None:
    running = plan(CLASSIC)
    assert started(running) == ["process"]
    held = plan(CLASSIC, [job_obs("process", "Succeeded")], previous=previous_of(running), hold=True)
    assert phases(held)["process"] == "Succeeded"
    assert started(held) == []
    resumed = plan(CLASSIC, [job_obs("process", "Succeeded")], previous=previous_of(held))
    assert started(resumed) == ["train-a", "train-b"]


def test_a_carried_work_keeps_its_outcome_and_the_run_it_came_from() -> None:
    flow_spec = spec(work("process"), work("train", "process"))
    carried = {
        "name": "process",
        "phase": "Succeeded",
        "job": f"{FLOW.name}-1-process",
        "attempts": 1,
        "startedAt": EARLIER,
        "finishedAt": EARLIER,
        "carriedFromRun": 1,
    }
    result = plan(
        flow_spec, previous={"process": carried, "train": {"name": "train", "phase": "Pending"}}, run=2
    )
    assert state(result, "process").to_status() == carried
    assert started(result) == ["train"]


def test_a_carried_serve_work_serves_while_the_earlier_runs_deployment_is_available() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"), work("report"))
    previous = {
        "train": {"name": "train", "phase": "Succeeded", "carriedFromRun": 1, "job": f"{FLOW.name}-1-train"},
        "serve": {"name": "serve", "phase": "Serving", "carriedFromRun": 1, "job": f"{FLOW.name}-serve"},
        "report": {"name": "report", "phase": "Pending"},
    }
    serving = plan(flow_spec, deployments=[deploy_obs("serve", run=1)], previous=previous, run=2)
    assert phases(serving)["serve"] == "Serving"
    assert started(serving) == ["report"]
    lost = plan(
        flow_spec, deployments=[deploy_obs("serve", run=1, available=False)], previous=previous, run=2
    )
    assert phases(lost)["serve"] == "Running"
    assert state(lost, "serve").carried_from_run == 1


def test_the_plan_names_the_run_whose_deployment_serves() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"))
    result = plan(flow_spec, [job_obs("train", "Failed", run=2)], [deploy_obs("serve", run=1)], run=2)
    assert result.phase == FlowPhase.FAILED
    assert phases(result)["serve"] == "Skipped"
    assert result.serving == {"serve": 1}
    assert result.serve_works == ["serve"]


# -- outputs ---------------------------------------------------------------------------------------

SCORED = spec(
    work("train", outputs=[{"name": "score"}]),
    work("report", "train"),
)


def plan_with_messages(
    messages: Mapping[str, str | None],
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: Iterable[JobObservation] = (job_obs("train", "Succeeded"),),
) -> Plan:
    return plan_run(
        FLOW,
        SCORED,
        topological_order(SCORED),
        1,
        {job.work: job for job in jobs},
        {},
        previous or {},
        NOW,
        termination_messages=messages,
    )


def test_a_succeeded_work_keeps_its_outputs_and_its_dependent_starts() -> None:
    result = plan_with_messages({"train": '{"score": 0.93, "extra": 1}'})
    assert state(result, "train").phase == WorkPhase.SUCCEEDED
    assert state(result, "train").to_status()["outputs"] == {"score": 0.93}
    assert started(result) == ["report"]
    # Read once: the next pass takes them from the status.
    again = plan_with_messages({}, previous_of(result))
    assert state(again, "train").outputs == {"score": 0.93}


def test_bad_outputs_fail_the_work_and_stay_failed_without_reading_again() -> None:
    result = plan_with_messages({"train": "score=0.93"})
    assert phases(result) == {"train": "Failed", "report": "Skipped"}
    assert (state(result, "train").message or "").startswith("succeeded, but its outputs are not JSON")
    again = plan_with_messages({}, previous_of(result))
    assert phases(again) == {"train": "Failed", "report": "Skipped"}
    assert state(again, "train").message == state(result, "train").message


def test_a_succeeded_work_whose_pod_is_gone_fails_saying_its_outputs_cannot_be_read() -> None:
    result = plan_with_messages({"train": None})
    assert state(result, "train").phase == WorkPhase.FAILED
    assert "its pod is gone" in (state(result, "train").message or "")


def test_outputs_not_read_yet_keep_the_work_running() -> None:
    result = plan_with_messages({})
    assert state(result, "train").phase == WorkPhase.RUNNING
    assert state(result, "train").message == "reading its outputs"
    assert started(result) == []


def test_which_works_need_their_outputs_read() -> None:
    train, report = SCORED.works
    succeeded = job_obs("train", "Succeeded")
    assert needs_outputs_read(train, succeeded, None)
    assert not needs_outputs_read(train, succeeded, {"phase": "Succeeded", "outputs": {"score": 1}})
    assert not needs_outputs_read(train, succeeded, {"phase": "Failed", "message": "succeeded, but ..."})
    assert not needs_outputs_read(train, job_obs("train"), None)
    assert not needs_outputs_read(report, job_obs("report", "Succeeded"), None)


# -- matrix works ------------------------------------------------------------------------------------


def matrix_job(work_name: str, completions: int, outcome: str | None = None, **status: Any) -> JobObservation:
    return dataclasses.replace(
        job_obs(work_name, outcome),
        completions=completions,
        parallelism=status.pop("parallelism", completions),
        matrix=True,
        **status,
    )


SWEEP = spec(
    work("process", outputs=[{"name": "shards"}]),
    {**work("train", "process", maxParallel=4), "matrix": {"model": ["a", "b", "c"], "lr": ["1", "2"]}},
    work("pick", "train"),
    work("any", "train", when="AnySucceeded"),
    parallelism=5,
)


def test_a_matrix_work_starts_with_its_combinations_within_the_slots_it_may_take() -> None:
    result = plan(SWEEP, [job_obs("process", "Succeeded")], previous={"process": {"outputs": {"shards": []}}})
    assert started(result) == ["train"]
    assert len(result.combinations["train"]) == 6
    assert result.instances["train"].count == 6
    assert result.instances["train"].parallelism == 4, "maxParallel 4, under the flow's 5"
    assert state(result, "train").instances == 6


def test_running_instances_hold_the_flows_slots() -> None:
    flow_spec = spec(
        {**work("sweep"), "matrix": {"i": ["1", "2", "3", "4"]}},
        work("other"),
        parallelism=4,
    )
    result = plan(flow_spec, [matrix_job("sweep", 4, active=4, parallelism=4)])
    assert started(result) == []
    assert "waiting for a free slot" in (state(result, "other").message or "")
    three_left = plan(flow_spec, [matrix_job("sweep", 4, active=3, parallelism=4, completed_indexes="0")])
    assert started(three_left) == ["other"]


def test_a_matrix_work_counts_its_instances_and_names_the_failed_ones() -> None:
    running = plan(
        SWEEP,
        [
            job_obs("process", "Succeeded"),
            matrix_job("train", 6, active=3, completed_indexes="0-1", failed_indexes="4"),
        ],
    )
    train = state(running, "train")
    assert train.phase == WorkPhase.RUNNING
    assert train.instance_counts == {"Pending": 0, "Running": 3, "Succeeded": 2, "Failed": 1, "Stopped": 0}
    assert train.failed_instances == [{"index": 4, "values": {"lr": "2", "model": "b"}}]
    failed = plan(
        SWEEP,
        [
            job_obs("process", "Succeeded"),
            matrix_job(
                "train",
                6,
                "Failed",
                completed_indexes="0-1",
                failed_indexes="4",
                reason="MaxFailedIndexesExceeded",
            ),
        ],
    )
    train = state(failed, "train")
    assert train.phase == WorkPhase.FAILED
    assert train.instance_counts == {"Pending": 0, "Running": 0, "Succeeded": 2, "Failed": 1, "Stopped": 3}
    assert train.message == "1 of 6 instances failed (3 stopped by FailFast): 4 (lr=2, model=b)"
    assert phases(failed)["pick"] == "Skipped"


def test_any_succeeded_over_instances_needs_one_succeeded_instance() -> None:
    flow_spec = spec(
        {**work("train"), "matrix": {"i": ["1", "2"]}},
        work("any", "train", when="AnySucceeded"),
        failurePolicy="Continue",
    )
    one_failed = plan(
        flow_spec,
        [matrix_job("train", 2, "Failed", completed_indexes="1", failed_indexes="0", reason="FailedIndexes")],
    )
    assert started(one_failed) == ["any"]
    all_failed = plan(
        flow_spec, [matrix_job("train", 2, "Failed", failed_indexes="0-1", reason="FailedIndexes")]
    )
    assert phases(all_failed)["any"] == "Skipped"


def test_a_dynamic_matrix_that_cannot_expand_fails_its_work() -> None:
    flow_spec = spec(
        work("split", outputs=[{"name": "shards"}]),
        {**work("fan", "split"), "matrix": {"shard": "$(works.split.outputs.shards)"}},
    )
    empty = plan(
        flow_spec,
        [job_obs("split", "Succeeded")],
        previous={"split": {"phase": "Succeeded", "outputs": {"shards": []}}},
    )
    assert state(empty, "fan").phase == WorkPhase.FAILED
    assert "is an empty list" in (state(empty, "fan").message or "")
    listed = plan(
        flow_spec,
        [job_obs("split", "Succeeded")],
        previous={"split": {"phase": "Succeeded", "outputs": {"shards": ["a", "b"]}}},
    )
    assert listed.combinations["fan"] == [{"shard": "a"}, {"shard": "b"}]


def test_a_matrix_outcome_carried_by_a_retry_keeps_its_instances_and_outputs() -> None:
    carried = {
        "name": "train",
        "phase": "Succeeded",
        "job": "ml-pipeline-1-train",
        "carriedFromRun": 1,
        "instances": 6,
        "instanceCounts": {"Pending": 0, "Running": 0, "Succeeded": 6, "Failed": 0, "Stopped": 0},
        "outputsConfigMap": "ml-pipeline-1-train-outputs",
    }
    result = plan(SWEEP, [job_obs("process", "Succeeded", run=2)], previous={"train": carried}, run=2)
    train = state(result, "train").to_status()
    assert {key: train[key] for key in carried} == carried
    assert started(result) == ["pick", "any"]


def test_a_work_stopped_under_fail_fast_stays_stopped_while_and_after_its_job_goes() -> None:
    flow_spec = spec(work("a"), work("b"))
    first = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b")])
    deleting = job_obs("b", deleting=True)
    while_deleting = plan(flow_spec, jobs=[job_obs("a", "Failed"), deleting], previous=previous_of(first))
    assert phases(while_deleting)["b"] == "Stopped" and while_deleting.stop == []
    # Its Job may even have succeeded before the deletion landed: the work stays Stopped.
    raced = plan(
        flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b", "Succeeded")], previous=previous_of(first)
    )
    assert phases(raced)["b"] == "Stopped"
    gone = plan(flow_spec, jobs=[job_obs("a", "Failed")], previous=previous_of(first))
    assert phases(gone)["b"] == "Stopped"
    assert state(gone, "b").finished_at == state(first, "b").finished_at


def test_under_continue_a_failure_stops_nothing() -> None:
    flow_spec = spec(work("a"), work("b"), failurePolicy="Continue")
    result = plan(flow_spec, jobs=[job_obs("a", "Failed"), job_obs("b")])
    assert phases(result) == {"a": "Failed", "b": "Running"} and result.stop == []


def test_while_a_new_run_rolls_out_the_old_runs_pods_keep_serving_and_are_named() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"))
    rolling = deploy_obs("serve", run=2, available=False, serving_run=1)
    result = plan(flow_spec, [job_obs("train", "Succeeded", run=2)], [rolling], run=2)
    assert phases(result)["serve"] == "Running"
    assert result.serving == {"serve": 1}


def test_a_rollout_past_its_deadline_fails_the_serve_work_with_the_deployments_reason() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"))
    stuck = deploy_obs(
        "serve",
        run=2,
        available=False,
        serving_run=1,
        stalled=True,
        message='ReplicaSet "x" has timed out progressing.',
    )
    result = plan(flow_spec, [job_obs("train", "Succeeded", run=2)], [stuck], run=2)
    serve = state(result, "serve")
    assert serve.phase == WorkPhase.FAILED
    assert serve.message == (
        'its rollout did not finish: ReplicaSet "x" has timed out progressing. (ProgressDeadlineExceeded)'
    )
    assert result.phase == FlowPhase.FAILED
    # The run before still serves: the flow failed, its endpoint did not go dark.
    assert result.serving == {"serve": 1}


def test_a_matrix_works_gathered_output_fans_out_to_ten_thousand_instances() -> None:
    shards = [f"s3://data/shard-{n:05d}" for n in range(10_000)]
    flow_spec = spec(
        {**work("list"), "matrix": {"part": [str(n) for n in range(100)]}, "outputs": [{"name": "shard"}]},
        {**work("fan", "list"), "matrix": {"shard": "$(works.list.outputs.shard)"}},
    )
    previous = {"list": {"phase": "Succeeded", "outputsConfigMap": f"{FLOW.name}-1-list-outputs"}}
    result = plan(
        flow_spec,
        [matrix_job("list", 100, "Succeeded", completed_indexes="0-99")],
        previous=previous,
        stored_outputs={"list": {"shard": shards}},
    )
    assert started(result) == ["fan"]
    assert result.instances["fan"].count == 10_000
    assert result.combinations["fan"][9_999] == {"shard": shards[9_999]}
    values = build_matrix_values(FLOW, flow_spec.works[1], 1, result.combinations["fan"])
    assert len(values["data"]["values.json"].encode()) < 1024 * 1024


def test_a_success_is_recorded_once_when_its_pod_succeeded_not_again_at_the_jobs_completion() -> None:
    flow_spec = spec(work("a"))
    previous = {"a": {"name": "a", "phase": "Succeeded", "finishedAt": EARLIER}}
    result = plan(flow_spec, [job_obs("a", "Succeeded")], previous=previous)
    assert state(result, "a").finished_at == EARLIER


def test_a_success_by_pod_stands_while_the_job_has_not_caught_up() -> None:
    flow_spec = spec(work("a"))
    previous = {"a": {"name": "a", "phase": "Succeeded", "finishedAt": EARLIER, "job": f"{FLOW.name}-1-a"}}
    result = plan(flow_spec, [job_obs("a")], previous=previous)
    assert phases(result) == {"a": "Succeeded"}
    assert state(result, "a").finished_at == EARLIER


def test_a_serve_work_whose_rollout_failed_stays_failed_in_its_run_when_the_deployment_recovers() -> None:
    flow_spec = spec(work("train"), serve_work("serve", "train"))
    previous = {
        "train": {"name": "train", "phase": "Succeeded"},
        "serve": {
            "name": "serve",
            "phase": "Failed",
            "message": "its rollout did not finish",
            "finishedAt": NOW,
        },
    }
    result = plan(
        flow_spec, [job_obs("train", "Succeeded", run=2)], [deploy_obs("serve", run=2)], previous, run=2
    )
    assert phases(result)["serve"] == "Failed"
    assert result.phase == FlowPhase.FAILED
    # The Serving condition still tells what serves.
    assert result.serving == {"serve": 2}


def test_a_queued_work_made_now_is_queued_not_running_until_kueue_admits_it() -> None:
    queued = spec(work("train", gpu=1), work("unqueued", queueName=""), queueName="gpus")
    result = plan(queued)
    assert started(result) == ["train", "unqueued"]
    train = state(result, "train")
    assert (train.phase, train.reason, train.started_at, train.attempts) == (
        WorkPhase.PENDING,
        "Queued",
        None,
        0,
    )
    assert train.message == "queued in LocalQueue gpus: waiting for Kueue to make its Workload"
    assert state(result, "unqueued").phase == WorkPhase.RUNNING
