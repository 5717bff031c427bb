"""The flow's status as `kubectl get dagflow -o yaml` shows it, and the Events of work transitions."""

from __future__ import annotations

from typing import Any

import pytest

from dagflow.api.models import DAGFlowStatus, FlowPhase, WorkPhase
from dagflow.controller.planner import MAX_WORK_MESSAGE_CHARS, Plan, WorkState
from dagflow.controller.status import (
    Transition,
    build_status,
    fit_in_object,
    invalid_status,
    json_size,
    summarize,
    transitions,
)

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"
T2 = "2024-05-01T10:10:00Z"
ENDPOINT = "http://ml-pipeline-serve.default.svc:8080"


# -- factories -----------------------------------------------------------------------------------


def ws(name: str, phase: str = "Pending", **fields: Any) -> WorkState:
    return WorkState(name=name, phase=WorkPhase(phase), **fields)


def plan_of(phase: str, *works: WorkState, message: str | None = None) -> Plan:
    return Plan(works=list(works), phase=FlowPhase(phase), message=message)


def status(
    result: Plan, previous: dict[str, Any] | None = None, *, run: int = 1, generation: int = 1, now: str = T0
) -> dict[str, Any]:
    built = build_status(result, previous or {}, run, generation, now)
    DAGFlowStatus.model_validate(built)  # every status fits the API's schema
    return built


def ready(built: dict[str, Any]) -> Any:
    (condition,) = [c for c in built["conditions"] if c["type"] == "Ready"]
    return condition


RUNNING = plan_of(
    "Running",
    ws("process", "Succeeded", job="ml-pipeline-1-process", attempts=1, started_at=T0, finished_at=T0),
    ws("train", "Running", job="ml-pipeline-1-train", attempts=2, started_at=T0, message="retrying"),
    ws("report"),
)
SUCCEEDED = plan_of("Succeeded", ws("a", "Succeeded"), ws("b", "Succeeded"))
FAILED = plan_of(
    "Failed", ws("a", "Failed", message="boom"), ws("b", "Skipped"), message="work a failed: boom"
)


# -- build_status --------------------------------------------------------------------------------


def test_status_of_a_running_flow() -> None:
    built = status(RUNNING, run=1, generation=3, now=T0)
    assert built["phase"] == "Running"
    assert built["progress"] == "1/3"
    assert (built["run"], built["observedGeneration"], built["startedAt"]) == (1, 3, T0)
    assert "finishedAt" not in built
    assert "message" not in built
    assert built["works"] == [
        {
            "name": "process",
            "phase": "Succeeded",
            "job": "ml-pipeline-1-process",
            "attempts": 1,
            "startedAt": T0,
            "finishedAt": T0,
        },
        {
            "name": "train",
            "phase": "Running",
            "job": "ml-pipeline-1-train",
            "attempts": 2,
            "startedAt": T0,
            "message": "retrying",
        },
        {"name": "report", "phase": "Pending"},
    ]
    condition = ready(built)
    assert condition["status"] == "False"
    assert condition["reason"] == "Running"
    assert "1/3" in condition["message"]
    assert (condition["lastTransitionTime"], condition["observedGeneration"]) == (T0, 3)


@pytest.mark.parametrize("phase", list(FlowPhase))
def test_ready_is_true_exactly_when_succeeded_or_serving(phase: FlowPhase) -> None:
    built = status(plan_of(phase.value, ws("a")))
    expected = "True" if phase in (FlowPhase.SUCCEEDED, FlowPhase.SERVING) else "False"
    assert ready(built)["status"] == expected
    assert ready(built)["reason"] == phase.value


def test_ready_keeps_its_transition_time_while_its_status_does_not_change() -> None:
    first = status(RUNNING, now=T0)
    failed = status(FAILED, first, now=T1)
    # Running -> Failed: Ready stays False, so it did not transition.
    assert ready(failed)["lastTransitionTime"] == T0
    assert ready(failed)["reason"] == "Failed"
    assert ready(failed)["message"] == "work a failed: boom"


def test_ready_transition_time_moves_when_the_flow_becomes_ready_and_then_stays() -> None:
    first = status(RUNNING, now=T0)
    done = status(SUCCEEDED, first, now=T1)
    assert ready(done)["lastTransitionTime"] == T1
    again = status(SUCCEEDED, done, now=T2)
    assert ready(again)["lastTransitionTime"] == T1


def test_finished_at_is_set_when_the_flow_finishes_and_kept_across_passes() -> None:
    first = status(RUNNING, now=T0)
    assert "finishedAt" not in first
    done = status(SUCCEEDED, first, now=T1)
    assert done["finishedAt"] == T1
    again = status(SUCCEEDED, done, now=T2)
    assert again["finishedAt"] == T1
    assert again["startedAt"] == T0


