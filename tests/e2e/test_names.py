"""Long flow and work names: every child name stays valid, including the host names of Job pods."""

from __future__ import annotations

import pytest

from tests.e2e.flows import create, flow, jobs, wait_for_phase, work, works_by_name
from tests.kube import apply, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster


def test_a_long_flow_and_work_name_succeeds(namespace: str, running_operator: OperatorProcess) -> None:
    # `customer-churn-nightly-retraining-pipeline-1-feature-engineering` has 64 characters.
    create(flow("customer-churn-nightly-retraining-pipeline", [work("feature-engineering")]), namespace)
    final = wait_for_phase(namespace, "customer-churn-nightly-retraining-pipeline", timeout=60)
    assert final["phase"] == "Succeeded", final
    (job,) = jobs(namespace)
    assert job["metadata"]["name"] == works_by_name(final)["feature-engineering"]["job"]
    assert len(job["metadata"]["name"]) + len("-0") <= 63


def test_a_flow_named_with_80_characters_runs_and_serves(
    namespace: str, running_operator: OperatorProcess
) -> None:
    name = "nightly-" + "x" * 60 + "-pipeline-v1"
    assert len(name) == 80
    create(flow(name, [work("train"), work("serve", "train", serve={"port": 8080})]), namespace)
    final = wait_for_phase(namespace, name, timeout=60)
    assert final["phase"] == "Serving", final
    assert final["progress"] == "2/2"


def test_every_run_of_a_long_named_flow_succeeds(namespace: str, running_operator: OperatorProcess) -> None:
    # Runs 10 and above make `{flow}-{run}-{work}` 62 characters long: a valid Job name whose pods'
    # host names `{job}-0` would not be.
    name = "recsys-weekly-model-refresh-pipeline"
    manifest = flow(name, [work("evaluate-candidates-v2")])
    for run in range(1, 13):
        manifest["spec"]["works"][0]["container"]["args"] = ["--edit", str(run)]
        apply(manifest, namespace=namespace)

        def succeeded(run: int = run) -> bool:
            current = wait_for_phase(namespace, name, timeout=60)
            return current.get("run") == run and current["phase"] == "Succeeded"

        wait_for(succeeded, timeout=60, what=f"run {run} to succeed")
    names = sorted(job["metadata"]["name"] for job in jobs(namespace))
    assert all(len(job) <= 57 for job in names), names
