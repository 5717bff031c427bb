"""What happens around a flow's run: crashes, deletion, spec changes, and input the operator refuses."""

from __future__ import annotations

import random
import time

import pytest

from tests.e2e.flows import (
    create,
    flow,
    jobs,
    jobs_per_run_and_work,
    status,
    wait_for_phase,
    work,
    works_by_name,
)
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess


def children(namespace: str) -> list[str]:
    listing = kubectl("get", "jobs,deployments,services", "-o", "name", namespace=namespace).stdout
    return [line for line in listing.split() if line]


@pytest.mark.local_cluster
def test_operator_killed_repeatedly_mid_flow_runs_each_work_once(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("root", duration="1s")]
    for branch in range(6):
        works.append(work(f"b{branch}-1", "root", duration="1s"))
        works.append(work(f"b{branch}-2", f"b{branch}-1", duration="1s"))
        works.append(work(f"b{branch}-3", f"b{branch}-2"))
    works.append(work("join", *[f"b{branch}-3" for branch in range(6)]))
    create(flow("crashy", works), namespace)
    rng = random.Random(7)
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 1.5))
        running_operator.kill()
        time.sleep(rng.uniform(0.0, 1.0))
        running_operator.start()
    final = wait_for_phase(namespace, "crashy", timeout=180)
    assert final["phase"] == "Succeeded", final
    counts = jobs_per_run_and_work(namespace)
    assert set(counts.values()) == {1}
    assert len(counts) == len(works)
    assert all(entry["attempts"] == 1 for entry in final["works"])


@pytest.mark.local_cluster
def test_deleting_a_flow_deletes_its_children_even_with_the_operator_down(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("doomed", [work("a"), work("web", "a", serve={"port": 8080})]), namespace)
    wait_for_phase(namespace, "doomed", "Serving")
    assert len(children(namespace)) == 3  # the Job, the Deployment and the Service
    running_operator.stop()
    try:
        kubectl("delete", "dagflow", "doomed", namespace=namespace)
        wait_for(lambda: not children(namespace), timeout=60, what="the children to be garbage-collected")
    finally:
        running_operator.start()


@pytest.mark.local_cluster
def test_spec_change_starts_run_2_and_rolls_the_serve_deployment(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("evolving", [work("train", duration="1s"), work("web", "train", serve={"port": 8080})])
    create(manifest, namespace)
    first = wait_for_phase(namespace, "evolving", "Serving")
    assert first["run"] == 1
    deployment_uid = get_json("deployment", "evolving-web", namespace=namespace)["metadata"]["uid"]

    manifest["spec"]["works"][0]["container"]["args"] = ["--epochs", "2"]
    apply(manifest, namespace=namespace)
    wait_for(lambda: status(namespace, "evolving").get("run") == 2, timeout=30, what="run 2")
    second = wait_for_phase(namespace, "evolving", "Serving", timeout=60)
    assert second["run"] == 2
    assert works_by_name(second)["train"]["job"] == "evolving-2-train"
    deployment = get_json("deployment", "evolving-web", namespace=namespace)
    assert deployment["metadata"]["uid"] == deployment_uid, "the Deployment was replaced, not rolled"
    assert deployment["spec"]["template"]["metadata"]["labels"]["dagflow.dev/run"] == "2"
    assert sorted(job["metadata"]["name"] for job in jobs(namespace)) == [
        "evolving-1-train",
        "evolving-2-train",
    ]


@pytest.mark.local_cluster
def test_spec_change_stops_the_running_jobs_of_the_old_run(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("restless", [work("long", duration="300s")])
    create(manifest, namespace)
    wait_for(lambda: jobs(namespace), timeout=30, what="the first Job")
    manifest["spec"]["works"][0]["annotations"]["sim.dagflow.dev/duration"] = "1s"
    apply(manifest, namespace=namespace)
    final = wait_for_phase(namespace, "restless", "Succeeded", timeout=60)
    assert final["run"] == 2
    wait_for(
        lambda: [job["metadata"]["name"] for job in jobs(namespace)] == ["restless-2-long"],
        timeout=60,
        what="the run-1 Job to be deleted",
    )


def test_apply_of_a_cyclic_flow_is_refused_with_the_cycle(
    namespace: str, running_operator: OperatorProcess
) -> None:
    cyclic = flow("loop", [work("a", "c"), work("b", "a"), work("c", "b")])
    result = apply(cyclic, namespace=namespace, check=False)
    assert result.returncode != 0
    assert (
        "a -> b -> c -> a" in result.stderr
        or "b -> c -> a -> b" in result.stderr
        or ("c -> a -> b -> c" in result.stderr)
    ), result.stderr
    assert "loop" not in kubectl("get", "dagflows", "-o", "name", namespace=namespace).stdout


@pytest.mark.local_cluster
def test_invalid_flow_that_reached_the_operator_fails_once_without_retrying(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # With the operator (and so its webhook) down, only the CRD schema checks what is applied.
    running_operator.stop()
    try:
        apply(flow("sneaky", [work("a", "b"), work("b", "a")]), namespace=namespace)
    finally:
        running_operator.start()
    final = wait_for_phase(namespace, "sneaky", "Failed", timeout=60)
    assert "a -> b -> a" in final["message"] or "b -> a -> b" in final["message"]
    assert not jobs(namespace)
    version = get_json("dagflow", "sneaky", namespace=namespace)["metadata"]["resourceVersion"]
    time.sleep(3)
    assert get_json("dagflow", "sneaky", namespace=namespace)["metadata"]["resourceVersion"] == version


def test_a_job_name_held_by_someone_else_fails_the_work_instead_of_adopting_it(
    namespace: str, running_operator: OperatorProcess
) -> None:
    stranger = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "taken-1-a"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "example.invalid/x:1"}],
                }
            }
        },
    }
    apply(stranger, namespace=namespace)
    create(flow("taken", [work("a"), work("b", "a")]), namespace)
    final = wait_for_phase(namespace, "taken", "Failed", timeout=60)
    entries = works_by_name(final)
    assert "belongs to something else" in entries["a"]["message"]
    assert entries["b"]["phase"] == "Skipped"
