"""Spec edits while a flow runs: the run that ends up in the status runs that generation's spec,
runs only move forward, nothing is made or announced twice, and runs never overlap."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.flows import create, flow, jobs, status, work
from tests.e2e.recorder import Recorder, recording
from tests.kube import apply, get_json, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster


def set_args(manifest: dict[str, Any], work_name: str, args: list[str], duration: str | None = None) -> None:
    entry = next(entry for entry in manifest["spec"]["works"] if entry["name"] == work_name)
    entry["container"]["args"] = args
    if duration:
        entry["annotations"]["sim.dagflow.dev/duration"] = duration


def wait_until_succeeded(namespace: str, name: str, **expected: int) -> None:
    """Until the flow's status has the `expected` fields (run, observedGeneration) and Succeeded."""

    def reached() -> bool:
        current = status(namespace, name)
        return current.get("phase") == "Succeeded" and all(current.get(k) == v for k, v in expected.items())

    wait_for(reached, timeout=120, what=f"{name} to succeed with {expected}")


def flow_events(namespace: str, name: str) -> Counter[tuple[str, str]]:
    """(reason, work) of every Event posted on the flow; a summary Event counts for each work it names."""
    uid = get_json("dagflow", name, namespace=namespace)["metadata"]["uid"]
    listing = get_json("events", "--field-selector", f"involvedObject.uid={uid}", namespace=namespace)
    counted: Counter[tuple[str, str]] = Counter()
    for event in listing["items"]:
        message: str = event["message"]
        if message.startswith("Work "):
            counted[(event["reason"], message.split()[1])] += event.get("count") or 1
        else:  # "N works started: a, b and 3 more"
            names = message.split(": ", 1)[1].split(" and ")[0].split(", ")
            for work_name in names:
                counted[(event["reason"], work_name)] += event.get("count") or 1
    return counted


def assert_the_last_run_runs_the_last_spec(namespace: str, name: str, args: list[str]) -> dict[str, Any]:
    flow_object = get_json("dagflow", name, namespace=namespace)
    generation = flow_object["metadata"]["generation"]
    final = flow_object["status"]
    assert final["observedGeneration"] == generation, final
    for job in jobs(namespace):
        if job["metadata"]["labels"]["dagflow.dev/run"] != str(final["run"]):
            continue
        container = job["spec"]["template"]["spec"]["containers"][0]
        if job["metadata"]["annotations"]["dagflow.dev/work-name"] == "a":
            assert container["args"] == args, job["metadata"]["name"]
        assert job["metadata"]["annotations"].get("dagflow.dev/generation") == str(generation)
    return final


def assert_history_moves_forward(recorder: Recorder, name: str) -> None:
    statuses = [entry for entry in recorder.flow_statuses(name) if entry.get("run")]
    runs = [entry["run"] for entry in statuses]
    generations = [entry["observedGeneration"] for entry in statuses]
    assert runs == sorted(runs), f"the run went back: {runs}"
    assert generations == sorted(generations), f"observedGeneration went back: {generations}"
    made = Counter(recorder.jobs_added())
    assert all(count == 1 for count in made.values()), f"Jobs made more than once: {made}"


def assert_each_move_announced_once(recorder: Recorder, namespace: str, name: str) -> None:
    def announced() -> Counter[tuple[str, str]]:
        events = flow_events(namespace, name)
        return events if events[("WorkSucceeded", "b")] else Counter()

    events = wait_for(announced, timeout=30, what="the final Events")
    # A work starts once per Job made for it. Moves are announced with the status that shows them:
    # a start that a held-back status never showed goes unannounced, but none is announced twice.
    made = Counter(job.split("-")[-1] for job in recorder.jobs_added())
    for work_name in ("a", "b"):
        assert events[("WorkStarted", work_name)] <= made[work_name], (work_name, events, made)
        assert events[("WorkSucceeded", work_name)] == 1, (work_name, events)


