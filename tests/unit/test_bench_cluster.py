"""Which cluster and which operator settings `make bench` uses."""

from __future__ import annotations

import pytest
from bench.harness import bench_cluster_name, operator_settings


def test_the_bench_uses_its_own_cluster_named_after_the_chosen_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGFLOW_BENCH_CLUSTER_NAME", raising=False)
    monkeypatch.delenv("DAGFLOW_CLUSTER_NAME", raising=False)
    assert bench_cluster_name() == "bench"
    # Made with an audit log, it must not be the tests' own cluster, which would be made anew.
    monkeypatch.setenv("DAGFLOW_CLUSTER_NAME", "dagflow-perf")
    assert bench_cluster_name() == "dagflow-perf-bench"
    monkeypatch.setenv("DAGFLOW_BENCH_CLUSTER_NAME", "mine")
    assert bench_cluster_name() == "mine"


def test_the_bench_runs_matrix_pods_without_init_container_unless_told() -> None:
    assert operator_settings([])["DAGFLOW_LAUNCHER_DELIVERY"] == "imageVolume"
    given = operator_settings(["DAGFLOW_LAUNCHER_DELIVERY=initContainer", "DAGFLOW_API_CONCURRENCY=32"])
    assert given == {"DAGFLOW_LAUNCHER_DELIVERY": "initContainer", "DAGFLOW_API_CONCURRENCY": "32"}
