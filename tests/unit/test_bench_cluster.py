"""Which cluster `make bench` uses: its own, never the tests' or the demo's."""

from __future__ import annotations

import pytest
from bench.harness import bench_cluster_name


def test_the_bench_uses_its_own_cluster_named_after_the_chosen_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGFLOW_BENCH_CLUSTER_NAME", raising=False)
    monkeypatch.delenv("DAGFLOW_CLUSTER_NAME", raising=False)
    assert bench_cluster_name() == "bench"
    # Made with an audit log, it must not be the tests' own cluster, which would be made anew.
    monkeypatch.setenv("DAGFLOW_CLUSTER_NAME", "dagflow-perf")
    assert bench_cluster_name() == "dagflow-perf-bench"
    monkeypatch.setenv("DAGFLOW_BENCH_CLUSTER_NAME", "mine")
    assert bench_cluster_name() == "mine"
