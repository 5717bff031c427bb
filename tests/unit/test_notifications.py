"""Notifications, the pure part: which are due once, the Job that posts each (the URL only from the
Secret, in the pod), and what its pod's result makes of the status entry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from dagflow.api.models import DAGFlowSpec, FlowPhase, NotifyPhase
from dagflow.controller.notifications import (
    DueNotification,
    build_notification_job,
    due_notifications,
    pending_entry,
    run_event,
    settled_entry,
)
from dagflow.controller.observe import JobObservation, observe_job
from dagflow.controller.runcontrol import begun_status
from dagflow.controller.rundecisions import decide_run
from dagflow.controller.settings import OperatorSettings
from dagflow.rules.validation import validate_flow
from tests.unit.test_planner import FLOW

NOW = "2026-01-01T00:00:00Z"


def hook(*on: str, **fields: Any) -> dict[str, Any]:
    return {
        "on": list(on),
        "webhook": {"urlFrom": {"secretKeyRef": {"name": "team-hook", "key": "url"}}},
        **fields,
    }


def spec(*notify: dict[str, Any], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(
        {"works": [{"name": "train", "container": {"image": "x"}}], "notify": list(notify), **fields}
    )


def test_a_notification_is_due_once_per_run_and_phase() -> None:
    flow_spec = spec(hook("Failed", "Stopped"), hook("Succeeded"), hook("Failed", format="slack"))
    due = due_notifications(flow_spec, 3, FlowPhase.FAILED, [])
    assert due == [DueNotification(0, NotifyPhase.FAILED), DueNotification(2, NotifyPhase.FAILED)]
    recorded = [pending_entry(3, due[0], "job-a")]
    assert due_notifications(flow_spec, 3, FlowPhase.FAILED, recorded) == [due[1]]
    # Recorded for another run: due again in this one.
    assert due_notifications(flow_spec, 4, FlowPhase.FAILED, recorded) == due
    assert due_notifications(flow_spec, 3, FlowPhase.RUNNING, []) == []
    assert due_notifications(flow_spec, 3, FlowPhase.SUCCEEDED, []) == [
        DueNotification(1, NotifyPhase.SUCCEEDED)
    ]


def test_the_job_reads_the_url_from_the_secret_and_runs_as_the_flows_service_account() -> None:
    flow_spec = spec(
        hook("Failed", format="slack"),
        podDefaults={"serviceAccountName": "ml-team", "tolerations": [{"key": "gpu", "operator": "Exists"}]},
    )
    due = DueNotification(0, NotifyPhase.FAILED)
    event = {"flow": FLOW.name, "run": 2, "phase": "Failed", "message": "costs $(HOME) $5"}
    job = build_notification_job(FLOW, flow_spec, 2, due, event, OperatorSettings())
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["DAGFLOW_NOTIFY_URL"] == {
        "name": "DAGFLOW_NOTIFY_URL",
        "valueFrom": {"secretKeyRef": {"name": "team-hook", "key": "url"}},
    }
    assert env["DAGFLOW_NOTIFY_FORMAT"]["value"] == "slack"
    # Kubernetes must not expand what the message says.
    assert json.loads(env["DAGFLOW_NOTIFY_EVENT"]["value"].replace("$$", "$")) == event
    assert "$$(HOME)" in env["DAGFLOW_NOTIFY_EVENT"]["value"]
    assert container["command"] == ["/dagflow-launcher", "notify"]
    assert pod["serviceAccountName"] == "ml-team" and pod["tolerations"] == [
        {"key": "gpu", "operator": "Exists"}
    ]
    assert job["metadata"]["name"] == f"{FLOW.name}-2-notify-0-failed"
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    seen = observe_job(job)
    assert (seen.work, seen.run, seen.notification) == ("notify-0-failed", 2, "0-failed")


def test_the_event_names_the_failed_works_but_not_the_finally_ones() -> None:
    status = {
        "message": "work train failed",
        "startedAt": NOW,
        "works": [
            {"name": "train", "phase": "Failed"},
            {"name": "eval", "phase": "Skipped"},
            {"name": "report", "phase": "Failed", "finally": True},
        ],
    }
    event = run_event(FLOW, 4, FlowPhase.FAILED, status)
    assert event == {
        "namespace": FLOW.namespace,
        "flow": FLOW.name,
        "run": 4,
        "phase": "Failed",
        "failedWorks": ["train"],
        "message": "work train failed",
        "startedAt": NOW,
    }


def ended(outcome: str, message: str | None = None) -> JobObservation:
    return JobObservation(
        name="f-1-notify-0-failed",
        work="notify-0-failed",
        run=1,
        active=0,
        succeeded=1 if outcome == "Succeeded" else 0,
        failed=0 if outcome == "Succeeded" else 1,
        outcome=outcome,
        reason=None if outcome == "Succeeded" else "BackoffLimitExceeded",
        message=message,
        started_at=NOW,
        finished_at="2026-01-01T00:00:05Z",
        deleting=False,
        notification="0-failed",
    )


def test_a_sent_notification_records_the_receivers_answer() -> None:
    entry = pending_entry(1, DueNotification(0, NotifyPhase.FAILED), "f-1-notify-0-failed")
    sent = settled_entry(entry, ended("Succeeded"), '{"sent": true, "status": 200, "attempts": 2}', NOW)
    assert sent == {
        **entry,
        "state": "Sent",
        "httpStatus": 200,
        "attempts": 2,
        "finishedAt": "2026-01-01T00:00:05Z",
    }


def test_a_refused_or_unsent_notification_says_why() -> None:
    entry = pending_entry(1, DueNotification(0, NotifyPhase.FAILED), "f-1-notify-0-failed")
    refused = settled_entry(
        entry,
        ended("Failed"),
        '{"sent": false, "status": 500, "attempts": 5, "error": "HTTP 500: oops"}',
        NOW,
    )
    assert (refused["state"], refused["httpStatus"], refused["message"]) == ("Failed", 500, "HTTP 500: oops")
    gone = settled_entry(entry, ended("Failed", "Job was active longer than specified deadline"), None, NOW)
    assert gone["message"] == "Job was active longer than specified deadline"
    silent = settled_entry(entry, ended("Succeeded"), "not json", NOW)
    assert (silent["state"], silent["message"]) == ("Failed", "its pod left no result")


def test_work_names_of_notifications_are_refused() -> None:
    raw = {"works": [{"name": "notify-0-failed", "container": {"image": "x"}}]}
    assert [problem.path for problem in validate_flow(raw)] == ["spec.works[0].name"]
    fine = {"works": [{"name": "notify-team", "container": {"image": "x"}}], "notify": [hook("Failed")]}
    assert validate_flow(fine) == []
    wrong_phase = {"works": [{"name": "a", "container": {"image": "x"}}], "notify": [hook("Running")]}
    assert [problem.path for problem in validate_flow(wrong_phase)] == ["spec.notify[0].on[0]"]


def test_a_bare_on_that_yaml_read_as_true_is_told_plainly() -> None:
    spec = yaml.safe_load(
        """
