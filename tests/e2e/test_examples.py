"""Every file in examples/, applied as a user applies it, runs to its end on the cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.flows import pods_of_work, wait_for_phase, works_by_name
from tests.e2e.test_approvals import approval_policies
from tests.kube import REPO_ROOT, VENV_BIN, apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

__all__ = ["approval_policies"]

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
GPU_RESOURCE = "nvidia.com/gpu"
EXAMPLE_IMAGE = "dagflow/examples:"
REAL_POOL_TAINT = "dagflow.dev/pool"


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in docs if document.get("kind") == kind]


def simulated_cluster() -> bool:
    """Whether kwok plays every node the example's pods can land on (the local cluster,
    tests/cluster/nodes.yaml): no container runs. The local cluster's real node takes only pods that
    tolerate its taint, which the examples do not."""
    nodes = [node for node in get_json("nodes")["items"] if not real_pool_taint(node)]
    return bool(nodes) and all(
        (node["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake" for node in nodes
    )


def real_pool_taint(node: dict[str, Any]) -> bool:
    return any(taint["key"] == REAL_POOL_TAINT for taint in node["spec"].get("taints") or [])


def gpu_node_names() -> set[str]:
    return {
        node["metadata"]["name"]
        for node in get_json("nodes")["items"]
        if int((node["status"].get("allocatable") or {}).get(GPU_RESOURCE, 0)) > 0
    }


@pytest.fixture
def volumes() -> Iterator[list[str]]:
    """Names of the PersistentVolumes a test made; deleted afterwards."""
    created: list[str] = []
    yield created
    for name in created:
        kubectl("delete", "persistentvolume", name, "--ignore-not-found", "--wait=false", check=False)


def bind_claims_in_advance(claims: list[dict[str, Any]], namespace: str, created: list[str]) -> None:
    """Give each claim a volume bound to it in advance (with `storageClassName: ""`, which a claim's
    default class does not hinder: a volume bound in advance binds whatever the claim's class).

    Created before the claims, so the claim binds as soon as it exists. Nothing mounts the volume.
    """
    for claim in claims:
        claim_name = claim["metadata"]["name"]
        name = f"{namespace}-{claim_name}"
        apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name},
                "spec": {
                    "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                    "accessModes": claim["spec"]["accessModes"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "claimRef": {"namespace": namespace, "name": claim_name},
                    "hostPath": {"path": f"/tmp/dagflow-e2e/{name}", "type": "DirectoryOrCreate"},
                },
            }
        )
        created.append(name)


def approve_its_gates(namespace: str, flow: str, gates: list[str]) -> None:
    """Approve each gate of the flow as it waits, as the cluster's admin does with `dagflow approve`."""
    for gate in gates:

        def waits(gate: str = gate) -> bool:
            entry = works_by_name(get_json("dagflow", flow, namespace=namespace).get("status") or {})
            return (entry.get(gate) or {}).get("phase") == "Waiting"

        wait_for(waits, timeout=180, what=f"gate {gate} of {flow} to wait")
        approved = subprocess.run(
            [str(VENV_BIN / "dagflow"), "approve", flow, gate, "-n", namespace],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert approved.returncode == 0, approved.stderr


def needs_simulated_nodes(path: Path) -> bool:
    """Whether the example's works use the example image or a claim: on real nodes they would need
    the image loaded and ReadWriteMany storage; the simulated cluster runs no container."""
    docs = documents(path)
    works = [work for flow in of_kind(docs, "DAGFlow") for work in flow["spec"]["works"]]
    uses_image = any(work["container"]["image"].startswith(EXAMPLE_IMAGE) for work in works)
    return uses_image or bool(of_kind(docs, "PersistentVolumeClaim"))


LOCAL_ONLY = [pytest.mark.local_cluster]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, id=path.name, marks=LOCAL_ONLY if needs_simulated_nodes(path) else [])
        for path in EXAMPLES
    ],
)
def test_example_runs_to_its_end(
    path: Path, namespace: str, running_operator: OperatorProcess, volumes: list[str], approval_policies: str
) -> None:
    docs = documents(path)
    flows = of_kind(docs, "DAGFlow")
    assert flows, f"{path.name} holds no DAGFlow"
    all_works = [(flow["metadata"]["name"], work) for flow in flows for work in flow["spec"]["works"]]
    gpu_works = {(flow_name, work["name"]) for flow_name, work in all_works if work.get("gpu", 0) > 0}
    claims = of_kind(docs, "PersistentVolumeClaim")
    # Marked local_cluster, such an example is never selected against real nodes (make e2e-kind).
    assert not needs_simulated_nodes(path) or simulated_cluster(), f"{path.name} needs the simulated cluster"
    assert not gpu_works or gpu_node_names(), f"{path.name} has GPU works and no node has {GPU_RESOURCE}"

    bind_claims_in_advance(claims, namespace, volumes)
    kubectl("apply", "-f", str(path), namespace=namespace)

    for flow in flows:
        name = flow["metadata"]["name"]
        works = flow["spec"]["works"]
        expected = "Serving" if any("serve" in work for work in works) else "Succeeded"
        approve_its_gates(namespace, name, [work["name"] for work in works if "approval" in work])
        final = wait_for_phase(namespace, name, timeout=180)
        assert final["phase"] == expected, final
        # Its finally works (a report) have run too: they count among the works.
        every_work = [*works, *flow["spec"].get("finally", [])]
        assert final["progress"] == f"{len(every_work)}/{len(every_work)}"
        ready = next(condition for condition in final["conditions"] if condition["type"] == "Ready")
        assert ready["status"] == "True"
        phases = {work_name: entry["phase"] for work_name, entry in works_by_name(final).items()}
        assert phases == {work["name"]: "Serving" if "serve" in work else "Succeeded" for work in every_work}

    gpu_nodes = gpu_node_names()
    for flow_name, work_name in gpu_works:
        pods = [
            pod
            for pod in pods_of_work(namespace, work_name)
            if pod["metadata"]["annotations"].get("dagflow.dev/flow-name") == flow_name
        ]
        assert pods and all(pod["spec"]["nodeName"] in gpu_nodes for pod in pods), work_name

    for claim in claims:
        bound = get_json("persistentvolumeclaim", claim["metadata"]["name"], namespace=namespace)
        assert bound["status"]["phase"] == "Bound"
