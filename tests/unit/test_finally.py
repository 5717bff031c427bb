"""Finally works: what the validator accepts, when the planner starts them, what they are told of
the run, how the run's phase reads while and after they run, and a stop that leaves them to run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dagflow.api.models import DAGFlowSpec, DAGFlowStatus, FlowPhase
from dagflow.controller.planner import FINALLY_WAITS_MESSAGE, Plan, plan_run
from dagflow.controller.runcontrol import begun_status, finally_stop_status, stopped_status
from dagflow.controller.rundecisions import decide_run
from dagflow.controller.status import Transition, build_status, transitions
from dagflow.rules.substitution import BadReference, Values, substitute
from dagflow.rules.validation import topological_order, validate_flow
from tests.unit.test_planner import FLOW, job_obs, phases, plan, previous_of, started, state, work


def flow_spec(*works: dict[str, Any], finally_works: list[dict[str, Any]], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": list(works), "finally": finally_works, **fields})


NOW_TEXT = "2024-05-01T10:00:00Z"
PIPELINE = flow_spec(
    work("process"),
    work("train", "process"),
    finally_works=[
        work(
            "report", container={"image": "example/report:1", "args": ["$(run.phase)", "$(run.failedWorks)"]}
        ),
        work("cleanup", "report"),
    ],
)


def messages(spec: dict[str, Any]) -> list[str]:
    return [f"{problem.path}: {problem.message}" for problem in validate_flow(spec)]


# -- validation ------------------------------------------------------------------------------------


def test_a_finally_work_may_read_the_runs_outcome_and_any_works_outputs() -> None:
    spec = {
        "works": [work("train", outputs=[{"name": "model"}])],
        "finally": [
            work(
                "report",
                container={
                    "image": "r:1",
                    "args": ["$(run.phase)", "$(run.failedWorks)", "$(run)", "$(works.train.outputs.model)"],
                },
            )
        ],
    }
    assert messages(spec) == []


def test_finally_works_keep_to_their_own_dag() -> None:
    spec = {
        "works": [work("train"), work("promote", "report")],
        "finally": [work("report", "train"), work("cleanup", "report", "nothing")],
    }
    assert messages(spec) == [
        "spec.finally[0].dependsOn[0]: finally work 'report' depends on 'train', a work: finally works "
        "depend on finally works only; all run after every work has ended",
        "spec.finally[1].dependsOn[1]: finally work 'cleanup' depends on 'nothing', which is not a work of "
        "this flow",
        "spec.works[1].dependsOn[0]: work 'promote' depends on 'report', a finally work: finally works run "
        "after every work has ended",
    ]


def test_a_name_is_unique_among_works_and_finally_works() -> None:
    spec = {"works": [work("train")], "finally": [work("train")]}
    assert messages(spec) == [
        "spec.finally[0].name: finally work 'train' is defined more than once (first at spec.works[0]); "
        "names must be unique among works and finally works"
    ]


def test_a_finally_work_is_a_plain_batch_work() -> None:
    spec = {
        "works": [work("train")],
        "finally": [
            work("a", serve={"port": 8080}),
            work("b", matrix={"k": [1, 2]}, container={"image": "x", "command": ["run"]}),
            work("c", outputs=[{"name": "o"}]),
            work("d", cache={"enabled": True}),
        ],
    }
    found = messages(spec)
    assert (
        "spec.finally[0].serve: finally work 'a': a finally work is a batch work: a serve work cannot be one"
        in found
    )
    assert "spec.finally[1].matrix: finally work 'b': a finally work runs once: it has no matrix" in found
    assert any(
        line.startswith("spec.finally[2].outputs: finally work 'c': a finally work reports no outputs")
        for line in found
    )
    assert (
        "spec.finally[3].cache.enabled: finally work 'd': a finally work always runs, so it is never cached"
        in found
    )


def test_the_runs_outcome_is_known_in_finally_works_only() -> None:
    spec = {"works": [work("train", container={"image": "x", "args": ["$(run.phase)"]})]}
    assert messages(spec) == [
        "spec.works[0].container.args[0]: work 'train': $(run.phase) is known in finally works only, which "
        "run once the run's works have ended"
    ]


def test_a_finally_works_container_is_checked_against_the_kubernetes_schema() -> None:
    spec = {
        "works": [work("train")],
        "finally": [{"name": "report", "container": {"image": "x", "ports": "80"}}],
    }
    assert any(line.startswith("spec.finally[0].container.ports") for line in messages(spec))


def test_finally_works_come_last_in_their_own_order() -> None:
    spec = flow_spec(work("a"), finally_works=[work("z", "y"), work("y")])
    assert topological_order(spec) == ["a", "y", "z"]


# -- substitution ----------------------------------------------------------------------------------


def test_a_finally_work_is_told_how_the_run_ended() -> None:
    values = Values(run=3, flow="f", work="report", run_phase="Failed", failed_works=("train", "eval"))
    assert substitute("$(run.phase) $(run) $(run.failedWorks)", values) == 'Failed 3 ["train","eval"]'


def test_outputs_of_a_work_that_did_not_succeed_are_empty_in_a_finally_work() -> None:
    told = Values(run=1, flow="f", work="report", run_phase="Failed", outputs_optional=True)
    assert substitute("model=$(works.train.outputs.model)", told) == "model="
    with pytest.raises(BadReference, match="known in finally works only"):
        substitute("$(run.phase)", Values(run=1, flow="f", work="train"))


# -- planning --------------------------------------------------------------------------------------


def test_finally_works_wait_while_the_works_run() -> None:
    result = plan(PIPELINE, [job_obs("process", "Succeeded"), job_obs("train")])
    assert phases(result) == {
        "process": "Succeeded",
        "train": "Running",
        "report": "Pending",
        "cleanup": "Pending",
    }
    assert state(result, "report").message == FINALLY_WAITS_MESSAGE
    assert state(result, "report").is_finally and not state(result, "train").is_finally
    assert result.phase == FlowPhase.RUNNING and result.outcome is None


def test_finally_works_start_when_the_works_have_ended_and_know_the_outcome() -> None:
    result = plan(PIPELINE, [job_obs("process", "Succeeded"), job_obs("train", "Failed")])
    assert started(result) == ["report"]
    assert result.outcome == FlowPhase.FAILED and result.failed_works == ["train"]
    # The run goes on while its finally works run; it says how its works ended.
    assert result.phase == FlowPhase.RUNNING
    assert result.message == "the works ended Failed: running the finally works"


def test_failfast_neither_skips_nor_stops_finally_works() -> None:
    fail_fast = flow_spec(work("a"), work("b"), finally_works=[work("report")])
    result = plan(fail_fast, [job_obs("a", "Failed"), job_obs("b")])
    assert phases(result)["b"] == "Stopped"
    assert started(result) == ["report"]
    later = plan(fail_fast, [job_obs("a", "Failed"), job_obs("report")], previous=previous_of(result))
    assert phases(later)["report"] == "Running" and not later.stop


def test_the_runs_phase_is_its_works_outcome_once_the_finally_works_end() -> None:
    jobs = [job_obs("process", "Succeeded"), job_obs("train", "Succeeded"), job_obs("report", "Succeeded")]
    result = plan(PIPELINE, [*jobs, job_obs("cleanup", "Failed")])
    assert result.phase == FlowPhase.SUCCEEDED
    assert result.outcome == FlowPhase.SUCCEEDED
    assert result.message is not None and result.message.startswith("finally work cleanup failed")


def test_a_finally_work_after_a_failed_one_is_skipped_by_its_rule() -> None:
    jobs = [job_obs("process", "Succeeded"), job_obs("train", "Succeeded"), job_obs("report", "Failed")]
    result = plan(PIPELINE, jobs)
    assert phases(result)["cleanup"] == "Skipped"
    assert result.phase == FlowPhase.SUCCEEDED


def test_a_stopped_runs_finally_works_are_told_it_was_stopped() -> None:
    previous = {
        "process": {"name": "process", "phase": "Succeeded", "job": "ml-pipeline-1-process"},
        "train": {"name": "train", "phase": "Stopped", "message": "stopped by request"},
        "report": {"name": "report", "phase": "Pending", "finally": True},
        "cleanup": {"name": "cleanup", "phase": "Pending", "finally": True},
    }
    result = plan_run(
        FLOW,
        PIPELINE,
        topological_order(PIPELINE),
        1,
        {"process": job_obs("process", "Succeeded"), "train": job_obs("train", deleting=True)},
        {},
        previous,
        "2024-05-01T10:00:00Z",
        outcome=FlowPhase.STOPPED,
    )
    assert started(result) == ["report"]
    assert result.outcome == FlowPhase.STOPPED
    assert phases(result)["train"] == "Stopped"


def test_a_job_that_escaped_the_stop_is_stopped_when_seen() -> None:
    previous = {
        "process": {"name": "process", "phase": "Succeeded", "job": "ml-pipeline-1-process"},
        "train": {"name": "train", "phase": "Stopped", "message": "stopped by request"},
        "report": {"name": "report", "phase": "Pending", "finally": True},
        "cleanup": {"name": "cleanup", "phase": "Pending", "finally": True},
    }
    jobs = {"process": job_obs("process", "Succeeded"), "train": job_obs("train")}
    result = plan_run(
        FLOW,
        PIPELINE,
        topological_order(PIPELINE),
        1,
        jobs,
        {},
        previous,
        NOW_TEXT,
        outcome=FlowPhase.STOPPED,
    )
    assert result.stop == ["ml-pipeline-1-train"]
    assert phases(result)["train"] == "Stopped"


def test_the_status_names_the_outcome_and_marks_finally_works() -> None:
    result = plan(PIPELINE, [job_obs("process", "Succeeded"), job_obs("train", "Succeeded")])
    status = build_status(result, {}, 1, 1, "2024-05-01T10:00:00Z")
    DAGFlowStatus.model_validate(status)
    assert status["outcome"] == "Succeeded" and status["phase"] == "Running"
    assert [work.get("finally", False) for work in status["works"]] == [False, False, True, True]


def test_a_failed_finally_work_is_announced_as_such() -> None:
    jobs = [job_obs("process", "Succeeded"), job_obs("train", "Succeeded"), job_obs("report", "Failed")]
    result = plan(PIPELINE, jobs)
    moved = {move.work: move for move in transitions({}, result)}
    assert moved["report"].reason == "FinallyFailed"
    assert moved["train"].reason == "WorkSucceeded"
    assert Transition("x", result.works[0].phase, "", None, is_finally=True).reason == "WorkSucceeded"


def test_a_flow_without_finally_works_has_no_outcome_field() -> None:
    plain = flow_spec(work("a"), finally_works=[])
    result: Plan = plan(plain, [job_obs("a", "Succeeded")])
    assert result.outcome is None
    assert "outcome" not in build_status(result, {}, 1, 1, "2024-05-01T10:00:00Z")


# -- stopping --------------------------------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)


def running_status() -> dict[str, Any]:
    decision = decide_run(PIPELINE, {}, {}, NOW, generation=1)
    status = begun_status({}, decision, PIPELINE, 1, NOW, 3)
    status["phase"] = "Running"
    status["works"][0].update(phase="Succeeded", job="f-1-process")
    status["works"][1].update(phase="Running", job="f-1-train", attempts=1)
    return status


def test_a_run_begins_with_its_finally_works_pending() -> None:
    status = running_status()
    assert [(w["name"], w.get("finally", False)) for w in status["works"]] == [
        ("process", False),
        ("train", False),
        ("report", True),
        ("cleanup", True),
    ]


def test_a_stop_before_the_finally_works_stops_the_works_and_leaves_them_to_run() -> None:
    status = running_status()
    decision = decide_run(PIPELINE, status, {"dagflow.dev/stop": "s1"}, NOW, generation=1)
    stopping = finally_stop_status(status, decision, 1, NOW, 3)
    DAGFlowStatus.model_validate(stopping)
    assert stopping["phase"] == "Running" and stopping["outcome"] == "Stopped"
    assert [w["phase"] for w in stopping["works"]] == ["Succeeded", "Stopped", "Pending", "Pending"]
    assert stopping["handledRequests"] == {"stop": "s1"}
    assert "finishedAt" not in stopping
    # A second stop, once the finally works run, ends the run: they stop too.
    stopping["works"][2].update(phase="Running", job="f-1-report")
    again = decide_run(PIPELINE, stopping, {"dagflow.dev/stop": "s2"}, NOW, generation=1)
    stopped = stopped_status(stopping, again, 1, NOW, 3)
    assert stopped["phase"] == "Stopped"
    assert [w["phase"] for w in stopped["works"]] == ["Succeeded", "Stopped", "Stopped", "Stopped"]