def test_failed_flow_has_finished_at_and_its_message() -> None:
    built = status(FAILED, status(RUNNING, now=T0), now=T1)
    assert built["finishedAt"] == T1
    assert built["message"] == "work a failed: boom"
    assert built["progress"] == "2/2"
    assert status(FAILED, built, now=T2)["finishedAt"] == T1


def test_a_serving_flow_has_no_finished_at() -> None:
    serving = plan_of("Serving", ws("serve", "Serving", endpoint=ENDPOINT))
    assert "finishedAt" not in status(serving, now=T1)


def test_a_new_run_starts_afresh() -> None:
    finished = status(SUCCEEDED, status(RUNNING, run=1, now=T0), run=1, now=T1)
    new_run = status(RUNNING, finished, run=2, generation=2, now=T2)
    assert (new_run["run"], new_run["startedAt"], new_run["observedGeneration"]) == (2, T2, 2)
    assert "finishedAt" not in new_run
    done_again = status(SUCCEEDED, finished, run=2, generation=2, now=T2)
    assert done_again["finishedAt"] == T2


def test_endpoint_is_shown_at_the_top_only_with_exactly_one_serve_work() -> None:
    one = plan_of("Serving", ws("train", "Succeeded"), ws("serve", "Serving", endpoint=ENDPOINT))
    built = status(one)
    assert built["endpoint"] == ENDPOINT
    assert built["works"][1]["endpoint"] == ENDPOINT
    assert "endpoint" not in built["works"][0]

    other = "http://ml-pipeline-ui.default.svc:3000"
    two = plan_of("Serving", ws("serve", "Serving", endpoint=ENDPOINT), ws("ui", "Serving", endpoint=other))
    built = status(two)
    assert "endpoint" not in built
    assert [w["endpoint"] for w in built["works"]] == [ENDPOINT, other]

    assert "endpoint" not in status(SUCCEEDED)


def test_a_new_status_drops_the_message_of_the_previous_one() -> None:
    built = status(RUNNING, {"run": 1, "phase": "Running", "message": "old", "startedAt": T0}, now=T1)
    assert "message" not in built
    assert built["startedAt"] == T0


# -- invalid_status ------------------------------------------------------------------------------


def test_invalid_flow_fails_with_the_validators_message_and_runs_nothing() -> None:
    message = "invalid flow: spec.works[1].dependsOn: cycle a -> b -> a"
    built = invalid_status(message, {}, 1, T0)
    DAGFlowStatus.model_validate(built)
    assert built["phase"] == "Failed"
    assert built["message"] == message
    assert built["works"] == []
    assert built["finishedAt"] == T0
    condition = ready(built)
    assert (condition["status"], condition["reason"], condition["message"]) == ("False", "Invalid", message)
    assert condition["observedGeneration"] == 1


def test_invalid_flow_keeps_its_times_while_the_problem_is_the_same() -> None:
    message = "invalid flow: cycle a -> b -> a"
    first = invalid_status(message, {}, 1, T0)
    again = invalid_status(message, first, 1, T1)
    assert again == first

    changed = invalid_status("invalid flow: unknown work c", first, 2, T2)
    assert changed["finishedAt"] == T2
    assert ready(changed)["lastTransitionTime"] == T0  # still not ready


def test_an_invalid_edit_keeps_the_last_runs_works_and_ready_flips_to_false() -> None:
    served = status(plan_of("Serving", ws("serve", "Serving", endpoint=ENDPOINT)), now=T0)
    built = invalid_status("invalid flow: bad", served, 2, T1)
    DAGFlowStatus.model_validate(built)
    assert built["run"] == 1
    assert built["observedGeneration"] == 2
    assert built["works"] == served["works"]
    assert ready(built)["status"] == "False"
    assert ready(built)["lastTransitionTime"] == T1


# -- transitions ---------------------------------------------------------------------------------


def test_the_first_pass_announces_started_works_only() -> None:
    result = plan_of("Running", ws("a", "Running"), ws("b"))
    (only,) = transitions({}, result)
    assert (only.work, only.phase, only.reason, only.event_type) == (
        "a",
        WorkPhase.RUNNING,
        "WorkStarted",
        "Normal",
    )
    assert only.message == "Work a started"


def test_unchanged_works_announce_nothing() -> None:
    result = plan_of("Running", ws("a", "Running"), ws("b"))
    previous = {"a": {"name": "a", "phase": "Running"}, "b": {"name": "b", "phase": "Pending"}}
    assert transitions(previous, result) == []


def test_a_failure_is_a_warning_with_the_reason() -> None:
    result = plan_of(
        "Failed", ws("a", "Failed", message="timed out after 60s (DeadlineExceeded)"), ws("b", "Skipped")
    )
    previous = {"a": {"name": "a", "phase": "Running"}, "b": {"name": "b", "phase": "Pending"}}
    by_work = {t.work: t for t in transitions(previous, result)}
    assert by_work["a"].event_type == "Warning"
    assert by_work["a"].reason == "WorkFailed"
    assert by_work["a"].message == "Work a failed: timed out after 60s (DeadlineExceeded)"
    assert (by_work["b"].reason, by_work["b"].event_type) == ("WorkSkipped", "Normal")


