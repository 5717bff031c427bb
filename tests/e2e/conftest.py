"""The operator as a user runs it: its own process (`dagflow-operator`) against the local cluster.

`make e2e-kind` points the suite at a kind cluster instead (DAGFLOW_TEST_CLUSTER=external) and at the
operator a Helm release runs there (DAGFLOW_TEST_OPERATOR=<namespace>/<release>). Works run in real
containers there, and the flows' fake image is never pulled; `make e2e-kind` leaves out
(`-m 'not local_cluster'`) the tests marked `local_cluster`, which need kwok's simulated pods to run,
succeed or fail, or run their own operator process. The others need the API server, the webhook, the
chart's policy, or the operator acting on works whose pods never have to finish, and run on both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.conftest import Cluster
from tests.kube import REPO_ROOT, apply, apply_crds, get_json, kubectl, run_kueue_script, wait_for
from tests.operator_process import DeployedOperator, OperatorProcess


# Package scope: the operator stops after the end-to-end tests, so it never reconciles the flows that
# other tests write by hand.
@pytest.fixture(scope="package")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess | DeployedOperator]:
    deployed = os.environ.get("DAGFLOW_TEST_OPERATOR")
    if deployed:
        namespace, _, release = deployed.partition("/")
        release_operator = DeployedOperator(namespace, release)
        release_operator.ensure_running()
        yield release_operator
        return
    apply_crds(REPO_ROOT / "crds")
    process = OperatorProcess(tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()
    delete_webhook_configurations()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, started again if an earlier test left it stopped."""
    operator.ensure_running()
    return operator


@pytest.fixture
def without_shared_operator(operator: OperatorProcess) -> Iterator[None]:
    """The session's operator stops (and its webhook configurations go) while a test runs its own."""
    operator.stop()
    delete_webhook_configurations()
    yield
    operator.start()


# Module scope: Kueue's webhooks see every Job created while it runs, so the other tests go on
# without it unless the cluster was started with it (DAGFLOW_KUEUE=1).
@pytest.fixture(scope="module")
def kueue(cluster: Cluster) -> Iterator[None]:
    """Kueue's real manager on the local cluster, with its ClusterQueue `dagflow` (tests/cluster/
    kueue-queues.yaml), started here unless it runs already."""
    if os.environ.get("DAGFLOW_TEST_CLUSTER") == "external":
        # The tests that use it are marked local_cluster, which `make e2e-kind` leaves out.
        pytest.fail("Kueue is started on the local cluster only, not on an external one", pytrace=False)
    running = run_kueue_script("status", check=False).returncode == 0
    result = run_kueue_script("up", check=False)
    if result.returncode != 0:
        pytest.fail(f"Kueue did not start:\n{result.stderr}", pytrace=False)
    yield
    if not running and os.environ.get("DAGFLOW_KUEUE") != "1":
        run_kueue_script("down", check=False)


@pytest.fixture
def local_queue(kueue: None, namespace: str) -> Iterator[str]:
    """A LocalQueue `default` in the test's namespace, feeding the ClusterQueue `dagflow`; its name.

    The ClusterQueue's quota is shared by every test's namespace, and a namespace is deleted without
    waiting: a flow left running would hold GPUs into the next test. So the test's flows and Jobs go
    first, and the test ends once Kueue has let go of all of its Workloads."""
    apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "default"},
            "spec": {"clusterQueue": "dagflow"},
        },
        namespace=namespace,
    )
    yield "default"
    kubectl("delete", "dagflows,jobs", "--all", "--wait=false", namespace=namespace, check=False)
    wait_for(
        lambda: not get_json("workloads.kueue.x-k8s.io", namespace=namespace)["items"],
        timeout=120,
        what=f"Kueue to release the Workloads of namespace {namespace}",
    )


def delete_webhook_configurations() -> None:
    kubectl(
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "dagflow.dev",
        "--ignore-not-found",
        check=False,
    )


def forget_peer(identity: str, peering: str = "dagflow") -> None:
    """Remove an operator's keep-alive that it could not remove itself (its API server was gone when
    it stopped), so that the next operator does not stand by until it expires."""
    kubectl(
        "patch",
        "clusterkopfpeering",
        peering,
        "--type=merge",
        "-p",
        json.dumps({"status": {identity: None}}),
        check=False,
    )
