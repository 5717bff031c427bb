"""The local cluster's real node `real-0` (kubelet and containerd on this machine), its images
imported without a registry, and the operator installed on it by its chart.

The tests here run real containers. They need the real node that `tests/cluster/cluster.sh up` starts
where the machine can run one. Without it they fail; `-m 'not real'` leaves them out.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.helm import CHART_DIR, helm
from tests.conftest import Cluster
from tests.kube import REPO_ROOT, get_json, kubectl, run_cluster_script, wait_for
from tests.operator_process import DeployedOperator

REAL_NODE = "real-0"
REAL_POOL = "dagflow.dev/pool=real"
IMAGES_SCRIPT = REPO_ROOT / "images" / "build-local.sh"
REAL_NODE_VALUES = REPO_ROOT / "hack" / "real-node-values.yaml"
EXAMPLES_IMAGE = "dagflow/examples:0.1.0"
OPERATOR_NAMESPACE = "dagflow-real-system"
RELEASE = "dagflow-real"
# Where local PersistentVolumes of the real node keep their files.


def node_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


@pytest.fixture(scope="package")
def real_node(cluster: Cluster) -> dict[str, Any]:
    """The Node `real-0`, Ready. Without it (a machine that cannot run one, or DAGFLOW_REAL_NODE=0)
    these tests fail, saying how to leave them out: `make test PYTEST_ARGS="-m 'not real'"`."""

    def ready() -> dict[str, Any] | None:
        found = kubectl("get", "node", REAL_NODE, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        node: dict[str, Any] = get_json("node", REAL_NODE)
        return node if node_ready(node) else None

    try:
        node: dict[str, Any] = wait_for(ready, timeout=120, what=f"node {REAL_NODE} to be Ready")
    except AssertionError:
        status = subprocess.run(
            ["bash", str(REPO_ROOT / "tests" / "cluster" / "real-node.sh"), "status"],
            capture_output=True,
            text=True,
            check=False,
        )
        pytest.fail(
            f"The local cluster has no Ready node {REAL_NODE} (DAGFLOW_REAL_NODE="
            f"{os.environ.get('DAGFLOW_REAL_NODE', 'unset')}); to run the suite without the tests "
            f"that need it: make test PYTEST_ARGS=\"-m 'not real'\"\n{status.stdout}{status.stderr}"
            f"\n{run_cluster_script('env', check=False).stdout}",
            pytrace=False,
        )
    return node


@pytest.fixture(scope="package")
def images(real_node: dict[str, Any]) -> None:
    """The operator's and the examples' images, built from their Dockerfiles and imported into the
    real node's containerd (no registry)."""
    for command in ("build", "import"):
        result = subprocess.run(
            ["bash", str(IMAGES_SCRIPT), command], capture_output=True, text=True, timeout=3600, check=False
        )
        assert result.returncode == 0, f"{IMAGES_SCRIPT.name} {command} failed:\n{result.stderr}"


def image_id(name: str) -> str:
    """The ID of the image built for `name` (operator, launcher, examples), as containerd will know it."""
    result = subprocess.run(
        ["bash", str(IMAGES_SCRIPT), "id", name], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture(scope="package")
def chart_operator(images: None) -> Iterator[DeployedOperator]:
    """The operator as a user installs it: `helm install` of the chart, into a namespace that enforces
    the `restricted` Pod Security Standard, its pod on the real node."""
    kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    kubectl(
        "label",
        "namespace",
        OPERATOR_NAMESPACE,
        "--overwrite",
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--values",
        str(REAL_NODE_VALUES),
        # A release left by an earlier session rolls its pod when the image was rebuilt under its tag.
        "--set-string",
        f"podAnnotations.dagflow\\.dev/image-id={image_id('operator')}",
        # The dashboard too (tests/real/test_dashboard_in_cluster.py).
        "--set",
        "ui.enabled=true",
        "--wait",
        "--timeout",
        "5m",
        timeout=400,
    )
    yield DeployedOperator(OPERATOR_NAMESPACE, RELEASE)
    helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "3m", check=False)
    kubectl("delete", "namespace", OPERATOR_NAMESPACE, "--wait=true", "--timeout=120s", check=False)


def send_pods_to_the_real_node(namespace: str) -> None:
    """Every pod of `namespace` runs on the real node: the API server's PodNodeSelector and
    PodTolerationRestriction admission plugins add the node's label and toleration to each of them."""
    kubectl(
        "annotate",
        "namespace",
        namespace,
        f"scheduler.alpha.kubernetes.io/node-selector={REAL_POOL}",
        'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key": "dagflow.dev/pool", "operator": '
        '"Equal", "value": "real", "effect": "NoSchedule"}]',
    )


@pytest.fixture
def real_namespace(namespace: str, chart_operator: DeployedOperator) -> str:
    """A fresh namespace whose pods all run on the real node, with the chart's operator installed."""
    send_pods_to_the_real_node(namespace)
    return namespace


@pytest.fixture
def real_node_namespace(namespace: str, real_node: dict[str, Any]) -> str:
    """A fresh namespace whose pods all run on the real node, without the operator (plain pods)."""
    send_pods_to_the_real_node(namespace)
    return namespace
