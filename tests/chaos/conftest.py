"""The chaos drills (`make chaos`, part of `make test`): what clusters do to an operator, done to ours
while flows run. Each drill ends by checking the flows' outcome and how many Jobs were ever made per
(flow, work, run), counted by uid from a watch (tests/e2e/recorder.py); docs/reliability.md lists the
drills and their last numbers, which the session prints at its end and writes to
build/chaos-report.json.

The drills' operator runs with a 10 s watch timeout, so that a stalled API server outlasts it (and
the client's 30 s more) within a minute.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.drills import RESULTS
from tests.conftest import Cluster
from tests.e2e.conftest import delete_webhook_configurations, forget_peer
from tests.kube import REPO_ROOT, apply_crds
from tests.operator_process import OperatorProcess

WATCH_TIMEOUT_SECONDS = 10


@pytest.fixture(scope="package")
def chaos_operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    apply_crds(REPO_ROOT / "crds")
    process = OperatorProcess(
        tmp_path_factory.mktemp("chaos-operator"),
        env={"DAGFLOW_WATCH_TIMEOUT_SECONDS": str(WATCH_TIMEOUT_SECONDS)},
    )
    process.start()
    yield process
    process.stop()
    forget_peer(process.identity)
    delete_webhook_configurations()


@pytest.fixture
def operator(chaos_operator: OperatorProcess) -> OperatorProcess:
    """The drills' operator, started again if a drill left it stopped."""
    chaos_operator.ensure_running()
    return chaos_operator


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("chaos drills")
        for result in RESULTS:
            terminalreporter.write_line(result.line)
