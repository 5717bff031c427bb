"""Runs under control: rerun, retry, suspend, stop and schedules, on the local cluster."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.flows import (
    create,
    failing,
    flow,
    jobs,
    status,
    wait_for_phase,
    work,
    works_by_name,
)
from tests.kube import apply, get_json, kubectl, table_row, wait_for
from tests.operator_process import OperatorProcess


def request(namespace: str, name: str, kind: str, token: str) -> None:
    """Ask for a run (rerun, retry) or a stop, the way a user does."""
    kubectl("annotate", "dagflow", name, f"dagflow.dev/{kind}={token}", "--overwrite", namespace=namespace)


def suspend(namespace: str, name: str, suspended: bool) -> None:
    patch = json.dumps({"spec": {"suspend": suspended}})
    kubectl("patch", "dagflow", name, "--type=merge", "-p", patch, namespace=namespace)


def jobs_of_run(namespace: str, run: int) -> list[str]:
    return sorted(
        job["metadata"]["annotations"]["dagflow.dev/work-name"]
        for job in jobs(namespace)
        if job["metadata"]["labels"]["dagflow.dev/run"] == str(run)
    )


def triggers(current: dict[str, Any]) -> list[tuple[int, str]]:
    return [(summary["number"], summary["trigger"]) for summary in current.get("runs", [])]


def wait_for_run(namespace: str, name: str, run: int, *phases: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until run `run` of the flow is in one of `phases`; return the status."""

    def reached() -> dict[str, Any] | None:
        current = status(namespace, name)
        return current if current.get("run") == run and current.get("phase") in phases else None

    result: dict[str, Any] = wait_for(
        reached, timeout=timeout, interval=0.5, what=f"run {run} of {name} to be {'/'.join(phases)}"
    )
    return result


@pytest.mark.local_cluster
def test_a_rerun_starts_exactly_one_run_even_when_applied_twice(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("again", [work("process"), work("train", "process")]), namespace)
    wait_for_run(namespace, "again", 1, "Succeeded")
    request(namespace, "again", "rerun", "first")
    request(namespace, "again", "rerun", "first")
    final = wait_for_run(namespace, "again", 2, "Succeeded")
    time.sleep(3)  # time enough for a second run, were one to start
    assert status(namespace, "again")["run"] == 2
    assert triggers(final) == [(1, "Created"), (2, "Rerun")]
    assert final["handledRequests"] == {"rerun": "first"}
    assert jobs_of_run(namespace, 1) == jobs_of_run(namespace, 2) == ["process", "train"]


