"""`make bench-quick` in CI: the benchmark harness runs end to end and every number comes out.

It asserts that numbers were measured, never how good they are: speed is judged by `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kube import REPO_ROOT


# Its own budget: the whole quick run, Kueue's start and the queued flows included, is longer than
# the suite's per-test default.
@pytest.mark.timeout(1200)
def test_quick_benchmark_measures_every_number(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.harness", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| chain step" in result.stdout and "makespan / floor" in result.stdout
    results = json.loads(output.read_text())
    for scenario in ("chain", "concurrent"):
        step = results[scenario]["chain_step"]
        assert step["n"] > 0
        assert 0 < step["p50_s"] <= step["p99_s"]
        # Negative when the operator acts on the pod before the Job is Complete: only its presence counts.
        assert results[scenario]["job_complete_to_dependent_created"]["n"] > 0
    chain = results["chain"]
    assert chain["pods_running_s"] >= 0 and chain["pods_lifetime_s"] > 0
    assert chain["floor"]["makespan_s"] > 0 and chain["floor"]["chain_step"]["n"] == chain["works"] - 1
    assert chain["ratio_to_floor"] > 0
    for scenario in ("matrix", "bigmatrix"):
        assert results[scenario]["floor"]["makespan_s"] > 0 and results[scenario]["ratio_to_floor"] > 0
    for scenario in ("chain", "concurrent", "fanout", "matrix", "bigmatrix", "sweep"):
        timeline = json.loads((tmp_path / f"timeline-{scenario}.json").read_text())
        assert timeline["control_plane_cpu_s"]["kube-apiserver"] > 0
        assert timeline["operator"]
    assert set(results["control_plane_cpu_s"]["chain"]) == {
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
        "kwok-controller",
    }
    fanout = results["fanout"]
    assert fanout["makespan_s"] > 0 and fanout["baseline_makespan_s"] > 0 and fanout["ratio"] > 0
    assert fanout["api_requests"].get("create jobs") == fanout["works"]
    assert fanout["api_writes_per_work"] > 0
    assert results["object_size"]["status_kib"] > 0
    assert results["memory"]["jobs_tracked"] > 0 and results["memory"]["peak_rss_mib"] > 0
    assert [point["works"] for point in results["sweep"]] == [10, 50, 102]
    queueing = results["queueing"]
    for shape in ("pipeline", "single_stage"):
        for order in ("job", "flow"):
            row = queueing[f"{shape}_{order}"]
            assert len(row["makespans_s"]) == queueing["flows"]
            assert 0 < row["mean_makespan_s"] <= row["worst_makespan_s"] <= row["last_done_s"]
        assert queueing[f"{shape}_mean_ratio"] > 0
    assert "| pipeline | flow / job |" in result.stdout
    # Caching: the rerun with one changed instance runs the matrix Job of that instance and the join;
    # the cached reruns, with and without other entries, run no Job.
    cache = results["cache"]
    assert cache["makespan_s"] > 0 and cache["first_run_makespan_s"] > 0
    assert (cache["jobs_created"], cache["pods_created"], cache["matrix_job_completions"]) == (2, 2, 1)
    assert cache["first_run_jobs"] == 3 and cache["first_run_pods"] == cache["instances"] + 2
    lookups = results["cachelookup"]
    assert lookups["entries"] > 0 and lookups["jobs_created"] == 0
    assert lookups["rerun_s"] > 0 and lookups["rerun_without_entries_s"] > 0
    assert lookups["entry_lists"] >= lookups["lookups"]
    assert "| rerun with 1 of" in result.stdout and "lists of entries per lookup" in result.stdout
