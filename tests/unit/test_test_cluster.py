"""The tests' local cluster is never the demo's, so `make test` leaves a running `make demo` alone."""

from __future__ import annotations

import pytest

from tests.kube import REPO_ROOT, TEST_CLUSTER_NAME, local_cluster_name


def test_tests_use_a_cluster_of_their_own_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGFLOW_CLUSTER_NAME", raising=False)
    assert local_cluster_name() == TEST_CLUSTER_NAME == "dagflow-test"
    demo_script = (REPO_ROOT / "hack" / "demo.sh").read_text()
    assert 'cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"' in demo_script
    assert local_cluster_name() != "dagflow"
    monkeypatch.setenv("DAGFLOW_CLUSTER_NAME", "mine")
    assert local_cluster_name() == "mine"
