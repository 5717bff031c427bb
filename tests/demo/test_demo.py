"""`make demo` as a new user runs it, on the tests' own cluster: with the real node, it installs the
operator by its chart, runs the example pipeline in real containers and ends with a real prediction."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.chart.helm import helm
from tests.kube import REPO_ROOT, get_json, kubectl, local_cluster_name
from tests.real.conftest import REAL_NODE

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

DEMO_NAMESPACE = "dagflow-demo-test"
RELEASE = "dagflow"
OPERATOR_NAMESPACE = "dagflow-system"


@pytest.fixture
def demo_leaves_nothing_behind(real_node: dict[str, object]) -> Iterator[None]:
    """What the demo made in the tests' cluster goes afterwards, before other tests install their own
    operator (the demo's acts on every namespace)."""
    yield
    helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "3m", check=False)
    kubectl(
        "delete",
        "namespace",
        DEMO_NAMESPACE,
        OPERATOR_NAMESPACE,
        "--wait=true",
        "--timeout=120s",
        check=False,
    )
    kubectl(
        "delete", "persistentvolume", f"{DEMO_NAMESPACE}-ml-pipeline-data", "--ignore-not-found", check=False
    )


def test_the_demo_ends_with_a_real_prediction(demo_leaves_nothing_behind: None) -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "demo.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=1800,
        env={
            **os.environ,
            "DAGFLOW_CLUSTER_NAME": local_cluster_name(),
            "DAGFLOW_DEMO_NAMESPACE": DEMO_NAMESPACE,
        },
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Mode: real containers on node real-0" in output
    assert re.search(r'-> \{"model": "(linear|forest|gbr)", "predictions": \[-?[0-9.]+\]\}', output), output[
        -3000:
    ]

    (pod,) = get_json("pods", "-l", f"app.kubernetes.io/instance={RELEASE}", namespace=OPERATOR_NAMESPACE)[
        "items"
    ]
    assert pod["spec"]["nodeName"] == REAL_NODE
    serve_pods = get_json("pods", "-l", "dagflow.dev/work=serve", namespace=DEMO_NAMESPACE)["items"]
    assert [p["spec"]["nodeName"] for p in serve_pods] == [REAL_NODE]
