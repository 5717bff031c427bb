"""Matrix works at their seams on the local cluster: keys only some instances have, values that
must not be read as references, launches that cannot happen, dynamic axes with a value twice, and
references too long for one argument.

Simulated pods run nothing, so the launcher itself is not started here (its Go tests and
tests/unit/test_launcher.py run it); these tests check what the cluster is asked to run and what the
operator makes of what the pods report.
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

# The launcher's exit code when it cannot start an instance (images/launcher/main.go).
LAUNCHER_EXIT_CODE = 242


def job_of(namespace: str, work_name: str) -> dict[str, Any]:
    (found,) = [
        job for job in jobs(namespace) if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
    ]
    return found


def launched_container(namespace: str, work_name: str) -> dict[str, Any]:
    container: dict[str, Any] = job_of(namespace, work_name)["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_documented_matrix_runs_every_instance_with_an_empty_value_for_a_key_it_lacks(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # The example of docs/api.md ("Matrix"), as written there.
    train = work(
        "train",
        "process",
        gpu=1,
        maxParallel=4,
        matrix={
            "model": ["linear", "forest", "gbr"],
            "lr": ["0.1", "0.01"],
            "exclude": [{"model": "linear", "lr": "0.01"}],
            "include": [{"model": "gbr", "lr": "0.1", "depth": "3"}],
        },
        outputs=[{"name": "score"}],
        annotations=reporting({"score": 0.8}),
    )
    train["container"] |= {
        "command": ["python", "-m", "train", "--model", "$(matrix.model)", "--lr", "$(matrix.lr)"],
        "env": [{"name": "DEPTH", "value": "$(matrix.depth)"}],
    }
    create(flow("documented", [work("process"), train]), namespace)
    final = wait_for_phase(namespace, "documented", "Succeeded")
    assert works_by_name(final)["train"]["instances"] == 5
    values = json.loads(
        get_json("configmap", "documented-1-train-matrix", namespace=namespace)["data"]["values.json"]
    )
    # Every instance has every key the launcher may be asked for: none of them fails to launch.
    assert [instance["depth"] for instance in values] == ["", "", "3", "", ""]
    assert all(set(instance) == {"depth", "lr", "model"} for instance in values)
    env = {entry["name"]: entry["value"] for entry in launched_container(namespace, "train")["env"]}
    assert env["DAGFLOW_MATRIX_ENV"] == '["DEPTH"]'


def test_a_parameter_or_output_holding_a_matrix_reference_is_never_expanded_by_the_launcher(
    namespace: str, running_operator: OperatorProcess
) -> None:
    split = work("split", outputs=[{"name": "note"}], annotations=reporting({"note": "n$(matrix.shard)"}))
    fan = work("fan", "split", matrix={"shard": ["a", "b"]})
    fan["container"] |= {
        "command": ["run", "--tag=$(params.tag)", "--note=$(works.split.outputs.note)", "$(matrix.shard)"],
        "env": [
            {"name": "SHARD", "value": "$(matrix.shard)"},
            {"name": "TAG", "value": "$(params.tag)"},
        ],
    }
    manifest = flow("escaped", [split, fan], params=[{"name": "tag", "default": "v$(matrix.shard)"}])
    create(manifest, namespace)
    wait_for_phase(namespace, "escaped", "Succeeded")
    container = launched_container(namespace, "fan")
    # Kubernetes makes `$$` of `$$$$`; the launcher reads `$$(matrix.` as the literal `$(matrix.`.
    assert container["command"][3:] == [
        "run",
        "--tag=v$$$$(matrix.shard)",
        "--note=n$$$$(matrix.shard)",
        "$(matrix.shard)",
    ]
    env = {entry["name"]: entry["value"] for entry in container["env"]}
    assert env["DAGFLOW_MATRIX_ENV"] == '["SHARD"]', "only SHARD's author wrote a matrix reference"
    assert env["TAG"] == "v$$(matrix.shard)", "TAG is not the launcher's: Kubernetes' escape only"


def test_a_launch_that_cannot_happen_fails_its_instance_at_once_and_the_work_says_why(
    namespace: str, running_operator: OperatorProcess
) -> None:
    annotations = {**failing(LAUNCHER_EXIT_CODE), "sim.dagflow.dev/fail-indexes": "1"}
    train = work("train", matrix={"model": ["a", "b", "c"]}, retries=3, annotations=annotations)
    train["container"]["command"] = ["python", "-m", "train", "$(matrix.model)"]
    create(flow("unlaunched", [train], failurePolicy="Continue"), namespace)
    final = wait_for_phase(namespace, "unlaunched", "Failed")
    entry = works_by_name(final)["train"]
    assert entry["failedInstances"] == [{"index": 1, "values": {"model": "b"}}]
    assert entry["message"] == (
        "1 of 3 instances failed: 1 (model=b); "
        f"instance 1 could not start: simulated failure, exit code {LAUNCHER_EXIT_CODE}"
    )
    job_status = job_of(namespace, "train")["status"]
    assert job_status["failed"] == 1, "no retry of a launch that would fail the same way"
    assert job_status["succeeded"] == 2


def test_a_dynamic_axis_that_lists_a_value_twice_fails_its_work_naming_the_value(
    namespace: str, running_operator: OperatorProcess
) -> None:
    split = work("split", outputs=[{"name": "shards"}], annotations=reporting({"shards": ["a", "b", "a"]}))
    fan = work("fan", "split", matrix={"shard": "$(works.split.outputs.shards)"})
    fan["container"]["command"] = ["process", "$(matrix.shard)"]
    create(flow("twice", [split, fan]), namespace)
    final = wait_for_phase(namespace, "twice", "Failed")
    entry = works_by_name(final)["fan"]
    assert entry["phase"] == "Failed"
    assert 'lists "a" more than once' in entry["message"]
    assert [job["metadata"]["annotations"]["dagflow.dev/work-name"] for job in jobs(namespace)] == ["split"]


def test_a_reference_too_long_for_one_argument_fails_its_work_at_start_naming_it_and_its_size(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # 140 instances of 1 KiB each: their gathered list is about 139,000 bytes, more than Linux
    # passes as one argument (128 KiB).
    blob = "x" * 990
    train = work(
        "train",
        matrix={"i": [str(index) for index in range(140)]},
        outputs=[{"name": "blob"}],
        annotations=reporting({"blob": blob}),
    )
    train["container"]["command"] = ["train", "$(matrix.i)"]
    pick = work("pick", "train")
    pick["container"]["args"] = ["--blobs", "$(works.train.outputs.blob)"]
    create(flow("oversized", [train, pick]), namespace)
    final = wait_for_phase(namespace, "oversized", "Failed", timeout=180)
    message = works_by_name(final)["pick"]["message"]
    size = len(json.dumps([blob] * 140, separators=(",", ":")))
    assert message.startswith(f"args[1]: $(works.train.outputs.blob) is {size:,} bytes"), message
    assert "at most 131,072 bytes" in message
    assert "pick" not in {job["metadata"]["annotations"]["dagflow.dev/work-name"] for job in jobs(namespace)}
