"""Data between works on the local cluster: parameters, outputs and the references to them.

On simulated pods the annotation `sim.dagflow.dev/termination-message` stands for what a real
container writes to /dev/termination-log: kwok's stage puts it in the succeeded container's state.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, flow, pods_of_work, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import apply, kubectl
from tests.operator_process import OperatorProcess


def reporting(outputs: dict[str, Any]) -> dict[str, str]:
    """Annotations that make a simulated work's pod leave `outputs` as its termination message."""
    return {"sim.dagflow.dev/termination-message": json.dumps(outputs)}


def container_of(namespace: str, work_name: str, run: int) -> dict[str, Any]:
    """The container of the work's pod in run `run`."""
    pods = [
        pod
        for pod in pods_of_work(namespace, work_name)
        if pod["metadata"]["labels"]["dagflow.dev/run"] == str(run)
    ]
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    container: dict[str, Any] = pods[0]["spec"]["containers"][0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's env values but the index the Job controller adds to every Indexed Job's pod."""
    return {
        entry["name"]: entry.get("value", "")
        for entry in container.get("env") or []
        if entry["name"] != "JOB_COMPLETION_INDEX"
    }


@pytest.mark.local_cluster
def test_a_parameter_reaches_the_pods_args_and_a_rerun_may_give_another_value(
    namespace: str, running_operator: OperatorProcess
) -> None:
    train = work("train")
    train["container"]["args"] = ["--lr", "$(params.lr)", "--data", "$(params.data)/$(flow.name)-$(run)"]
    create(
        flow(
            "tuned",
            [train],
            params=[{"name": "lr", "default": "0.1"}, {"name": "data", "default": "/data"}],
        ),
        namespace,
    )
    first = wait_for_run(namespace, "tuned", 1, "Succeeded")
    assert first["params"] == {"lr": "0.1", "data": "/data"}
    assert container_of(namespace, "train", 1)["args"] == ["--lr", "0.1", "--data", "/data/tuned-1"]

    kubectl("annotate", "dagflow", "tuned", 'dagflow.dev/params={"lr": "0.01"}', namespace=namespace)
    request(namespace, "tuned", "rerun", "lower-lr")
    second = wait_for_run(namespace, "tuned", 2, "Succeeded")
    assert second["params"] == {"lr": "0.01", "data": "/data"}
    assert container_of(namespace, "train", 2)["args"] == ["--lr", "0.01", "--data", "/data/tuned-2"]


@pytest.mark.local_cluster
def test_an_output_of_one_work_reaches_the_next_ones_env(
    namespace: str, running_operator: OperatorProcess
) -> None:
    split = work(
        "split",
        annotations=reporting({"features": "/data/features.parquet", "rows": 1200, "debug": "dropped"}),
        outputs=[{"name": "features"}, {"name": "rows"}],
    )
    train = work("train", "split")
    train["container"]["env"] = [
        {"name": "FEATURES", "value": "$(works.split.outputs.features)"},
        {"name": "ROWS", "value": "$(works.split.outputs.rows)"},
        {"name": "HOME_DIR", "value": "$(HOME)"},
    ]
    create(flow("handoff", [split, train]), namespace)
    final = wait_for_phase(namespace, "handoff", "Succeeded")
    assert works_by_name(final)["split"]["outputs"] == {"features": "/data/features.parquet", "rows": 1200}
    assert env_of(container_of(namespace, "train", 1)) == {
        "FEATURES": "/data/features.parquet",
        "ROWS": "1200",
        "HOME_DIR": "$(HOME)",
    }


@pytest.mark.local_cluster
def test_a_work_whose_outputs_are_not_json_fails_naming_why_and_its_dependent_is_skipped(
    namespace: str, running_operator: OperatorProcess
) -> None:
    split = work(
        "split",
        annotations={"sim.dagflow.dev/termination-message": "rows=1200"},
        outputs=[{"name": "rows"}],
    )
    create(flow("garbled", [split, work("train", "split")]), namespace)
    final = wait_for_phase(namespace, "garbled", "Failed")
    by_name = works_by_name(final)
    assert by_name["split"]["phase"] == "Failed"
    assert by_name["split"]["message"].startswith("succeeded, but its outputs are not JSON")
    assert by_name["train"]["phase"] == "Skipped"
    assert "split" in final["message"]


def test_references_to_nothing_are_refused_at_apply(
    namespace: str, running_operator: OperatorProcess
) -> None:
    side = work("side", outputs=[{"name": "x"}])
    train = work("train")
    train["container"]["args"] = ["$(params.lr)", "$(works.side.outputs.x)"]
    refused = apply(flow("dangling", [side, train]), namespace=namespace, check=False)
    assert refused.returncode != 0
    assert "$(params.lr) names no parameter of the flow" in refused.stderr, refused.stderr
    assert "'side' is not among the works this one depends on" in refused.stderr, refused.stderr
    assert kubectl("get", "dagflow", "dangling", namespace=namespace, check=False).returncode != 0


@pytest.mark.local_cluster
def test_values_for_an_unknown_parameter_are_refused_at_apply(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("strict", [work("train")], params=[{"name": "lr", "default": "0.1"}]), namespace)
    wait_for_phase(namespace, "strict", "Succeeded")
    refused = kubectl(
        "annotate",
        "dagflow",
        "strict",
        'dagflow.dev/params={"epochs": "3"}',
        namespace=namespace,
        check=False,
    )
    assert refused.returncode != 0
    assert "the flow has no parameter 'epochs' (it has: lr)" in refused.stderr, refused.stderr
    assert status(namespace, "strict")["run"] == 1


@pytest.mark.local_cluster
def test_an_output_that_is_null_or_not_ascii_reaches_the_status_and_the_next_work_as_written(
    namespace: str, running_operator: OperatorProcess
) -> None:
    reported = {"best": None, "scores": {"baseline": None, "city": "Zürich"}, "tags": ["café"]}
    split = work(
        "split",
        annotations={"sim.dagflow.dev/termination-message": json.dumps(reported, ensure_ascii=False)},
        outputs=[{"name": "best"}, {"name": "scores"}, {"name": "tags"}],
    )
    train = work("train", "split")
    train["container"]["args"] = [
        "$(works.split.outputs.best)",
        "$(works.split.outputs.scores)",
        "$(works.split.outputs.tags)",
    ]
    create(flow("nulls", [split, train]), namespace)
    final = wait_for_phase(namespace, "nulls", "Succeeded")
    assert works_by_name(final)["split"]["outputs"] == reported
    assert container_of(namespace, "train", 1)["args"] == [
        "null",
        '{"baseline":null,"city":"Zürich"}',
        '["café"]',
    ]