@pytest.mark.parametrize(
    ("phase", "reason"),
    [
        ("Succeeded", "WorkSucceeded"),
        ("Serving", "WorkServing"),
        ("Skipped", "WorkSkipped"),
        ("Stopped", "WorkStopped"),
    ],
)
def test_each_outcome_has_its_own_reason(phase: str, reason: str) -> None:
    (only,) = transitions({"a": {"phase": "Running"}}, plan_of("Running", ws("a", phase)))
    assert only.reason == reason


def test_a_work_going_back_to_pending_is_not_announced() -> None:
    assert transitions({"a": {"phase": "Running"}}, plan_of("Running", ws("a"))) == []


def test_a_few_works_moving_together_get_an_event_each() -> None:
    changed = [Transition(name, WorkPhase.SUCCEEDED, f"Work {name} succeeded") for name in "abc"]
    assert summarize(changed, limit=5) == changed


def test_many_works_moving_together_share_one_event_per_move() -> None:
    started = [Transition(f"w{i}", WorkPhase.RUNNING, f"Work w{i} started") for i in range(8)]
    failed = Transition("bad", WorkPhase.FAILED, "Work bad failed: exit code 1")
    events = summarize([*started, failed], limit=3)
    assert [(event.reason, event.message) for event in events] == [
        ("WorkStarted", "8 works started: w0, w1, w2 and 5 more"),
        ("WorkFailed", "Work bad failed: exit code 1"),
    ]
    assert events[1].event_type == "Warning"


def test_a_serving_work_that_loses_its_deployment_is_a_warning_not_a_start() -> None:
    lost = ws(
        "web", "Running", message="Deployment f-web lost availability: fewer available replicas than wanted"
    )
    (only,) = transitions({"web": {"phase": "Serving"}}, plan_of("Running", lost))
    assert (only.reason, only.event_type) == ("WorkUnavailable", "Warning")
    assert only.message.startswith("Work web is unavailable: Deployment f-web lost availability")


def test_a_work_that_starts_is_not_unavailable() -> None:
    (only,) = transitions({"web": {"phase": "Pending"}}, plan_of("Running", ws("web", "Running")))
    assert (only.reason, only.event_type) == ("WorkStarted", "Normal")


def test_the_serving_condition_says_which_runs_model_serves_while_the_latest_run_failed() -> None:
    result = plan_of("Failed", ws("train", "Failed"), ws("serve", "Skipped", endpoint=ENDPOINT))
    result.serve_works, result.serving = ["serve"], {"serve": 2}
    built = status(result, run=3)
    assert ready(built)["status"] == "False"
    (serving,) = [c for c in built["conditions"] if c["type"] == "Serving"]
    assert serving["status"] == "True"
    assert serving["message"] == f"run 2's model serves at {ENDPOINT}"


def test_the_serving_condition_is_false_until_a_deployment_is_available() -> None:
    result = plan_of("Running", ws("train", "Running"), ws("serve", "Pending", endpoint=ENDPOINT))
    result.serve_works = ["serve"]
    (serving,) = [c for c in status(result)["conditions"] if c["type"] == "Serving"]
    assert (serving["status"], serving["reason"]) == ("False", "NotServing")


def test_a_flow_without_serve_works_has_no_serving_condition() -> None:
    built = status(plan_of("Succeeded", ws("train", "Succeeded")))
    assert [c["type"] for c in built["conditions"]] == ["Ready"]


def test_a_stopped_run_is_finished() -> None:
    built = status(plan_of("Stopped", ws("train", "Stopped")))
    assert built["finishedAt"] == T0


def test_a_status_that_would_not_fit_its_object_sheds_messages_first_then_leaves_them_out() -> None:
    works = [
        {
            "name": f"w{n}",
            "phase": "Failed",
            "message": "x" * 1000,
            "failedInstances": [{"index": i} for i in range(20)],
        }
        for n in range(100)
    ]
    status = {"phase": "Failed", "message": "3 works failed", "works": works}
    assert fit_in_object(status, json_size(status)) is status
    shorter = fit_in_object(status, 40_000)
    assert json_size(shorter) <= 40_000
    assert {len(work["message"]) for work in shorter["works"]} == {120}
    assert {len(work["failedInstances"]) for work in shorter["works"]} == {3}
    bare = fit_in_object(status, 10_000)
    assert all("message" not in work for work in bare["works"])
    assert bare["message"].startswith("3 works failed; the works' messages are left out")


def test_a_works_message_in_the_status_is_cut_to_a_bounded_length() -> None:
    entry = WorkState(name="a", message="é" * 5000).to_status()
    assert len(entry["message"]) == MAX_WORK_MESSAGE_CHARS and entry["message"].endswith("…")
