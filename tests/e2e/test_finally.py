"""Finally works on the local cluster: they run after Succeeded, Failed and Stopped runs, told the
outcome; a failing one is shown without failing the run; a stop while they run ends the run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, failing, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

REPORT_ARGS = [
    "phase=$(run.phase)",
    "failed=$(run.failedWorks)",
    "run=$(run)",
    "model=$(works.train.outputs.model)",
]


def report(*depends_on: str, **fields: Any) -> dict[str, Any]:
    entry = work("report", *depends_on, **fields)
    entry["container"] = {**entry["container"], "command": ["report"], "args": REPORT_ARGS}
    return entry


def finally_flow(
    name: str, works: list[dict[str, Any]], finally_works: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    manifest = flow(name, works, **spec)
    manifest["spec"]["finally"] = finally_works
    return manifest


def job_args(namespace: str, work_name: str) -> list[str]:
    found = [
        job for job in jobs(namespace) if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
    ]
    assert len(found) == 1, f"one Job of {work_name}, found {len(found)}"
    args: list[str] = found[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def wait_until_running(namespace: str, name: str, work_name: str) -> None:
    wait_for(
        lambda: works_by_name(status(namespace, name)).get(work_name, {}).get("phase") == "Running",
        timeout=60,
        what=f"{work_name} of {name} to run",
    )


def stop(namespace: str, name: str, token: str) -> None:
    kubectl("annotate", "dagflow", name, f"dagflow.dev/stop={token}", "--overwrite", namespace=namespace)


def flow_event_reasons(namespace: str, name: str) -> list[tuple[str, str]]:
    uid = get_json("dagflow", name, namespace=namespace)["metadata"]["uid"]
    listing = get_json("events", "--field-selector", f"involvedObject.uid={uid}", namespace=namespace)
    return [(event["reason"], event["message"]) for event in listing["items"]]


def trained(**fields: Any) -> dict[str, Any]:
    """A work reporting the output `model`."""
    annotations = {
        "sim.dagflow.dev/termination-message": json.dumps({"model": "m-7"}),
        **fields.pop("annotations", {}),
    }
    return work("train", outputs=[{"name": "model"}], annotations=annotations, **fields)


@pytest.mark.local_cluster
def test_finally_works_run_after_a_succeeded_run_told_its_outcome_and_outputs(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(finally_flow("fin-ok", [trained()], [report(), work("cleanup", "report")]), namespace)
    final = wait_for_phase(namespace, "fin-ok", "Succeeded", "Failed")
    by_name = works_by_name(final)
    assert final["phase"] == "Succeeded" and final["outcome"] == "Succeeded"
    assert {name: work["phase"] for name, work in by_name.items()} == dict.fromkeys(
        ("train", "report", "cleanup"), "Succeeded"
    )
    assert by_name["report"]["finally"] is True and "finally" not in by_name["train"]
    assert job_args(namespace, "report") == ["phase=Succeeded", "failed=[]", "run=1", "model=m-7"]
    # The finally works start only once the works have ended.
    assert by_name["report"]["startedAt"] >= by_name["train"]["finishedAt"]
    assert final["progress"] == "3/3"


@pytest.mark.local_cluster
def test_finally_works_run_after_a_failed_run_and_name_the_failed_works(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("process"), trained(annotations=failing()), work("publish", "train")]
    create(finally_flow("fin-failed", works, [report()]), namespace)
    final = wait_for_phase(namespace, "fin-failed", "Succeeded", "Failed")
    by_name = works_by_name(final)
    assert final["phase"] == "Failed" and final["outcome"] == "Failed"
    assert by_name["publish"]["phase"] == "Skipped"
    assert by_name["report"]["phase"] == "Succeeded"
    # A work that did not succeed has no outputs: the reference is empty, the cleanup still runs.
    assert job_args(namespace, "report") == ["phase=Failed", 'failed=["train"]', "run=1", "model="]


@pytest.mark.local_cluster
def test_a_failing_finally_work_is_shown_and_fails_no_run(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(finally_flow("fin-broken", [work("train")], [work("notify", annotations=failing())]), namespace)
    final = wait_for_phase(namespace, "fin-broken", "Succeeded", "Failed")
    assert final["phase"] == "Succeeded"
    assert works_by_name(final)["notify"]["phase"] == "Failed"
    assert final["message"].startswith("finally work notify failed")
    wait_for(
        lambda: any(reason == "FinallyFailed" for reason, _ in flow_event_reasons(namespace, "fin-broken")),
        timeout=30,
        what="a FinallyFailed Event",
    )
    row = kubectl("get", "dagflow", "fin-broken", "--no-headers", namespace=namespace).stdout
    assert "Succeeded" in row


@pytest.mark.local_cluster
def test_a_stop_runs_the_finally_works_as_cleanup_and_the_run_ends_stopped(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("process"), trained(duration="120s"), work("publish", "train")]
    create(finally_flow("fin-stop", works, [report(duration="3s")]), namespace)
    wait_until_running(namespace, "fin-stop", "train")
    stop(namespace, "fin-stop", "s1")
    # One stop is enough: the works stop, the finally works run, then the run ends Stopped.
    final = wait_for_phase(namespace, "fin-stop", "Stopped", "Succeeded", "Failed", timeout=90)
    by_name = works_by_name(final)
    assert final["phase"] == "Stopped" and final["outcome"] == "Stopped"
    assert [by_name[name]["phase"] for name in ("process", "train", "publish")] == [
        "Succeeded",
        "Stopped",
        "Stopped",
    ]
    assert by_name["report"]["phase"] == "Succeeded"
    assert job_args(namespace, "report")[:2] == ["phase=Stopped", "failed=[]"]
    assert "fin-stop-1-train" not in {job["metadata"]["name"] for job in jobs(namespace)}


@pytest.mark.local_cluster
def test_a_stop_while_the_finally_works_run_stops_them_and_ends_the_run(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(finally_flow("fin-stop-late", [trained()], [report(duration="120s")]), namespace)
    wait_until_running(namespace, "fin-stop-late", "report")
    stop(namespace, "fin-stop-late", "s1")
    final = wait_for_phase(namespace, "fin-stop-late", "Stopped", "Succeeded", "Failed", timeout=60)
    assert final["phase"] == "Stopped" and final["outcome"] == "Succeeded"
    assert works_by_name(final)["report"]["phase"] == "Stopped"
    wait_for(
        lambda: "fin-stop-late-1-report" not in {job["metadata"]["name"] for job in jobs(namespace)},
        timeout=60,
        what="the finally work's Job to go",
    )


@pytest.mark.local_cluster
def test_the_runs_outcome_read_outside_a_finally_work_is_refused_at_apply(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = work("train")
    train["container"]["args"] = ["$(run.phase)"]
    refused = apply(flow("fin-bad", [train]), namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "$(run.phase) is known in finally works only" in refused.stderr, refused.stderr
    serving_finally = finally_flow("fin-bad", [work("train")], [work("api", serve={"port": 8080})])
    refused = apply(serving_finally, namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "a serve work cannot be one" in refused.stderr, refused.stderr
