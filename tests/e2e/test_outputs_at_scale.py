"""Outputs at scale: however many works report outputs, the flow keeps its status (outputs past a
budget are kept in ConfigMaps), and a matrix work's gathered output fans out to as many instances."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, flow, wait_for_phase, work, works_by_name
from tests.e2e.test_data import container_of
from tests.e2e.test_matrix import job_of
from tests.kube import get_json
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

WORKS = 1400
# 1 KiB of outputs per work: {"blob":"xxx..."} as compact JSON.
BLOB = "x" * (1024 - len('{"blob":""}'))


def test_1400_works_each_reporting_1_kib_of_outputs_keep_their_status(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works: list[dict[str, Any]] = [work(f"w{n}", outputs=[{"name": "blob"}]) for n in range(WORKS)]
    last = f"w{WORKS - 1}"
    reader = work("reader", last)
    reader["container"]["args"] = [f"$(works.{last}.outputs.blob)"]
    # Every pod leaves the same 1 KiB: the flow's spec stays small, its outputs do not.
    pod_defaults = {"annotations": {"sim.dagflow.dev/termination-message": json.dumps({"blob": BLOB})}}
    create(flow("wide", [*works, reader], podDefaults=pod_defaults), namespace)
    final = wait_for_phase(namespace, "wide", "Succeeded", timeout=600)

    by_name = works_by_name(final)
    in_status = [name for name, entry in by_name.items() if "outputs" in entry]
    kept_apart = [name for name, entry in by_name.items() if "outputsConfigMap" in entry]
    assert len(in_status) + len(kept_apart) == WORKS
    assert in_status and kept_apart, (len(in_status), len(kept_apart))
    # The whole object is well within etcd's 1.5 MiB.
    whole = get_json("dagflow", "wide", namespace=namespace)
    assert len(json.dumps(whole, separators=(",", ":")).encode()) < 1024 * 1024
    # Outputs kept apart reach their readers as any others do.
    assert last in kept_apart
    stored = get_json("configmap", by_name[last]["outputsConfigMap"], namespace=namespace)
    assert json.loads(stored["data"]["outputs.json"]) == {"blob": BLOB}
    assert container_of(namespace, "reader", 1)["args"] == [BLOB]


def test_a_matrix_works_gathered_output_is_a_dynamic_axis_of_as_many_instances(
    namespace: str, running_operator: OperatorProcess
) -> None:
    listing = work(
        "list",
        annotations={"sim.dagflow.dev/termination-message": '{"shard": "shard-{index}"}'},
        outputs=[{"name": "shard"}],
    )
    listing["matrix"] = {"part": [str(n) for n in range(300)]}
    listing["container"]["command"] = ["list-part", "$(matrix.part)"]
    fan = work("fan", "list")
    fan["matrix"] = {"shard": "$(works.list.outputs.shard)"}
    fan["container"]["command"] = ["process", "$(matrix.shard)"]
    create(flow("wider", [listing, fan]), namespace)
    final = wait_for_phase(namespace, "wider", "Succeeded", timeout=300)
    assert works_by_name(final)["fan"]["instances"] == 300
    assert job_of(namespace, "fan")["spec"]["completions"] == 300
    values = json.loads(
        get_json("configmap", "wider-1-fan-matrix", namespace=namespace)["data"]["values.json"]
    )
    assert [entry["shard"] for entry in values] == [f"shard-{n}" for n in range(300)]
