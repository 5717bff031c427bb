"""A work succeeds when its pod does: its dependents start then, without waiting for the Job
controller to mark its Job complete, unless the Job could still fail (a deadline).

The Job controller (in kube-controller-manager) is paused while the pods move on (kwok plays them),
so what the operator does before the Job controller acts is seen for certain, not raced."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.flows import create, flow, jobs, pods_of_work, status, wait_for_phase, work, works_by_name
from tests.kube import get_json, paused, wait_for
from tests.operator_process import OperatorProcess

pytestmark = [pytest.mark.local_cluster, pytest.mark.disruptive]


def pod_phase(namespace: str, work_name: str) -> str | None:
    pods = pods_of_work(namespace, work_name)
    return str(pods[0]["status"].get("phase")) if pods else None


def job_names(namespace: str) -> set[str]:
    return {job["metadata"]["name"] for job in jobs(namespace)}


def job_conditions(namespace: str, name: str) -> set[str]:
    job: dict[str, Any] = get_json("job", name, namespace=namespace)
    return {c["type"] for c in job["status"].get("conditions") or [] if c.get("status") == "True"}


def test_a_dependent_starts_when_its_dependencys_pod_succeeded_before_the_job_is_complete(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("quick", [work("a", duration="3s"), work("b", "a")]), namespace)
    wait_for(lambda: pod_phase(namespace, "a") == "Running", what="a's pod to run")
    with paused("kube-controller-manager"):
        wait_for(lambda: "quick-1-b" in job_names(namespace), timeout=30, what="b's Job")
        # The Job controller has not counted the success yet: the operator acted on the pod.
        assert "Complete" not in job_conditions(namespace, "quick-1-a")
        a = works_by_name(status(namespace, "quick"))["a"]
        assert a["phase"] == "Succeeded" and a["finishedAt"]
    final = wait_for_phase(namespace, "quick", "Succeeded")
    assert works_by_name(final)["a"]["finishedAt"] == a["finishedAt"], "its success is recorded once"


def test_a_work_whose_job_may_still_fail_waits_for_the_job_controller(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # A deadline the Job controller may find passed before it counts the pod's success: then the
    # Job fails although its pod succeeded, and its dependent must never have started.
    create(flow("deadline", [work("a", duration="2s", timeoutSeconds=4), work("b", "a")]), namespace)
    wait_for(lambda: pod_phase(namespace, "a") == "Running", what="a's pod to run")
    with paused("kube-controller-manager"):
        wait_for(lambda: pod_phase(namespace, "a") == "Succeeded", timeout=30, what="a's pod to succeed")
        time.sleep(5)  # past the deadline, and long enough for the operator to have acted on the pod
        assert "deadline-1-b" not in job_names(namespace)
        assert works_by_name(status(namespace, "deadline"))["a"]["phase"] == "Running"
    final = wait_for_phase(namespace, "deadline")
    outcome = job_conditions(namespace, "deadline-1-a")
    # Whatever the Job controller decided, the dependent followed the Job, not the pod.
    if "Complete" in outcome:
        assert final["phase"] == "Succeeded"
    else:
        assert "Failed" in outcome and final["phase"] == "Failed"
        assert "deadline-1-b" not in job_names(namespace)