works: [{name: a, container: {image: x}}]
notify:
- on: [Failed]
  webhook: {urlFrom: {secretKeyRef: {name: hook, key: url}}}
"""
    )
    assert [(problem.path, problem.message) for problem in validate_flow(spec)] == [
        ("spec.notify[0]", 'the key on was read as the boolean true (YAML 1.1): quote it, "on": [Failed]')
    ]


def test_a_pod_that_never_started_fails_saying_why_it_could_not() -> None:
    entry = {
        **pending_entry(1, DueNotification(0, NotifyPhase.FAILED), "f-1-notify-0-failed"),
        "message": 'its pod cannot start: CreateContainerConfigError: secret "team-hook" not found',
    }
    ended_late = settled_entry(
        entry, ended("Failed", "Job was active longer than specified deadline"), None, NOW
    )
    assert (ended_late["state"], ended_late["message"]) == ("Failed", entry["message"])


def test_the_pod_is_small_pulls_as_the_works_do_and_carries_no_token() -> None:
    flow_spec = spec(hook("Failed"), podDefaults={"imagePullSecrets": [{"name": "mirror"}]})
    job = build_notification_job(
        FLOW, flow_spec, 1, DueNotification(0, NotifyPhase.FAILED), {"flow": FLOW.name}, OperatorSettings()
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "mirror"}]
    assert pod["automountServiceAccountToken"] is False
    assert set(pod["containers"][0]["resources"]) == {"requests", "limits"}


def test_a_notification_still_being_posted_is_carried_into_the_next_run() -> None:
    flow_spec = spec(hook("Failed"))
    posting = pending_entry(1, DueNotification(0, NotifyPhase.FAILED), "f-1-notify-0-failed")
    told = {**pending_entry(1, DueNotification(0, NotifyPhase.STOPPED), "x"), "state": "Sent"}
    previous = {"run": 1, "phase": "Failed", "works": [], "notifications": [posting, told]}
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    decision = decide_run(flow_spec, previous, {"dagflow.dev/rerun": "again"}, moment, generation=1)
    assert decision.new_run is not None
    begun = begun_status(previous, decision, flow_spec, 1, moment, 3)
    assert begun["notifications"] == [posting]
