"""The operator as a user runs it: its own process (`dagflow-operator`) against the local cluster.

`make e2e-kind` points the suite at a kind cluster instead (DAGFLOW_TEST_CLUSTER=external) and at the
operator a Helm release runs there (DAGFLOW_TEST_OPERATOR=<namespace>/<release>). Works run in real
containers there; `make e2e-kind` leaves out (`-m 'not local_cluster'`) the tests marked
`local_cluster`, which steer kwok's simulated pods or run their own operator process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.conftest import Cluster
from tests.kube import REPO_ROOT, apply_crds, kubectl
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
