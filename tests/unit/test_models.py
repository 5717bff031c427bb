"""The pydantic models: defaults, camelCase on the wire, bounds, status round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dagflow.api import (
    RERUN_ANNOTATION,
    RUN_CONTROL_FIELDS,
    ConcurrencyPolicy,
    DAGFlow,
    DAGFlowSpec,
    DAGFlowStatus,
    FailurePolicy,
    FlowPhase,
    HandledRequests,
    RunRequest,
    RunTrigger,
    TriggerRule,
    Work,
    WorkPhase,
)

FLOW: dict[str, Any] = {
    "apiVersion": "dagflow.dev/v1alpha1",
    "kind": "DAGFlow",
    "metadata": {"name": "ml-pipeline", "namespace": "default", "generation": 1},
    "spec": {
        "podDefaults": {"serviceAccountName": "trainer", "env": [{"name": "MODE", "value": "prod"}]},
        "works": [
            {"name": "process", "container": {"image": "example/ml:1.0", "command": ["python"]}},
            {
                "name": "train-a",
                "dependsOn": ["process"],
                "gpu": 1,
                "retries": 2,
                "timeoutSeconds": 3600,
                "container": {"image": "example/ml:1.0", "args": ["--model", "a"]},
                "labels": {"pod-duration": "1s"},
            },
            {
                "name": "serve",
                "dependsOn": ["train-a"],
                "serve": {"port": 8080},
                "container": {"image": "example/ml:1.0"},
            },
        ],
    },
}


def test_a_full_object_parses_with_defaults() -> None:
    flow = DAGFlow.from_object(FLOW)
    assert flow.name == "ml-pipeline"
    assert flow.spec.failure_policy is FailurePolicy.FAIL_FAST
    assert flow.spec.parallelism == 0
    assert flow.spec.pod_defaults is not None
    assert flow.spec.pod_defaults.service_account_name == "trainer"
    train = flow.spec.work("train-a")
    assert (train.gpu, train.retries, train.timeout_seconds, train.when) == (
        1,
        2,
        3600,
        TriggerRule.ALL_SUCCEEDED,
    )
    assert train.depends_on == ["process"]
    assert not train.is_serve
    serve = flow.spec.work("serve")
    assert serve.is_serve and serve.serve is not None and serve.serve.replicas == 1
    assert flow.status is None
    with pytest.raises(KeyError):
        flow.spec.work("nope")


def test_to_dict_is_camel_case_and_leaves_out_unset_fields() -> None:
    work = Work(name="train", container={"image": "x"}, depends_on=["a"], timeout_seconds=5)
    assert work.to_dict() == {
        "name": "train",
        "container": {"image": "x"},
        "dependsOn": ["a"],
        "when": "AllSucceeded",
        "gpu": 0,
        "retries": 0,
        "timeoutSeconds": 5,
        "volumes": [],
        "nodeSelector": {},
        "tolerations": [],
        "labels": {},
        "annotations": {},
        "maxParallel": 0,
        "outputs": [],
    }
    assert Work.model_validate(work.to_dict()) == work


def test_embedded_kubernetes_objects_pass_through_untouched() -> None:
    container = {"image": "x", "resources": {"limits": {"cpu": "500m"}}, "futureField": {"a": 1}}
    work = Work.model_validate({"name": "a", "container": container})
    assert work.container == container


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "a", "container": {"image": "x"}, "unknownField": 1},
        {"name": "A", "container": {"image": "x"}},
        {"name": "a", "container": {"image": ""}},
        {"name": "a", "container": {"image": "x"}, "gpu": -1},
        {"name": "a", "container": {"image": "x"}, "serve": {"port": 70000}},
        {"name": "a", "container": {"image": "x"}, "serve": {"port": 80}, "timeoutSeconds": 10},
        {"name": "a", "container": {"image": "x"}, "volumes": [{"emptyDir": {}}]},
        {"name": "a", "container": {"image": "x"}, "when": "Always"},
    ],
)
def test_invalid_works_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Work.model_validate(bad)


def test_works_are_bounded() -> None:
    with pytest.raises(ValidationError):
        DAGFlowSpec.model_validate({"works": []})
    too_many = [{"name": f"w{index}", "container": {"image": "x"}} for index in range(2001)]
    with pytest.raises(ValidationError):
        DAGFlowSpec.model_validate({"works": too_many})


def test_status_round_trips_with_rfc3339_times() -> None:
    status = DAGFlowStatus.model_validate(
        {
            "phase": "Running",
            "progress": "1/3",
            "observedGeneration": 1,
            "run": 1,
            "startedAt": "2025-01-02T03:04:05Z",
            "works": [
                {"name": "process", "phase": "Succeeded", "job": "ml-pipeline-1-process", "attempts": 1},
                {"name": "train-a", "phase": "Running"},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Running",
                    "message": "",
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                }
            ],
            "somethingNewer": True,
        }
    )
    assert status.phase is FlowPhase.RUNNING
    assert status.works[0].phase is WorkPhase.SUCCEEDED
    assert status.started_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    dumped = status.to_dict()
    assert dumped["startedAt"] == "2025-01-02T03:04:05Z"
    assert dumped["conditions"][0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert dumped["works"][1] == {"name": "train-a", "phase": "Running", "attempts": 0}


def test_status_times_must_carry_a_time_zone() -> None:
    with pytest.raises(ValidationError):
        DAGFlowStatus.model_validate({"startedAt": "2025-01-02T03:04:05"})


def test_snake_case_names_work_in_python() -> None:
    spec = DAGFlowSpec(
        failure_policy=FailurePolicy.CONTINUE,
        works=[Work(name="a", container={"image": "x"})],
    )
    assert spec.to_dict()["failurePolicy"] == "Continue"


def test_run_control_fields_have_kubernetes_like_defaults() -> None:
    spec = DAGFlowSpec.model_validate({"works": [{"name": "a", "container": {"image": "x"}}]})
    assert spec.schedule is None
    assert spec.time_zone == "UTC"
    assert spec.concurrency_policy is ConcurrencyPolicy.FORBID
    assert spec.starting_deadline_seconds is None
    assert spec.suspend is False
    assert spec.history_runs is None
    wire = DAGFlowSpec.model_validate(
        {
            "works": [{"name": "a", "container": {"image": "x"}}],
            "schedule": "@daily",
            "timeZone": "Europe/Berlin",
            "concurrencyPolicy": "Replace",
            "startingDeadlineSeconds": 600,
            "suspend": True,
            "historyRuns": 5,
        }
    ).to_dict()
    assert {key: wire[key] for key in ("schedule", "timeZone", "concurrencyPolicy")} == {
        "schedule": "@daily",
        "timeZone": "Europe/Berlin",
        "concurrencyPolicy": "Replace",
    }
    assert (wire["startingDeadlineSeconds"], wire["suspend"], wire["historyRuns"]) == (600, True, 5)


@pytest.mark.parametrize(
    "bad",
    [
        {"concurrencyPolicy": "Allow"},
        {"startingDeadlineSeconds": 0},
        {"historyRuns": 0},
        {"historyRuns": 101},
        {"timeZone": ""},
    ],
)
def test_run_control_fields_are_bounded(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DAGFlowSpec.model_validate({"works": [{"name": "a", "container": {"image": "x"}}], **bad})


def test_run_control_fields_are_every_spec_field_that_does_not_shape_a_run() -> None:
    assert DAGFlowSpec.model_fields.keys() > RUN_CONTROL_FIELDS
    assert DAGFlowSpec.model_fields.keys() - RUN_CONTROL_FIELDS == {
        "failure_policy",
        "parallelism",
        "pod_defaults",
        "params",
        "works",
        "finally_works",
        # The queue and the priority are on every Job a run makes.
        "queue_name",
        "priority_class_name",
        # A new cache version misses on purpose: a run of its own.
        "cache",
        # A run's works share one volume: another size or class is another run's.
        "workspace",
    }


def test_run_requests_are_annotations_of_the_group() -> None:
    assert {request.annotation for request in RunRequest} == {
        "dagflow.dev/rerun",
        "dagflow.dev/retry",
        "dagflow.dev/stop",
    }
    assert RunRequest.RERUN.annotation == RERUN_ANNOTATION
    handled = HandledRequests(rerun="1", stop="2")
    assert [handled.token(request) for request in RunRequest] == ["1", None, "2"]


def test_run_history_and_schedule_round_trip_in_the_status() -> None:
    raw = {
        "phase": "Stopped",
        "run": 4,
        "runSpecHash": "0123456789abcdef",
        "lastScheduleTime": "2025-01-02T03:00:00Z",
        "nextScheduleTime": "2025-01-03T03:00:00Z",
        "handledRequests": {"rerun": "1735787045", "stop": "abc"},
        "works": [
            {"name": "process", "phase": "Succeeded", "carriedFromRun": 2},
            {"name": "train", "phase": "Stopped"},
        ],
        "runs": [
            {
                "number": 3,
                "trigger": "Schedule",
                "phase": "Failed",
                "startedAt": "2025-01-02T03:00:01Z",
                "finishedAt": "2025-01-02T03:10:00Z",
            },
            {"number": 4, "trigger": "Retry", "phase": "Stopped", "startedAt": "2025-01-02T04:00:00Z"},
        ],
    }
    status = DAGFlowStatus.model_validate(raw)
    assert status.phase is FlowPhase.STOPPED
    assert status.works[1].phase is WorkPhase.STOPPED
    assert status.works[0].carried_from_run == 2
    assert [run.trigger for run in status.runs] == [RunTrigger.SCHEDULE, RunTrigger.RETRY]
    assert status.handled_requests == HandledRequests(rerun="1735787045", stop="abc")
    dumped = status.to_dict()
    assert dumped["runs"] == raw["runs"]
    assert dumped["lastScheduleTime"] == "2025-01-02T03:00:00Z"
    assert dumped["works"][0]["carriedFromRun"] == 2


def _cached_spec(**fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": [{"name": "a", "container": {"image": "x"}}], **fields})


def test_caching_is_off_unless_asked() -> None:
    spec = _cached_spec()
    settings = spec.cache_of(spec.works[0])
    assert (settings.enabled, settings.version, settings.max_age_seconds, settings.require_digest) == (
        False,
        "",
        168 * 3600,
        False,
    )


def test_a_works_cache_fields_win_over_the_flows() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "cache": {"enabled": True, "version": "v1", "maxAge": "1d"},
            "works": [
                {"name": "a", "container": {"image": "x"}},
                {"name": "b", "container": {"image": "x"}, "cache": {"enabled": False}},
                {"name": "c", "container": {"image": "x"}, "cache": {"maxAge": "30m", "requireDigest": True}},
                {"name": "s", "container": {"image": "x"}, "serve": {"port": 80}},
            ],
        }
    )
    a, b, c, s = (spec.cache_of(work) for work in spec.works)
    assert (a.enabled, a.version, a.max_age_seconds) == (True, "v1", 86400)
    assert not b.enabled
    assert (c.enabled, c.max_age_seconds, c.require_digest) == (True, 1800, True)
    assert not s.enabled  # a serve work follows no flow default


@pytest.mark.parametrize("bad", ["7", "1w", "h", "-1h", "1.5h"])
def test_max_age_is_a_duration(bad: str) -> None:
    with pytest.raises(ValidationError, match=r"maxAge|max_age"):
        _cached_spec(cache={"maxAge": bad})


def test_a_serve_work_may_not_ask_for_caching() -> None:
    with pytest.raises(ValidationError, match="a serve work is never cached"):
        _cached_spec(
            works=[
                {"name": "s", "container": {"image": "x"}, "serve": {"port": 80}, "cache": {"enabled": True}}
            ]
        )
