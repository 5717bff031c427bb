"""`make demo` as a new user runs it, on the tests' own cluster: with the real node, it installs the
operator by its chart, runs the example pipeline in real containers and ends with a real prediction;
without it, it runs the simulated demo and says why."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chart.helm import helm
from tests.conftest import Cluster
from tests.kube import REPO_ROOT, get_json, kubectl, local_cluster_name, wait_for
from tests.real.conftest import REAL_NODE

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

DEMO_NAMESPACE = "dagflow-demo-test"
RELEASE = "dagflow"
OPERATOR_NAMESPACE = "dagflow-system"


def run_demo(namespace: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`make demo` (hack/demo.sh up) on the tests' cluster, in a namespace of its own."""
    return subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "demo.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=1800,
        env={
            **os.environ,
            "DAGFLOW_CLUSTER_NAME": local_cluster_name(),
            "DAGFLOW_DEMO_NAMESPACE": namespace,
            **settings,
        },
        check=False,
    )


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


def test_the_demo_ends_with_a_real_prediction_every_time(demo_leaves_nothing_behind: None) -> None:
    # The second time reuses the cluster, the images and the release, and runs the flow from the start.
    for attempt in ("first", "second"):
        result = run_demo(DEMO_NAMESPACE)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{attempt} run:\n{output[-5000:]}"
        assert "Mode: real containers on node real-0" in output
        prediction = re.search(r'-> \{"model": "(linear|forest|gbr)", "predictions": \[-?[0-9.]+\]\}', output)
        assert prediction, f"{attempt} run:\n{output[-3000:]}"

    (pod,) = get_json("pods", "-l", f"app.kubernetes.io/instance={RELEASE}", namespace=OPERATOR_NAMESPACE)[
        "items"
    ]
    assert pod["spec"]["nodeName"] == REAL_NODE
    serve_pods = get_json("pods", "-l", "dagflow.dev/work=serve", namespace=DEMO_NAMESPACE)["items"]
    serving = [p for p in serve_pods if "deletionTimestamp" not in p["metadata"]]
    assert [p["spec"]["nodeName"] for p in serving] == [REAL_NODE]


@pytest.fixture
def simulated_demo_stops_afterwards(cluster: Cluster) -> Iterator[str]:
    """The namespace of a simulated demo; its operator process is stopped afterwards (SIGTERM: it
    removes its webhook configuration on the way out) and its namespace deleted."""
    namespace = "dagflow-demo-sim-test"
    yield namespace
    cache = Path(os.environ.get("DAGFLOW_CACHE") or Path.home() / ".cache" / "dagflow")
    pid_file = cache / "demo" / local_cluster_name() / "operator.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=60, what="the demo's operator to stop")
        pid_file.unlink()
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", check=False)


def test_without_the_real_node_the_demo_runs_simulated_and_says_why(
    simulated_demo_stops_afterwards: str,
) -> None:
    namespace = simulated_demo_stops_afterwards
    result = run_demo(namespace, DAGFLOW_REAL_NODE="0")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "Mode: simulated (DAGFLOW_REAL_NODE=0)" in output
    assert "make run-examples" in output
    nodes = {pod["spec"]["nodeName"] for pod in get_json("pods", namespace=namespace)["items"]}
    assert nodes and REAL_NODE not in nodes, nodes
