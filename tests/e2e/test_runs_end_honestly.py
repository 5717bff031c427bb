"""How a run ends, told as it is: FailFast stops what still runs, a stop acts on a failed run that has
works running, and serve works keep being watched through rollouts, stops and stuck rollouts, with
the Serving condition naming the run whose pods serve."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, failing, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import kubectl, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster


def job_names(namespace: str) -> set[str]:
    return {job["metadata"]["name"] for job in jobs(namespace)}


def serving(namespace: str, name: str) -> dict[str, Any]:
    conditions = status(namespace, name).get("conditions") or []
    return next(condition for condition in conditions if condition["type"] == "Serving")


def wait_for_serving(
    namespace: str, name: str, state: str, words: str, timeout: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        condition = serving(namespace, name)
        return condition if condition["status"] == state and words in condition["message"] else None

    found: dict[str, Any] = wait_for(
        reached, timeout=timeout, what=f"the Serving condition of {name} to be {state} with {words!r}"
    )
    return found


def test_fail_fast_stops_the_works_still_running_when_one_fails(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("fast", [work("broken", annotations=failing()), work("long", duration="300s")]), namespace)
    final = wait_for_phase(namespace, "fast", "Failed")
    long = works_by_name(final)["long"]
    assert long["phase"] == "Stopped"
    assert long["message"] == "stopped: broken failed and failurePolicy is FailFast"
    # Its Job (and so its pod, and its GPUs) is gone: a failed run holds nothing.
    wait_for(lambda: "fast-1-long" not in job_names(namespace), what="the Job of long to be deleted")
    assert works_by_name(status(namespace, "fast"))["long"]["phase"] == "Stopped"


def test_a_stop_stops_a_failed_run_whose_works_still_run(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [
        work("broken", annotations=failing()),
        work("serve", "broken", serve={"port": 8080}),
        work("long", duration="300s"),
    ]
    create(flow("lingering", works, failurePolicy="Continue"), namespace)
    failed = wait_for_phase(namespace, "lingering", "Failed")
    assert works_by_name(failed)["long"]["phase"] == "Running"
    request(namespace, "lingering", "stop", "now")
    stopped = wait_for_run(namespace, "lingering", 1, "Stopped")
    assert works_by_name(stopped)["long"]["phase"] == "Stopped"
    wait_for(lambda: "lingering-1-long" not in job_names(namespace), what="the Job of long to be deleted")


def test_after_a_stop_the_serve_work_is_still_watched(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("train", duration="1s"), work("serve", "train", serve={"port": 8080})]
    create(flow("kept", works), namespace)
    wait_for_phase(namespace, "kept", "Serving")
    # Run 2 retrains slowly and is stopped: run 1's model goes on serving, and the status says so.
    patch = json.dumps({"spec": {"works": [work("train", duration="300s"), works[1]]}})
    kubectl("patch", "dagflow", "kept", "--type=merge", "-p", patch, namespace=namespace)
    wait_for_run(namespace, "kept", 2, "Running")
    request(namespace, "kept", "stop", "enough")
    wait_for_run(namespace, "kept", 2, "Stopped")
    wait_for_serving(namespace, "kept", "True", "run 1's model serves")

    # Its Service deleted: brought back, as while a run is under way.
    kubectl("delete", "service", "kept-serve", namespace=namespace)
    wait_for(
        lambda: kubectl("get", "service", "kept-serve", namespace=namespace, check=False).returncode == 0,
        what="the Service to come back",
    )
    # Its Deployment deleted by someone: the condition follows (a stopped run makes nothing anew).
    kubectl("delete", "deployment", "kept-serve", namespace=namespace)
    wait_for_serving(namespace, "kept", "False", "no available Deployment for serve")
    # A new run brings the model back, and the condition with it.
    request(namespace, "kept", "rerun", "again")
    wait_for_run(namespace, "kept", 3, "Running")


def test_while_a_rollout_is_stuck_the_old_pods_serve_and_past_its_deadline_the_serve_work_fails(
    namespace: str, running_operator: OperatorProcess
) -> None:
    serve = work("serve", "train", serve={"port": 8080, "progressDeadlineSeconds": 15})
    create(flow("stuck", [work("train"), serve]), namespace)
    wait_for_phase(namespace, "stuck", "Serving")
    # Run 2's pods never become ready: its rollout cannot finish.
    unready = {**serve, "annotations": {"sim.dagflow.dev/ready": "false"}}
    patch = json.dumps({"spec": {"works": [work("train"), unready]}})
    kubectl("patch", "dagflow", "stuck", "--type=merge", "-p", patch, namespace=namespace)
    wait_for_run(namespace, "stuck", 2, "Running")
    # Meanwhile run 1's pod serves, and the condition names it.
    wait_for(
        lambda: works_by_name(status(namespace, "stuck"))["train"]["phase"] == "Succeeded",
        what="run 2's training to succeed",
    )
    assert serving(namespace, "stuck")["status"] == "True"
    assert "run 1's model serves" in serving(namespace, "stuck")["message"]
    final = wait_for_run(namespace, "stuck", 2, "Failed", timeout=120)
    message = works_by_name(final)["serve"]["message"]
    assert message.startswith("its rollout did not finish: ") and "ProgressDeadlineExceeded" in message
    wait_for_serving(namespace, "stuck", "True", "run 1's model serves")
