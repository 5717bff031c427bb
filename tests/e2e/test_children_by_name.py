"""Children under names anyone can predict: a ConfigMap or Service planted or left under the name the
operator uses is never trusted, read or deleted, and no ConfigMap of a flow outlives its use."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.e2e.test_data import reporting
from tests.e2e.test_matrix import matrix_work
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

GRID = {"model": ["linear", "forest"]}


def config_map_names(namespace: str) -> set[str]:
    listing = get_json(
        "configmaps", "-l", "app.kubernetes.io/managed-by=dagflow-operator", namespace=namespace
    )
    return {item["metadata"]["name"] for item in listing["items"]}


def wait_for_config_maps(namespace: str, expected: set[str], timeout: float = 60) -> None:
    wait_for(
        lambda: config_map_names(namespace) == expected,
        timeout=timeout,
        what=f"the flow's ConfigMaps to be {sorted(expected)} (are {sorted(config_map_names(namespace))})",
    )


def planted(name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data,
    }


def test_a_config_map_planted_under_the_values_name_fails_the_work_and_no_pod_reads_it(
    namespace: str, running_operator: OperatorProcess
) -> None:
    apply(planted("sweep-1-train-matrix", {"values.json": '[{"model":"evil"}]'}), namespace=namespace)
    create(flow("sweep", [matrix_work("train", matrix=GRID)]), namespace)
    final = wait_for_phase(namespace, "sweep", "Failed")
    train = works_by_name(final)["train"]
    assert "ConfigMap sweep-1-train-matrix already exists" in train["message"]
    assert jobs(namespace) == []
    # Left as it was: the operator never changes what it does not own.
    assert get_json("configmap", "sweep-1-train-matrix", namespace=namespace)["data"] == {
        "values.json": '[{"model":"evil"}]'
    }


@pytest.mark.local_cluster
def test_a_planted_outputs_config_map_is_not_read_into_the_next_works_pods(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = matrix_work(
        "train", matrix=GRID, annotations=reporting({"score": 0.5}), outputs=[{"name": "score"}]
    )
    pick = work("pick", "train")
    pick["container"]["args"] = ["$(works.train.outputs.score)"]
    apply(planted("picked-1-train-outputs", {"outputs.json": '{"score":["pwned"]}'}), namespace=namespace)
    create(flow("picked", [train, pick]), namespace)
    final = wait_for_phase(namespace, "picked", "Failed")
    by_name = works_by_name(final)
    assert "ConfigMap picked-1-train-outputs already exists" in by_name["train"]["message"]
    assert by_name["pick"]["phase"] == "Skipped"
    assert [job["metadata"]["annotations"]["dagflow.dev/work-name"] for job in jobs(namespace)] == ["train"]


@pytest.mark.local_cluster
def test_every_config_map_of_a_matrix_work_goes_once_nothing_uses_it(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = matrix_work(
        "train", matrix=GRID, annotations=reporting({"score": 0.5}), outputs=[{"name": "score"}]
    )
    create(flow("tidy", [train], historyRuns=1), namespace)
    wait_for_phase(namespace, "tidy", "Succeeded")
    assert config_map_names(namespace) == {"tidy-1-train-matrix", "tidy-1-train-outputs"}

    # Its Job deleted by someone else: the values go, the outputs the status names stay.
    kubectl("delete", "job", "tidy-1-train", "--wait=true", namespace=namespace)
    wait_for_config_maps(namespace, {"tidy-1-train-outputs"})

    # A new run with a history of one: run 1's outputs go when run 2 takes its place.
    request(namespace, "tidy", "rerun", "again")
    wait_for_run(namespace, "tidy", 2, "Succeeded")
    wait_for_config_maps(namespace, {"tidy-2-train-matrix", "tidy-2-train-outputs"})


def test_a_stopped_matrix_work_leaves_no_config_map(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = matrix_work("train", matrix=GRID, annotations={"sim.dagflow.dev/duration": "300s"})
    create(flow("halted", [train]), namespace)
    wait_for(lambda: config_map_names(namespace) == {"halted-1-train-matrix"}, what="the values ConfigMap")
    wait_for(
        lambda: works_by_name(status(namespace, "halted"))["train"]["phase"] == "Running", what="running"
    )
    request(namespace, "halted", "stop", "enough")
    wait_for_run(namespace, "halted", 1, "Stopped")
    wait_for_config_maps(namespace, set())


@pytest.mark.local_cluster
def test_removing_a_serve_work_deletes_only_what_the_flow_owns(
    namespace: str, running_operator: OperatorProcess
) -> None:
    serve = work("serve", serve={"port": 8080})
    create(flow("shop", [work("prep"), serve]), namespace)
    wait_for_phase(namespace, "shop", "Serving")
    # While the operator is away, someone replaces the Service with one of their own.
    running_operator.stop()
    kubectl("delete", "service", "shop-serve", "--wait=true", namespace=namespace)
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop-serve", "labels": {"team": "web"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}},
    }
    apply(foreign, namespace=namespace)
    patch = json.dumps({"spec": {"works": [work("prep")]}})
    kubectl("patch", "dagflow", "shop", "--type=merge", "-p", patch, namespace=namespace)
    running_operator.start()
    wait_for_run(namespace, "shop", 2, "Succeeded")
    wait_for(
        lambda: kubectl("get", "deployment", "shop-serve", namespace=namespace, check=False).returncode != 0,
        what="the flow's Deployment to be deleted",
    )
    assert get_json("service", "shop-serve", namespace=namespace)["metadata"]["labels"] == {"team": "web"}
