"""Matrix works on the local cluster: one Indexed Job per matrix work and run, its values in a
ConfigMap the pods' launcher reads, dependents waiting for every instance.

Simulated pods run nothing, so the launcher itself is not started here (tests/unit/test_launcher.py
runs it, tests/real runs it in a real pod); these tests check what the cluster is asked to run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, failing, flow, jobs, wait_for_phase, work, works_by_name
from tests.e2e.test_data import reporting
from tests.kube import get_json
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster


def matrix_work(name: str, *depends_on: str, matrix: dict[str, Any], **fields: Any) -> dict[str, Any]:
    entry = work(name, *depends_on, **fields)
    entry["matrix"] = matrix
    entry["container"]["command"] = ["python", "-m", "train", "--model", "$(matrix.model)"]
    return entry


def job_of(namespace: str, work_name: str) -> dict[str, Any]:
    (found,) = [
        job for job in jobs(namespace) if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
    ]
    return found


def created_at(namespace: str, work_name: str) -> str:
    return str(job_of(namespace, work_name)["metadata"]["creationTimestamp"])


def test_a_3x2_matrix_runs_6_instances_as_one_indexed_job_and_its_dependent_waits_for_all(
    namespace: str, running_operator: OperatorProcess
) -> None:
    grid = {"model": ["linear", "forest", "gbr"], "lr": ["0.1", "0.01"]}
    works = [
        work("process"),
        matrix_work("train", "process", matrix=grid, annotations={"sim.dagflow.dev/duration": "2s"}),
        work("pick", "train"),
    ]
    create(flow("sweep", works), namespace)
    final = wait_for_phase(namespace, "sweep", "Succeeded")
    train = works_by_name(final)["train"]
    assert train["instances"] == 6
    assert train["instanceCounts"] == {"Pending": 0, "Running": 0, "Succeeded": 6, "Failed": 0, "Stopped": 0}

    job = job_of(namespace, "train")
    assert (job["spec"]["completions"], job["spec"]["parallelism"], job["spec"]["completionMode"]) == (
        6,
        6,
        "Indexed",
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == [
        "/dagflow/launcher",
        "run",
        "--",
        "python",
        "-m",
        "train",
        "--model",
        "$(matrix.model)",
    ]
    assert pod["initContainers"][0]["args"] == ["install", "/dagflow/launcher"]
    values_map = get_json("configmap", "sweep-1-train-matrix", namespace=namespace)
    assert json.loads(values_map["data"]["values.json"]) == [
        {"lr": "0.1", "model": "linear"},
        {"lr": "0.1", "model": "forest"},
        {"lr": "0.1", "model": "gbr"},
        {"lr": "0.01", "model": "linear"},
        {"lr": "0.01", "model": "forest"},
        {"lr": "0.01", "model": "gbr"},
    ]
    assert values_map["metadata"]["ownerReferences"][0]["kind"] == "DAGFlow"
    # The dependent's Job comes after the last instance ended.
    train_done = next(c for c in job["status"]["conditions"] if c["type"] == "Complete")["lastTransitionTime"]
    assert created_at(namespace, "pick") >= train_done


def test_a_dynamic_matrix_runs_one_instance_per_item_of_an_output_list(
    namespace: str, running_operator: OperatorProcess
) -> None:
    shards = [f"shard-{index:02d}" for index in range(50)]
    split = work("split", annotations=reporting({"shards": shards}), outputs=[{"name": "shards"}])
    fan = matrix_work("work-on", "split", matrix={"shard": "$(works.split.outputs.shards)"})
    fan["container"]["command"] = ["process", "$(matrix.shard)"]
    create(flow("dynamic", [split, fan, work("join", "work-on")]), namespace)
    final = wait_for_phase(namespace, "dynamic", "Succeeded")
    assert works_by_name(final)["work-on"]["instances"] == 50
    assert job_of(namespace, "work-on")["spec"]["completions"] == 50
    values_map = get_json("configmap", "dynamic-1-work-on-matrix", namespace=namespace)
    assert [combination["shard"] for combination in json.loads(values_map["data"]["values.json"])] == shards


def test_under_fail_fast_a_failed_instance_fails_the_work_and_stops_the_others(
    namespace: str, running_operator: OperatorProcess
) -> None:
    annotations = {**failing(), "sim.dagflow.dev/fail-indexes": "1", "sim.dagflow.dev/duration": "1s"}
    train = matrix_work(
        "train", matrix={"model": ["a", "b", "c", "d"]}, annotations=annotations, maxParallel=2
    )
    create(flow("brittle", [train, work("pick", "train")]), namespace)
    final = wait_for_phase(namespace, "brittle", "Failed")
    by_name = works_by_name(final)
    assert by_name["train"]["phase"] == "Failed"
    assert by_name["train"]["failedInstances"] == [{"index": 1, "values": {"model": "b"}}]
    assert by_name["train"]["message"].startswith("1 of 4 instances failed")
    assert "1 (model=b)" in by_name["train"]["message"]
    counts = by_name["train"]["instanceCounts"]
    assert counts["Failed"] == 1 and counts["Succeeded"] + counts["Stopped"] == 3
    assert counts["Stopped"] >= 1, "instances not yet run when the first one failed are stopped"
    assert by_name["pick"]["phase"] == "Skipped"
    assert job_of(namespace, "train")["spec"]["maxFailedIndexes"] == 0


def test_under_continue_every_instance_runs_and_dependents_apply_their_rule_over_them(
    namespace: str, running_operator: OperatorProcess
) -> None:
    annotations = {**failing(), "sim.dagflow.dev/fail-indexes": "0,2"}
    train = matrix_work("train", matrix={"model": ["a", "b", "c", "d"]}, annotations=annotations)
    works = [
        train,
        work("needs-all", "train"),
        work("needs-one", "train", when="AnySucceeded"),
        work("after-all", "train", when="AllDone"),
    ]
    create(flow("tolerant", works, failurePolicy="Continue"), namespace)
    final = wait_for_phase(namespace, "tolerant", "Failed")
    by_name = works_by_name(final)
    assert by_name["train"]["instanceCounts"] == {
        "Pending": 0,
        "Running": 0,
        "Succeeded": 2,
        "Failed": 2,
        "Stopped": 0,
    }
    assert [entry["index"] for entry in by_name["train"]["failedInstances"]] == [0, 2]
    assert by_name["train"]["message"].startswith("2 of 4 instances failed: 0 (model=a); 2 (model=c)")
    assert [by_name[name]["phase"] for name in ("needs-all", "needs-one", "after-all")] == [
        "Skipped",
        "Succeeded",
        "Succeeded",
    ]


def test_outputs_of_a_matrix_work_reach_a_dependent_as_lists(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = matrix_work(
        "train",
        matrix={"model": ["a", "b", "c"]},
        annotations=reporting({"score": 0.9, "model": "/models/m.pkl"}),
        outputs=[{"name": "score"}, {"name": "model"}],
    )
    pick = work("pick", "train")
    pick["container"]["args"] = ["--scores", "$(works.train.outputs.score)"]
    create(flow("scored", [train, pick]), namespace)
    final = wait_for_phase(namespace, "scored", "Succeeded")
    kept_in = works_by_name(final)["train"]["outputsConfigMap"]
    assert kept_in == "scored-1-train-outputs"
    outputs = json.loads(get_json("configmap", kept_in, namespace=namespace)["data"]["outputs.json"])
    assert outputs == {"score": [0.9, 0.9, 0.9], "model": ["/models/m.pkl"] * 3}
    assert job_of(namespace, "pick")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--scores",
        "[0.9,0.9,0.9]",
    ]
