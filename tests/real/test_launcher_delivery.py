"""A matrix work's launcher on the real node, delivered both ways the chart's detection can choose: its
image mounted as an `image` volume where every node's runtime mounts one (containerd 2.x on `real-0`,
as the simulated nodes report), or copied by an init container once one node cannot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.helm import CHART_DIR, helm
from tests.e2e.flows import flow, pods_of_work, wait_for_phase
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import DeployedOperator
from tests.real.conftest import EXAMPLES_IMAGE, OPERATOR_NAMESPACE, REAL_NODE, RELEASE, node_ready

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

WORDS = ["alpha", "beta", "gamma"]
# A simulated node whose runtime cannot mount image volumes; tainted so that nothing lands on it.
OLD_RUNTIME_NODE = "old-runtime-0"
OLD_RUNTIME = "containerd://1.6.20"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def matrix_flow(name: str) -> dict[str, Any]:
    """One matrix work of three instances; each prints its index and the value it got, once as an
    argument and once through an env variable, both expanded by the launcher."""
    code = (
        "import os, sys; index, word = os.environ['JOB_COMPLETION_INDEX'], os.environ['WORD']; "
        "print(f'instance {index}: argument {sys.argv[1]}, env {word}')"
    )
    return flow(
        name,
        [
            {
                "name": "speak",
                "matrix": {"word": WORDS},
                "container": {
                    "image": EXAMPLES_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", code, "$(matrix.word)"],
                    "env": [{"name": "WORD", "value": "$(matrix.word)"}],
                },
            }
        ],
    )


def operator_delivery() -> str:
    """DAGFLOW_LAUNCHER_DELIVERY as the chart set it on the operator's Deployment."""
    deployment = get_json("deployment", f"{RELEASE}-dagflow-operator", namespace=OPERATOR_NAMESPACE)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    value: str = next(entry["value"] for entry in env if entry["name"] == "DAGFLOW_LAUNCHER_DELIVERY")
    return value


def upgrade_in_place() -> None:
    """`helm upgrade` with the release's own values: the chart detects the delivery again."""
    helm(
        "upgrade",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--wait",
        "--timeout",
        "5m",
        timeout=400,
    )


def runs_every_instance_with_its_value(namespace: str, name: str) -> list[dict[str, Any]]:
    """Runs the matrix flow to success; returns its pods, each having printed its own value."""
    apply(matrix_flow(name), namespace=namespace)
    final = wait_for_phase(namespace, name, timeout=300)
    assert final["phase"] == "Succeeded", final
    pods = pods_of_work(namespace, "speak")
    assert len(pods) == len(WORDS)
    for pod in pods:
        assert pod["spec"]["nodeName"] == REAL_NODE
        index = int(pod["metadata"]["annotations"][COMPLETION_INDEX])
        word = WORDS[index]
        logs = kubectl("logs", pod["metadata"]["name"], "-c", "speak", namespace=namespace).stdout
        assert f"instance {index}: argument {word}, env {word}" in logs, logs
    return pods


def test_where_every_node_mounts_images_a_matrix_runs_its_launcher_from_an_image_volume(
    chart_operator: DeployedOperator, real_namespace: str
) -> None:
    runtimes = {node["status"]["nodeInfo"]["containerRuntimeVersion"] for node in get_json("nodes")["items"]}
    # The real node's containerd, and the simulated nodes reporting the same.
    assert len(runtimes) == 1 and next(iter(runtimes)).startswith("containerd://2."), runtimes
    assert operator_delivery() == "imageVolume"

    pods = runs_every_instance_with_its_value(real_namespace, "by-image")
    for pod in pods:
        assert not pod["spec"].get("initContainers"), "nothing runs before the work's container"
        (launcher,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == "dagflow-launcher"]
        assert launcher["image"]["reference"].endswith("dagflow/launcher:0.1.0")
        assert pod["spec"]["containers"][0]["command"][0] == "/dagflow/dagflow-launcher"


@pytest.fixture
def node_without_image_volumes(chart_operator: DeployedOperator) -> Iterator[None]:
    """A simulated node reporting containerd 1.6, and the operator upgraded in place so that the
    chart sees it; afterwards the node goes and the operator is upgraded back."""
    apply(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": OLD_RUNTIME_NODE,
                "labels": {"type": "kwok", "kubernetes.io/hostname": OLD_RUNTIME_NODE},
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": [{"key": "dagflow.dev/old-runtime", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "10"},
                "nodeInfo": {"containerRuntimeVersion": OLD_RUNTIME, "kubeletVersion": "fake"},
            },
        }
    )
    try:
        wait_for(
            lambda: node_ready(get_json("node", OLD_RUNTIME_NODE)),
            timeout=60,
            what=f"{OLD_RUNTIME_NODE} to be Ready",
        )
        upgrade_in_place()
        yield
    finally:
        kubectl("delete", "node", OLD_RUNTIME_NODE, "--ignore-not-found", check=False)
        upgrade_in_place()
        assert operator_delivery() == "imageVolume"


def test_where_a_node_cannot_mount_images_a_matrix_copies_its_launcher_in_an_init_container(
    node_without_image_volumes: None, real_namespace: str
) -> None:
    assert operator_delivery() == "initContainer"

    pods = runs_every_instance_with_its_value(real_namespace, "by-copy")
    for pod in pods:
        (init,) = pod["spec"]["initContainers"]
        assert init["args"] == ["install", "/dagflow/launcher"]
        (copied_by_init,) = pod["status"]["initContainerStatuses"]
        assert copied_by_init["state"]["terminated"]["exitCode"] == 0
        (launcher,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == "dagflow-launcher"]
        assert "emptyDir" in launcher
        assert pod["spec"]["containers"][0]["command"][0] == "/dagflow/launcher"