@pytest.mark.local_cluster
def test_a_retry_reruns_only_the_failed_work_and_its_skipped_dependents(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [
        work("process"),
        work("train-a", "process", annotations=failing()),
        work("train-b", "process"),
        work("report", "train-a"),
    ]
    create(flow("mend", works, failurePolicy="Continue"), namespace)
    first = wait_for_run(namespace, "mend", 1, "Failed")
    assert works_by_name(first)["report"]["phase"] == "Skipped"
    request(namespace, "mend", "retry", "t1")
    request(namespace, "mend", "retry", "t1")
    retried = wait_for_run(namespace, "mend", 2, "Failed")
    time.sleep(3)
    assert status(namespace, "mend")["run"] == 2
    assert triggers(retried) == [(1, "Created"), (2, "Retry")]
    by_name = works_by_name(retried)
    assert by_name["process"]["carriedFromRun"] == 1
    assert by_name["process"]["job"] == "mend-1-process"
    assert by_name["train-b"]["carriedFromRun"] == 1
    assert "carriedFromRun" not in by_name["train-a"]
    assert by_name["train-a"]["job"] == "mend-2-train-a"
    # The failure is in the work itself, so it fails again, and its dependent is skipped again.
    assert by_name["report"]["phase"] == "Skipped"
    assert jobs_of_run(namespace, 2) == ["train-a"]
    # The carried Jobs stay: the status points at them.
    assert jobs_of_run(namespace, 1) == ["process", "train-a", "train-b"]


@pytest.mark.local_cluster
def test_a_retry_after_a_passing_fault_finishes_the_flow_and_runs_the_skipped_dependents(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [
        work("process"),
        work("train", "process", annotations=failing(in_run=1)),
        work("report", "train"),
        work("publish", "report"),
    ]
    create(flow("mended", works), namespace)
    first = wait_for_run(namespace, "mended", 1, "Failed")
    assert [works_by_name(first)[name]["phase"] for name in ("report", "publish")] == ["Skipped"] * 2
    request(namespace, "mended", "retry", "after-fix")
    retried = wait_for_run(namespace, "mended", 2, "Succeeded")
    by_name = works_by_name(retried)
    assert {name: by_name[name]["phase"] for name in by_name} == dict.fromkeys(
        ("process", "train", "report", "publish"), "Succeeded"
    )
    assert by_name["process"]["carriedFromRun"] == 1
    assert [name for name in by_name if "carriedFromRun" in by_name[name]] == ["process"]
    assert jobs_of_run(namespace, 2) == ["publish", "report", "train"]
    assert retried["runs"][-1]["phase"] == "Succeeded" and retried["runs"][0]["phase"] == "Failed"


@pytest.mark.local_cluster
def test_suspend_holds_a_flow_mid_way_and_resume_finishes_it(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("hold", [work("first", duration="4s"), work("second", "first")]), namespace)
    wait_for(
        lambda: works_by_name(status(namespace, "hold")).get("first", {}).get("phase") == "Running",
        timeout=60,
        what="first to run",
    )
    suspend(namespace, "hold", True)

    def first_done() -> dict[str, Any] | None:
        current = status(namespace, "hold")
        return current if works_by_name(current)["first"]["phase"] == "Succeeded" else None

    wait_for(first_done, timeout=60, what="first to finish while suspended")
    time.sleep(3)
    held = status(namespace, "hold")
    assert works_by_name(held)["second"]["phase"] == "Pending"
    assert "suspended" in works_by_name(held)["second"]["message"]
    assert held["phase"] == "Running"
    assert jobs_of_run(namespace, 1) == ["first"]

    suspend(namespace, "hold", False)
    final = wait_for_phase(namespace, "hold", timeout=60)
    assert final["phase"] == "Succeeded"
    assert final["run"] == 1
    assert triggers(final) == [(1, "Created")]


def test_stop_ends_a_running_flow_stopped_with_no_job_left_running(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("long-a", duration="120s"), work("long-b", duration="120s"), work("after", "long-a")]
    create(flow("halt", works), namespace)
    wait_for(
        lambda: len(jobs_of_run(namespace, 1)) == 2 and status(namespace, "halt").get("phase") == "Running",
        timeout=60,
        what="both long works to run",
    )
    request(namespace, "halt", "stop", "s1")
    stopped = wait_for_run(namespace, "halt", 1, "Stopped", timeout=60)
    assert {entry["phase"] for entry in stopped["works"]} == {"Stopped"}
    assert stopped["finishedAt"]
    assert triggers(stopped) == [(1, "Created")]
    assert stopped["runs"][0]["phase"] == "Stopped"
    wait_for(lambda: not jobs(namespace), timeout=60, what="the stopped run's Jobs to be gone")
    time.sleep(3)
    assert status(namespace, "halt")["phase"] == "Stopped", "a stopped run is not planned again"
    assert not jobs(namespace)


@pytest.mark.local_cluster
def test_a_scheduled_flow_runs_on_its_ticks_keeps_its_history_and_a_failed_run_leaves_the_model_serving(
    namespace: str, running_operator: OperatorProcess
) -> None:
    """The slow test: three runs over two schedule ticks (two to three minutes)."""
    works = [
        work("train", duration="1s", timeoutSeconds=5),
        work("serve", "train", serve={"port": 8080}),
    ]
    create(flow("nightly", works, schedule="* * * * *", historyRuns=2), namespace)
    first = wait_for_run(namespace, "nightly", 1, "Serving", timeout=60)
    assert first["nextScheduleTime"]
    row = table_row(kubectl("get", "dagflows", namespace=namespace).stdout, "nightly")
    assert (row["SCHEDULE"], row["RUN"], row["PHASE"]) == ("* * * * *", "1", "Serving"), row

    second = wait_for_run(namespace, "nightly", 2, "Serving", timeout=150)
    assert triggers(second)[-1] == (2, "Schedule")
    assert second["lastScheduleTime"]
    deployment = get_json("deployment", "nightly-serve", namespace=namespace)
    assert deployment["metadata"]["labels"]["dagflow.dev/run"] == "2"

    # No pod may start from now on: the next run's training times out, failing that run.
    apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        },
        namespace,
    )
    wait_for(
        lambda: (
            "pods"
            in (
                (get_json("resourcequota", "no-pods", namespace=namespace).get("status") or {}).get("used")
                or {}
            )
        ),
        timeout=30,
        what="the quota to be counted",
    )
    third = wait_for_run(namespace, "nightly", 3, "Failed", timeout=150)
    assert triggers(third) == [(2, "Schedule"), (3, "Schedule")], "history keeps two runs"
    ready = next(c for c in third["conditions"] if c["type"] == "Ready")
    serving = next(c for c in third["conditions"] if c["type"] == "Serving")
    assert ready["status"] == "False"
    assert serving["status"] == "True"
    assert "run 2's model serves" in serving["message"], serving
    after = get_json("deployment", "nightly-serve", namespace=namespace)
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"], (
        "the Deployment was rolled"
    )
    assert after["metadata"]["labels"]["dagflow.dev/run"] == "2"
    assert (after.get("status") or {}).get("availableReplicas") == 1
    # Run 1's finished Job is beyond the kept history.
    wait_for(lambda: jobs_of_run(namespace, 1) == [], timeout=30, what="run 1's Job to be deleted")
