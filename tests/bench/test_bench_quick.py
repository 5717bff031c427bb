"""`make bench-quick` in CI: the benchmark harness runs end to end and every number comes out.

It asserts that numbers were measured, never how good they are: speed is judged by `make bench`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.kube import REPO_ROOT


def test_quick_benchmark_measures_every_number(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.harness", "--quick", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| dependency latency" in result.stdout
    results = json.loads(output.read_text())
    for scenario in ("chain", "concurrent"):
        latency = results[scenario]["dependency_latency"]
        assert latency["n"] > 0
        assert 0 < latency["p50_s"] <= latency["p99_s"]
    fanout = results["fanout"]
    assert fanout["makespan_s"] > 0 and fanout["baseline_makespan_s"] > 0 and fanout["ratio"] > 0
    assert fanout["api_requests"].get("create jobs") == fanout["works"]
    assert fanout["api_writes_per_work"] > 0
    assert results["object_size"]["status_kib"] > 0
    assert results["memory"]["jobs_tracked"] > 0 and results["memory"]["peak_rss_mib"] > 0
    assert [point["works"] for point in results["sweep"]] == [10, 22, 50]
