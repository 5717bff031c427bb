"""Approval gates on the local cluster, with the chart's admission policies: a gate waits, an approver
decides with `dagflow approve` / `reject` under their own identity, the API server records who they
are (a name typed into the request is ignored) and refuses anyone without the approve verb, the
approver's values reach the works after the gate, and a gate nobody decides on times out."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import objects_of, render
from tests.e2e.flows import create, failing, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import VENV_BIN, apply, get_json, kubectl, service_account_kubeconfig, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

APPROVER_ROLE_SUFFIX = "-approver"
QUESTION = "Promote the best model?"


@pytest.fixture(scope="module")
def approval_policies() -> Iterator[str]:
    """The chart's approval policies and approver ClusterRole, applied; the ClusterRole's name."""
    installed = [
        obj
        for kind in (
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ClusterRole",
        )
        for obj in objects_of(render(), kind)
        if obj["metadata"]["name"].endswith(("-approvals", APPROVER_ROLE_SUFFIX))
    ]
    assert len(installed) == 5
    # Those a release of the chart installed already (the kind cluster's) stay as they are.
    missing = [
        obj
        for obj in installed
        if kubectl("get", obj["kind"].lower(), obj["metadata"]["name"], check=False).returncode != 0
    ]
    if missing:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(missing))
    yield next(obj["metadata"]["name"] for obj in installed if obj["kind"] == "ClusterRole")
    for obj in missing:
        kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")


def account(namespace: str, name: str, tmp_path: Path, cluster_role: str | None = None) -> Path:
    """A ServiceAccount that may read and patch DAGFlows (and approve, bound to `cluster_role`); its
    kubeconfig."""
    kubectl("create", "serviceaccount", name, namespace=namespace)
    editor = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": f"{name}-edits"},
        "rules": [
            {
                "apiGroups": ["dagflow.dev"],
                "resources": ["dagflows"],
                "verbs": ["get", "list", "patch", "update"],
            }
        ],
    }
    bindings = [("Role", f"{name}-edits")] + ([("ClusterRole", cluster_role)] if cluster_role else [])
    apply(
        [
            editor,
            *(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": f"{name}-{kind.lower()}"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                }
                for kind, role in bindings
            ),
        ],
        namespace=namespace,
    )
    return service_account_kubeconfig(name, namespace, tmp_path / f"{name}.kubeconfig")


def dagflow_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "dagflow"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def gated_flow(name: str, **gate: Any) -> dict[str, Any]:
    """evaluate -> promote (the gate, which sets `version`) -> deploy; `side` runs beside the gate."""
    manifest = flow(
        name,
        [
            work("evaluate"),
            work(
                "promote",
                "evaluate",
                approval={"message": QUESTION, "params": ["version"], **gate},
                container={"image": "example.invalid/ml:1.0", "args": ["promote", "$(params.version)"]},
            ),
            work(
                "deploy",
                "promote",
                container={"image": "example.invalid/ml:1.0", "args": ["$(params.version)"]},
            ),
            work(
                "side",
                "evaluate",
                container={"image": "example.invalid/ml:1.0", "args": ["$(params.version)"]},
            ),
        ],
    )
    manifest["spec"]["params"] = [{"name": "version", "default": "none"}]
    return manifest


def waiting_gate(namespace: str, name: str) -> dict[str, Any]:
    def waits() -> dict[str, Any] | None:
        gate = works_by_name(status(namespace, name)).get("promote") or {}
        return gate if gate.get("phase") == "Waiting" else None

    found: dict[str, Any] = wait_for(waits, timeout=60, what=f"the gate of {name} to wait")
    return found


def job_args(namespace: str, work_name: str, run: int = 1) -> list[str]:
    [job] = [
        job
        for job in jobs(namespace)
        if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
        and job["metadata"]["labels"]["dagflow.dev/run"] == str(run)
    ]
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
    return args


def test_an_approver_is_recorded_as_the_api_server_knows_them_and_their_values_reach_the_works_after_the_gate(
    namespace: str, running_operator: OperatorProcess, approval_policies: str, tmp_path: Path
) -> None:
    approver = account(namespace, "lead", tmp_path, approval_policies)
    editor = account(namespace, "author", tmp_path)
    create(gated_flow("gated"), namespace)
    gate = waiting_gate(namespace, "gated")
    assert (gate["reason"], gate["message"]) == ("ApprovalRequired", QUESTION)
    assert status(namespace, "gated")["phase"] == "Running"
    shown = dagflow_as(approver, "get", "gated", "-n", namespace)
    assert f"dagflow approve gated promote [-p version=VALUE] -n {namespace}" in shown.stdout, shown.stdout

    # Who may edit flows may not approve them.
    refused = dagflow_as(editor, "approve", "gated", "promote", "-p", "version=v6", "-n", namespace)
    assert refused.returncode != 0
    assert f"system:serviceaccount:{namespace}:author may not approve or reject works of DAGFlow gated" in (
        refused.stdout + refused.stderr
    )
    assert works_by_name(status(namespace, "gated"))["promote"]["phase"] == "Waiting"

    # The approver names someone else: the API server writes who sent it all the same.
    run = status(namespace, "gated")["run"]
    request = json.dumps({"run": run, "decision": "Approved", "token": "t-1", "params": {"version": "v7"}})
    forged = subprocess.run(
        [
            str(VENV_BIN / "kubectl"),
            "--kubeconfig",
            str(approver),
            "annotate",
            "dagflow",
            "gated",
            "--overwrite",
            f"approval.dagflow.dev/promote={request}",
            "approved-by.dagflow.dev/promote=somebody-else",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forged.returncode == 0, forged.stderr
    assert wait_for_phase(namespace, "gated", "Succeeded")["phase"] == "Succeeded"
    promoted = works_by_name(status(namespace, "gated"))["promote"]["approval"]
    assert (promoted["decision"], promoted["by"], promoted["params"]) == (
        "Approved",
        f"system:serviceaccount:{namespace}:lead",
        {"version": "v7"},
    )
    assert promoted["requestedAt"] <= promoted["decidedAt"]
    assert job_args(namespace, "promote") == ["promote", "v7"]
    assert job_args(namespace, "deploy") == ["v7"]
    assert job_args(namespace, "side") == ["none"]
    reasons = {
        event["reason"]
        for event in get_json("events", "--field-selector", "involvedObject.name=gated", namespace=namespace)[
            "items"
        ]
    }
    assert {"ApprovalRequired", "Approved"} <= reasons


def test_a_rejected_gate_fails_the_run_and_skips_the_works_after_it(
    namespace: str, running_operator: OperatorProcess, approval_policies: str, tmp_path: Path
) -> None:
    approver = account(namespace, "lead", tmp_path, approval_policies)
    create(gated_flow("turned-down"), namespace)
    waiting_gate(namespace, "turned-down")
    with_params = dagflow_as(
        approver, "reject", "turned-down", "promote", "-m", "score too low", "-n", namespace
    )
    assert with_params.returncode == 0, with_params.stderr
    # Asked twice: the second finds nothing waiting.
    final = wait_for_phase(namespace, "turned-down", "Failed")
    gate = works_by_name(final)["promote"]
    assert (gate["phase"], gate["reason"]) == ("Failed", "Rejected")
    assert gate["message"] == f"rejected by system:serviceaccount:{namespace}:lead: score too low"
    assert works_by_name(final)["deploy"]["phase"] == "Skipped"
    again = dagflow_as(approver, "approve", "turned-down", "promote", "-n", namespace)
    assert again.returncode != 0 and "is not waiting for approval (it is Failed)" in again.stderr


def test_a_gate_nobody_decides_on_fails_when_its_time_is_up_and_a_stop_ends_a_waiting_one(
    namespace: str, running_operator: OperatorProcess, approval_policies: str
) -> None:
    create(gated_flow("unanswered", timeoutSeconds=3), namespace)
    final = wait_for_phase(namespace, "unanswered", "Failed", timeout=60)
    gate = works_by_name(final)["promote"]
    assert (gate["phase"], gate["reason"]) == ("Failed", "ApprovalTimedOut")

    create(gated_flow("stopped"), namespace)
    waiting_gate(namespace, "stopped")
    kubectl("annotate", "dagflow", "stopped", "dagflow.dev/stop=now", "--overwrite", namespace=namespace)
    stopped = wait_for_phase(namespace, "stopped", "Stopped")
    assert works_by_name(stopped)["promote"]["phase"] == "Stopped"


def test_a_retry_keeps_an_approval_for_the_works_it_runs_again_and_asks_again_after_a_rejection(
    namespace: str, running_operator: OperatorProcess, approval_policies: str, tmp_path: Path
) -> None:
    approver = account(namespace, "lead", tmp_path, approval_policies)
    manifest = gated_flow("retried")
    deploy = next(entry for entry in manifest["spec"]["works"] if entry["name"] == "deploy")
    deploy["annotations"] = failing(in_run=1)
    create(manifest, namespace)
    waiting_gate(namespace, "retried")
    approved = dagflow_as(approver, "approve", "retried", "promote", "-p", "version=v7", "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    assert works_by_name(wait_for_phase(namespace, "retried", "Failed"))["deploy"]["phase"] == "Failed"

    # The retry carries the approved gate over and runs deploy again, with the approver's value.
    request(namespace, "retried", "retry", "again")
    second = wait_for_run(namespace, "retried", 2, "Succeeded", "Failed")
    assert second["phase"] == "Succeeded", second
    gate = works_by_name(second)["promote"]
    assert (gate["carriedFromRun"], gate["approval"]["params"]) == (1, {"version": "v7"})
    assert job_args(namespace, "deploy", run=2) == ["v7"]

    # A rejected gate is asked again in the run that retries it; the old rejection decides nothing.
    create(gated_flow("asked-again"), namespace)
    waiting_gate(namespace, "asked-again")
    rejected = dagflow_as(approver, "reject", "asked-again", "promote", "-m", "not yet", "-n", namespace)
    assert rejected.returncode == 0, rejected.stderr
    wait_for_phase(namespace, "asked-again", "Failed")
    request(namespace, "asked-again", "retry", "again")
    wait_for(lambda: status(namespace, "asked-again").get("run") == 2, timeout=60, what="run 2")
    again = waiting_gate(namespace, "asked-again")
    assert "decision" not in again["approval"]
