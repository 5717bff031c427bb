"""The operator as a user runs it: its own process (`dagflow-operator`) against the local cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Cluster
from tests.kube import REPO_ROOT, apply_crds, kubectl
from tests.operator_process import OperatorProcess


# Package scope: the operator stops after the end-to-end tests, so it never reconciles the flows that
# other tests write by hand.
@pytest.fixture(scope="package")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(REPO_ROOT / "crds")
    process = OperatorProcess(tmp_path_factory.mktemp("operator"))
    process.start()
    yield process
    process.stop()
    kubectl(
        "delete",
        "validatingwebhookconfiguration,mutatingwebhookconfiguration",
        "dagflow.dev",
        "--ignore-not-found",
        check=False,
    )


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, started again if an earlier test left it stopped."""
    if operator.process is None:
        operator.start()
    return operator
