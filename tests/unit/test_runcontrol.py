"""The status of a run as run control shapes it: a run that begins, a run that is stopped, and the
run-control fields every later status keeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dagflow.api.models import DAGFlowSpec, DAGFlowStatus, FlowPhase, WorkPhase
from dagflow.controller.planner import Plan, WorkState
from dagflow.controller.runcontrol import begun_status, carried_jobs, stopped_status, with_run_control
from dagflow.controller.rundecisions import decide_run, run_fingerprint
from dagflow.controller.status import build_status

NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
LATER = datetime(2025, 1, 1, 12, 5, 0, tzinfo=UTC)
KEEP = 3


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


SPEC = DAGFlowSpec.model_validate(
    {
        "works": [
            work("process"),
            work("train", "process"),
            work("serve", "train", serve={"port": 8080}),
        ],
        "schedule": "0 2 * * *",
    }
)


def valid(status: dict[str, Any]) -> dict[str, Any]:
    DAGFlowStatus.model_validate(status)  # every status fits the API's schema
    return status


def test_the_first_run_begins_with_every_work_pending_and_its_summary() -> None:
    decision = decide_run(SPEC, {}, {}, NOW, generation=1)
    status = valid(begun_status({}, decision, SPEC, 1, NOW, KEEP))
    assert status["run"] == 1
    assert status["phase"] == "Pending"
    assert status["runSpecHash"] == run_fingerprint(SPEC)
    assert [entry["phase"] for entry in status["works"]] == ["Pending"] * 3
    assert status["runs"] == [
        {"number": 1, "trigger": "Created", "phase": "Pending", "startedAt": "2025-01-01T12:00:30Z"}
    ]
    assert status["nextScheduleTime"] == "2025-01-02T02:00:00Z"
    assert "finishedAt" not in status
    assert status["startedAt"] == "2025-01-01T12:00:30.000Z"


def test_a_run_began_to_the_millisecond_so_flows_begun_in_one_second_keep_an_order() -> None:
    decision = decide_run(SPEC, {}, {}, NOW, generation=1)
    began = NOW.replace(microsecond=397_153)
    status = valid(begun_status({}, decision, SPEC, 1, NOW, KEEP, began))
    assert status["startedAt"] == "2025-01-01T12:00:30.397Z"
    # The run's summary keeps whole seconds, as every other time in the status.
    assert status["runs"][0]["startedAt"] == "2025-01-01T12:00:30Z"


def failed_run_status() -> dict[str, Any]:
    return {
        "run": 1,
        "phase": "Failed",
        "observedGeneration": 1,
        "runSpecHash": run_fingerprint(SPEC),
        "startedAt": "2025-01-01T11:00:00Z",
        "finishedAt": "2025-01-01T11:30:00Z",
        "works": [
            {"name": "process", "phase": "Succeeded", "job": "f-1-process", "attempts": 1},
            {"name": "train", "phase": "Failed", "job": "f-1-train", "attempts": 1},
            {"name": "serve", "phase": "Skipped"},
        ],
        "runs": [
            {
                "number": 1,
                "trigger": "Created",
                "phase": "Failed",
                "startedAt": "2025-01-01T11:00:00Z",
                "finishedAt": "2025-01-01T11:30:00Z",
            }
        ],
        "conditions": [
            {
                "type": "Serving",
                "status": "True",
                "reason": "Serving",
                "message": "run 1's model serves",
                "lastTransitionTime": "2025-01-01T11:00:00Z",
            }
        ],
    }


def test_a_retry_begins_with_the_carried_outcomes_and_keeps_the_serving_condition() -> None:
    previous = failed_run_status()
    decision = decide_run(SPEC, previous, {"dagflow.dev/retry": "t1"}, NOW, generation=1)
    status = valid(begun_status(previous, decision, SPEC, 1, NOW, KEEP))
    assert status["run"] == 2
    assert status["works"][0] == {
        "name": "process",
        "phase": "Succeeded",
        "job": "f-1-process",
        "attempts": 1,
        "carriedFromRun": 1,
    }
    assert [entry["phase"] for entry in status["works"][1:]] == ["Pending", "Pending"]
    assert status["progress"] == "1/3"
    assert status["handledRequests"] == {"retry": "t1"}
    assert [summary["number"] for summary in status["runs"]] == [1, 2]
    assert status["runs"][-1]["trigger"] == "Retry"
    assert [c["type"] for c in status["conditions"]] == ["Serving"]
    assert carried_jobs(status["works"]) == {"f-1-process"}


def test_a_stopped_run_ends_its_unfinished_works_stopped() -> None:
    running = {
        **failed_run_status(),
        "phase": "Running",
        "works": [
            {"name": "process", "phase": "Succeeded", "job": "f-1-process", "attempts": 1},
            {"name": "train", "phase": "Running", "job": "f-1-train", "attempts": 1},
            {"name": "serve", "phase": "Pending"},
        ],
    }
    del running["finishedAt"]
    running["runs"][0].update(phase="Running")
    del running["runs"][0]["finishedAt"]
    decision = decide_run(SPEC, running, {"dagflow.dev/stop": "s1"}, NOW, generation=1)
    status = valid(stopped_status(running, decision, 1, NOW, KEEP))
    assert status["phase"] == "Stopped"
    assert status["finishedAt"] == "2025-01-01T12:00:30Z"
    assert [entry["phase"] for entry in status["works"]] == ["Succeeded", "Stopped", "Stopped"]
    assert status["works"][1]["finishedAt"] == "2025-01-01T12:00:30Z"
    assert status["progress"] == "3/3"
    assert status["handledRequests"] == {"stop": "s1"}
    assert status["runs"][0]["phase"] == "Stopped"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Stopped")
    # Recorded once, the stop is not acted on again.
    again = decide_run(SPEC, status, {"dagflow.dev/stop": "s1"}, LATER, generation=1)
    assert again.action == "Continue"


def test_every_status_written_keeps_the_run_control_fields_and_the_runs_summary_follows() -> None:
    previous = failed_run_status()
    previous.update(
        phase="Running",
        handledRequests={"rerun": "r1"},
        nextScheduleTime="2025-01-02T02:00:00Z",
    )
    plan = Plan(works=[WorkState("process", phase=WorkPhase.SUCCEEDED)], phase=FlowPhase.SUCCEEDED)
    built = build_status(plan, previous, 1, 1, "2025-01-01T12:00:30Z")
    assert built["handledRequests"] == {"rerun": "r1"}
    assert built["runSpecHash"] == previous["runSpecHash"]
    decision = decide_run(SPEC, previous, {}, NOW, generation=1)
    status = valid(with_run_control(built, decision, KEEP))
    assert status["runs"][-1]["phase"] == "Succeeded"
    assert status["runs"][-1]["finishedAt"] == "2025-01-01T12:00:30Z"
    assert status["nextScheduleTime"] == "2025-01-02T02:00:00Z"


def test_the_history_keeps_the_configured_number_of_runs() -> None:
    status: dict[str, Any] = {}
    for number in range(1, 6):
        decision = decide_run(SPEC, status, {"dagflow.dev/rerun": str(number)}, NOW, generation=1)
        status = begun_status(status, decision, SPEC, 1, NOW, 2)
        status = with_run_control(
            {**status, "phase": "Succeeded", "finishedAt": "2025-01-01T12:01:00Z"}, None, 2
        )
    assert [summary["number"] for summary in status["runs"]] == [4, 5]
