"""examples/ml-pipeline-gated.yaml on the local cluster, applied as a user applies it: the run waits
at its gate with nothing served, the cluster's admin approves it naming the model with `dagflow
approve`, the gate runs with that model, serve serves what promote reported, and the finally report is
told how the run ended."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.e2e.flows import jobs, status, wait_for_phase, works_by_name
from tests.e2e.test_approvals import approval_policies
from tests.e2e.test_examples import documents, of_kind
from tests.kube import REPO_ROOT, VENV_BIN, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

__all__ = ["approval_policies"]

pytestmark = pytest.mark.local_cluster

EXAMPLE = REPO_ROOT / "examples" / "ml-pipeline-gated.yaml"
FLOW = "ml-pipeline-gated"


def dagflow(*args: str) -> subprocess.CompletedProcess[str]:
    """The `dagflow` command as the cluster's admin runs it (the session's KUBECONFIG)."""
    return subprocess.run(
        [str(VENV_BIN / "dagflow"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def container_args(obj: dict[str, Any]) -> list[str]:
    args: list[str] = obj["spec"]["template"]["spec"]["containers"][0].get("args") or []
    return args


def job_of(namespace: str, work_name: str) -> dict[str, Any]:
    [job] = [
        job for job in jobs(namespace) if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
    ]
    return job


def after(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def test_the_gated_example_serves_the_model_its_approver_named_and_reports_the_run(
    namespace: str, running_operator: OperatorProcess, approval_policies: str
) -> None:
    docs = documents(EXAMPLE)
    [manifest] = of_kind(docs, "DAGFlow")
    question = next(work for work in manifest["spec"]["works"] if work["name"] == "promote")["approval"][
        "message"
    ]
    kubectl("apply", "-f", str(EXAMPLE), namespace=namespace)

    def waiting() -> dict[str, Any] | None:
        current = status(namespace, FLOW)
        gate = works_by_name(current).get("promote") or {}
        return current if gate.get("phase") == "Waiting" else None

    current = wait_for(waiting, timeout=120, interval=0.5, what=f"the gate of {FLOW} to wait")
    by_name = works_by_name(current)
    assert (by_name["promote"]["reason"], by_name["promote"]["message"]) == ("ApprovalRequired", question)
    assert current["phase"] == "Running"
    assert {name: by_name[name]["phase"] for name in ("process", "train", "evaluate")} == dict.fromkeys(
        ("process", "train", "evaluate"), "Succeeded"
    )
    # Nothing is promoted or served before someone decides, and the report waits for the end.
    assert by_name["serve"]["phase"] == "Pending" and by_name["report"]["phase"] == "Pending"
    assert {job["metadata"]["annotations"]["dagflow.dev/work-name"] for job in jobs(namespace)} == {
        "process",
        "train",
        "evaluate",
    }
    assert not get_json("deployments", namespace=namespace)["items"]

    shown = dagflow("get", FLOW, "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    assert f"dagflow approve {FLOW} promote [-p model=VALUE] -n {namespace}" in shown.stdout, shown.stdout

    approved = dagflow("approve", FLOW, "promote", "-p", "model=forest", "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    admin = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()

    final = wait_for_phase(namespace, FLOW, timeout=180)
    by_name = works_by_name(final)
    assert final["phase"] == "Serving", final.get("message")
    assert {name: entry["phase"] for name, entry in by_name.items()} == {
        "process": "Succeeded",
        "train": "Succeeded",
        "evaluate": "Succeeded",
        "promote": "Succeeded",
        "serve": "Serving",
        "report": "Succeeded",
    }
    decision = by_name["promote"]["approval"]
    assert (decision["decision"], decision["by"], decision["params"]) == (
        "Approved",
        admin,
        {"model": "forest"},
    )

    # The gate ran with the approver's model, and evaluate's best beside it.
    promote_args = container_args(job_of(namespace, "promote"))
    assert "--chosen=forest" in promote_args
    assert after(promote_args, "--best") == by_name["evaluate"]["outputs"]["model"]

    # serve serves what promote reported (a simulated pod cannot report the approver's choice: the
    # example's annotation stands in for it).
    promoted = by_name["promote"]["outputs"]["model"]
    deployment = get_json("deployment", f"{FLOW}-serve", namespace=namespace)
    assert after(container_args(deployment), "--model") == promoted
    assert final["endpoint"] == f"http://{FLOW}-serve.{namespace}.svc:8080"

    # The finally report ran after the works, told the run's number, how it ended, and the model.
    assert by_name["report"]["finally"] is True
    report_args = container_args(job_of(namespace, "report"))
    assert after(report_args, "--run") == str(final["run"])
    assert after(report_args, "--phase") == "Serving"
    assert after(report_args, "--failed-works") == "[]"
    assert f"--model={promoted}" in report_args

    # The run did not fail: nothing is posted, with or without the team's Secret.
    assert not final.get("notifications")