def test_three_edits_within_a_second_run_the_last_spec(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("quick", [work("a", duration="60s"), work("b", "a")])
    with recording(namespace) as recorder:
        create(manifest, namespace)
        wait_for(lambda: jobs(namespace), timeout=30, what="the first Job")
        for edit in (1, 2, 3):
            set_args(manifest, "a", [f"edit-{edit}"], duration="1s" if edit == 3 else None)
            apply(manifest, namespace=namespace)
        wait_until_succeeded(namespace, "quick", observedGeneration=4)
    assert_the_last_run_runs_the_last_spec(namespace, "quick", ["edit-3"])
    assert_history_moves_forward(recorder, "quick")
    assert_each_move_announced_once(recorder, namespace, "quick")


@pytest.fixture
def holding_operator(tmp_path: Path, without_shared_operator: None) -> Iterator[OperatorProcess]:
    """An operator that holds a flow's status back for 12 s between two patches (3 works), as it
    does for a 2,400-work flow by default."""
    process = OperatorProcess(tmp_path, env={"DAGFLOW_STATUS_INTERVAL_PER_1000_WORKS": "4000"})
    process.start()
    yield process
    process.stop()


def held_flow() -> dict[str, Any]:
    return flow("held", [work("a", duration="60s"), work("b", "a"), work("c")])


def wait_for_run_2_jobs(namespace: str) -> None:
    def made() -> bool:
        runs = {job["metadata"]["labels"]["dagflow.dev/run"] for job in jobs(namespace)}
        return "2" in runs

    wait_for(made, timeout=30, what="the Jobs of run 2")


@pytest.mark.parametrize("killed", [False, True], ids=["status-held-back", "operator-killed"])
def test_an_edit_while_a_run_starts_runs_the_newest_spec(
    namespace: str, holding_operator: OperatorProcess, killed: bool
) -> None:
    """Run 2 starts, its status held back; generation 3 comes; and (`killed`) the operator is killed
    at once, with no time to write down what it made of it."""
    manifest = held_flow()
    with recording(namespace) as recorder:
        create(manifest, namespace)
        wait_for(lambda: status(namespace, "held").get("run") == 1, timeout=30, what="run 1 in the status")
        set_args(manifest, "a", ["edit-1"])
        apply(manifest, namespace=namespace)
        wait_for_run_2_jobs(namespace)
        set_args(manifest, "a", ["edit-2"], duration="1s")
        apply(manifest, namespace=namespace)
        if killed:
            holding_operator.kill()
            holding_operator.start()
        wait_until_succeeded(namespace, "held", observedGeneration=3)
    final = assert_the_last_run_runs_the_last_spec(namespace, "held", ["edit-2"])
    assert final["run"] == 3
    assert_history_moves_forward(recorder, "held")
    assert_each_move_announced_once(recorder, namespace, "held")


def test_a_new_run_waits_for_the_old_runs_pods(namespace: str, running_operator: OperatorProcess) -> None:
    works = [work(f"w{index}", duration="300s", gpu=4) for index in range(4)]
    manifest = flow("drain", works, parallelism=2)
    with recording(namespace) as recorder:
        create(manifest, namespace)

        def two_running() -> bool:
            return (
                sum(1 for entry in status(namespace, "drain").get("works", []) if entry["phase"] == "Running")
                == 2
            )

        wait_for(two_running, timeout=30, what="two works running")
        for entry in manifest["spec"]["works"]:
            entry["annotations"]["sim.dagflow.dev/duration"] = "1s"
        apply(manifest, namespace=namespace)
        wait_until_succeeded(namespace, "drain", run=2)
    lives = recorder.pod_lifetimes()
    moments = sorted({first for first, _, _ in lives.values()})
    for moment in moments:
        alive = [
            body
            for first, ended, body in lives.values()
            if first <= moment and (ended is None or ended > moment)
        ]
        assert len(alive) <= 2, f"{len(alive)} pods at once with parallelism 2"
        gpus = sum(
            int(body["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) for body in alive
        )
        assert gpus <= 8, f"{gpus} GPUs at once"
    for index in range(4):
        of_work = [
            (body["metadata"]["labels"]["dagflow.dev/run"], first, ended)
            for first, ended, body in lives.values()
            if body["metadata"]["labels"]["dagflow.dev/work"] == f"w{index}"
        ]
        old = [(first, ended) for run, first, ended in of_work if run == "1"]
        new = [first for run, first, _ in of_work if run == "2"]
        assert new, of_work
        for _, ended in old:
            assert ended is not None and ended <= min(new), (
                f"w{index}: run 2's pod started before run 1's was gone"
            )
