"""Pytest wiring for the local cluster.

Tests under tests/integration, tests/e2e, tests/chaos and tests/browser need the local Kubernetes
cluster, and so does any test marked `cluster` elsewhere (tests/sim/test_contract.py: the rest of
tests/sim runs without one). The session reuses a running one or starts its own and removes it at
the end. Its cluster is `dagflow-test` unless DAGFLOW_CLUSTER_NAME names another: never the demo's
(`dagflow`), so `make test` leaves a running `make demo` alone, and the tests' operator never acts
beside the demo's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kube import REPO_ROOT, kubectl, run_cluster_script

CLUSTER_TEST_DIRS = ("integration", "e2e", "chaos", "real", "demo", "browser")


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    started_here: bool


def _kubeconfig_from(export_line: str) -> Path:
    return Path(export_line.strip().splitlines()[-1].removeprefix("export KUBECONFIG="))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT).parts
        if len(parts) > 1 and parts[0] == "tests" and parts[1] in CLUSTER_TEST_DIRS:
            item.add_marker(pytest.mark.cluster)
        if item.get_closest_marker("cluster") and isinstance(item, pytest.Function):
            item.fixturenames.insert(0, "cluster")
    # The tests on kind go first (their cluster is their own; KUBECONFIG points at it only while
    # they run), then those on the real node: the operator they install by its chart acts on every
    # namespace, and is gone before the tests that run their own operator process start. Tests that
    # stop the shared cluster go last, so nothing else runs while it restarts.
    items.sort(
        key=lambda item: (
            item.get_closest_marker("kind") is None,
            item.get_closest_marker("real") is None,
            item.get_closest_marker("disruptive") is not None,
        )
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local cluster, with KUBECONFIG pointing at it for the whole session.

    DAGFLOW_TEST_CLUSTER=external: the cluster of $KUBECONFIG as it is (kind, for `make e2e-kind`),
    neither started nor stopped here.
    """
    if os.environ.get("DAGFLOW_TEST_CLUSTER") == "external":
        kubeconfig = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
        reachable = kubectl("get", "--raw", "/readyz", check=False)
        if reachable.returncode != 0:
            pytest.fail(f"The cluster of {kubeconfig} does not answer:\n{reachable.stderr}", pytrace=False)
        yield Cluster(kubeconfig=kubeconfig, started_here=False)
        return
    running = run_cluster_script("status", check=False).returncode == 0
    # `up` on a running cluster starts its real node too (moving it from another local cluster, such as
    # the demo's, which gets it back when this session removes its cluster).
    result = run_cluster_script("up", check=False)
    if result.returncode != 0:
        pytest.fail(f"The local cluster did not start:\n{result.stderr}", pytrace=False)
    kubeconfig = _kubeconfig_from(result.stdout)
    os.environ["KUBECONFIG"] = str(kubeconfig)
    yield Cluster(kubeconfig=kubeconfig, started_here=not running)
    if not running and not os.environ.get("DAGFLOW_KEEP_CLUSTER"):
        run_cluster_script("down", check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards without waiting."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    kubectl(
        "wait",
        "--for=jsonpath={.metadata.name}=default",
        "serviceaccount/default",
        "--timeout=30s",
        namespace=name,
        check=False,
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
