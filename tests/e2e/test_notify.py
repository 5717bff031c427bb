"""Notifications on the local cluster's simulated pods: the Job that posts, what its result makes of
the status, and the URL kept out of everything the operator writes. (A real receiver is posted to
on the real node: tests/real.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, failing, flow, jobs, wait_for_phase, work
from tests.kube import apply, get_json, wait_for
from tests.operator_process import OperatorProcess

URL = "http://receiver.example:8080/hooks/team?token=s3cret"
RESULT_ANNOTATION = "sim.dagflow.dev/termination-message"


def hook_secret(namespace: str) -> None:
    apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "team-hook"}, "stringData": {"url": URL}},
        namespace=namespace,
    )


def notified(
    name: str, works: list[dict[str, Any]], result: dict[str, Any], **notification: Any
) -> dict[str, Any]:
    manifest = flow(name, works)
    manifest["spec"]["notify"] = [
        {"webhook": {"urlFrom": {"secretKeyRef": {"name": "team-hook", "key": "url"}}}, **notification}
    ]
    # The simulated pod of the notification leaves this as the launcher's result.
    manifest["spec"]["podDefaults"] = {"annotations": {RESULT_ANNOTATION: json.dumps(result)}}
    return manifest


def notifications(namespace: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (get_json("dagflow", name, namespace=namespace).get("status") or {}).get(
        "notifications"
    ) or []
    return found


def settled(namespace: str, name: str, count: int) -> list[dict[str, Any]]:
    def ended() -> list[dict[str, Any]] | None:
        found = notifications(namespace, name)
        return found if len(found) == count and all(entry["state"] != "Pending" for entry in found) else None

    result: list[dict[str, Any]] = wait_for(
        ended, timeout=60, interval=0.5, what=f"{count} notifications of {name}"
    )
    return result


@pytest.mark.local_cluster
def test_a_failed_run_is_notified_once_through_a_pod_that_reads_the_url_from_the_secret(
    namespace: str, running_operator: OperatorProcess
) -> None:
    hook_secret(namespace)
    sent = {"sent": True, "status": 200, "attempts": 1}
    create(
        notified("told", [work("train", annotations=failing())], sent, on=["Failed"], format="slack"),
        namespace,
    )
    wait_for_phase(namespace, "told", "Failed")
    [entry] = settled(namespace, "told", 1)
    assert {key: entry[key] for key in ("index", "on", "run", "state", "httpStatus", "attempts")} == {
        "index": 0,
        "on": "Failed",
        "run": 1,
        "state": "Sent",
        "httpStatus": 200,
        "attempts": 1,
    }
    job = next(job for job in jobs(namespace) if job["metadata"]["name"] == entry["job"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["DAGFLOW_NOTIFY_URL"]["valueFrom"] == {"secretKeyRef": {"name": "team-hook", "key": "url"}}
    assert env["DAGFLOW_NOTIFY_FORMAT"]["value"] == "slack"
    event = json.loads(env["DAGFLOW_NOTIFY_EVENT"]["value"].replace("$$", "$"))
    assert (event["flow"], event["run"], event["phase"], event["failedWorks"]) == (
        "told",
        1,
        "Failed",
        ["train"],
    )
    # The URL is nowhere the operator writes: not in the Job, not in the flow.
    assert URL not in json.dumps(job) and "s3cret" not in json.dumps(
        get_json("dagflow", "told", namespace=namespace)
    )
    reasons = [
        event["reason"]
        for event in get_json("events", "--field-selector", "involvedObject.name=told", namespace=namespace)[
            "items"
        ]
    ]
    assert "NotificationSent" in reasons
    # Told once: the passes after it make no second Job.
    assert (
        sum(1 for job in jobs(namespace) if job["metadata"].get("labels", {}).get("dagflow.dev/notification"))
        == 1
    )


@pytest.mark.local_cluster
def test_an_unsent_notification_is_failed_with_the_receivers_answer(
    namespace: str, running_operator: OperatorProcess
) -> None:
    hook_secret(namespace)
    refused = {"sent": False, "status": 500, "attempts": 5, "error": "HTTP 500 after 5 attempts: busy"}
    create(notified("unheard", [work("train")], refused, on=["Succeeded", "Failed"]), namespace)
    wait_for_phase(namespace, "unheard", "Succeeded")
    [entry] = settled(namespace, "unheard", 1)
    assert (entry["on"], entry["state"], entry["httpStatus"]) == ("Succeeded", "Failed", 500)
    assert entry["message"] == "HTTP 500 after 5 attempts: busy"
    # The run's phase does not depend on its notification.
    assert (get_json("dagflow", "unheard", namespace=namespace)["status"])["phase"] == "Succeeded"
