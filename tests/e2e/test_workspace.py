"""A workspace per run (spec.workspace) on the local cluster: a claim per run, provisioned by the
cluster's default StorageClass and mounted by every work, shared by a retry, deleted when the run
leaves the history or the flow goes, and waited for when a re-created flow finds the old one's."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.flows import create, failing, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import get_json, kubectl, paused, wait_for
from tests.operator_process import OperatorProcess

WORKSPACE = {"size": "1Gi", "accessModes": ["ReadWriteMany"]}
# The garbage collector may need a while after the pause to catch up with what it missed.
AFTER_PAUSE_SECONDS = 120


def claims(namespace: str) -> dict[str, dict[str, Any]]:
    listed = get_json("persistentvolumeclaims", namespace=namespace)["items"]
    return {claim["metadata"]["name"]: claim for claim in listed}


def workspace_mounts(job: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The workspace's volumes and the container's mounts of it, in a Job's pod template."""
    pod = job["spec"]["template"]["spec"]
    volumes = [volume for volume in pod.get("volumes", []) if volume["name"] == "dagflow-workspace"]
    mounts = [m for m in pod["containers"][0].get("volumeMounts", []) if m["name"] == "dagflow-workspace"]
    return volumes, mounts


def job_of(namespace: str, work_name: str, run: int) -> dict[str, Any]:
    [job] = [
        job
        for job in jobs(namespace)
        if job["metadata"]["annotations"]["dagflow.dev/work-name"] == work_name
        and job["metadata"]["labels"]["dagflow.dev/run"] == str(run)
    ]
    return job


def gone(namespace: str, claim: str) -> bool:
    found = claims(namespace).get(claim)
    return found is None or found["metadata"].get("deletionTimestamp") is not None


@pytest.mark.local_cluster
def test_every_work_of_a_run_mounts_its_own_provisioned_claim(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [
        work("process", duration="1s"),
        work(
            "train",
            "process",
            duration="1s",
            gpu=1,
            matrix={"model": ["a", "b"]},
            container={"image": "example.invalid/ml:1.0", "command": ["train", "$(matrix.model)"]},
            workspace={"subPath": "models"},
        ),
        work("report", "train", workspace={"readOnly": True}),
        work("notes", "process", workspace={"mount": False}),
    ]
    create(flow("ws", works, workspace=WORKSPACE), namespace)
    final = wait_for_phase(namespace, "ws", timeout=120)
    assert final["phase"] == "Succeeded", final
    assert final["workspaceClaim"] == "ws-1-workspace"
    assert final["runs"][0]["workspaceClaim"] == "ws-1-workspace"

    claim = claims(namespace)["ws-1-workspace"]
    uid = get_json("dagflow", "ws", namespace=namespace)["metadata"]["uid"]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == uid
    assert claim["metadata"]["labels"]["dagflow.dev/run"] == "1"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # Provisioned by the cluster's default class, on the node of the first pod that used it.
    assert claim["status"]["phase"] == "Bound", claim["status"]
    assert claim["spec"]["storageClassName"]

    expected_volume = [
        {"name": "dagflow-workspace", "persistentVolumeClaim": {"claimName": "ws-1-workspace"}}
    ]
    mounts = {
        name: workspace_mounts(job_of(namespace, name, 1)) for name in ("process", "train", "report", "notes")
    }
    assert mounts["process"] == (expected_volume, [{"name": "dagflow-workspace", "mountPath": "/workspace"}])
    assert mounts["train"][1] == [
        {"name": "dagflow-workspace", "mountPath": "/workspace", "subPath": "models"}
    ]
    assert mounts["report"][1] == [{"name": "dagflow-workspace", "mountPath": "/workspace", "readOnly": True}]
    assert mounts["notes"] == ([], [])


@pytest.mark.local_cluster
def test_a_retry_shares_the_retried_run_s_claim_and_the_history_lets_old_claims_go(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("a"), work("b", "a", annotations=failing(in_run=1))]
    create(flow("hist", works, workspace=WORKSPACE, historyRuns=1), namespace)
    failed = wait_for_phase(namespace, "hist", timeout=90)
    assert failed["phase"] == "Failed", failed
    assert set(claims(namespace)) == {"hist-1-workspace"}

    # The retry runs b again in run 2, beside a's files of run 1: the same claim, and no other.
    request(namespace, "hist", "retry", "t1")
    retried = wait_for_run(namespace, "hist", 2, "Succeeded")
    assert retried["workspaceClaim"] == "hist-1-workspace"
    assert works_by_name(retried)["a"]["carriedFromRun"] == 1
    assert (
        workspace_mounts(job_of(namespace, "b", 2))[0][0]["persistentVolumeClaim"]["claimName"]
        == "hist-1-workspace"
    )
    assert set(claims(namespace)) == {"hist-1-workspace"}

    # A rerun is a run of its own: a new claim, and with one run kept, run 1's claim goes.
    request(namespace, "hist", "rerun", "r1")
    rerun = wait_for_run(namespace, "hist", 3, "Succeeded")
    assert rerun["workspaceClaim"] == "hist-3-workspace"
    assert [summary.get("workspaceClaim") for summary in rerun["runs"]] == ["hist-3-workspace"]
    wait_for(lambda: gone(namespace, "hist-1-workspace"), timeout=60, what="run 1's claim to be deleted")
    assert claims(namespace)["hist-3-workspace"]["status"]["phase"] == "Bound"


@pytest.mark.local_cluster
def test_a_new_spec_gets_a_new_claim_while_the_history_keeps_the_old_one(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("edit", [work("a", duration="20s")], workspace=WORKSPACE), namespace)
    wait_for(
        lambda: works_by_name(status(namespace, "edit")).get("a", {}).get("phase") == "Running",
        timeout=60,
        what="a to run",
    )
    # Mid-run, a bigger workspace: run 2 starts with a claim of its own.
    kubectl(
        "patch",
        "dagflow",
        "edit",
        "--type=merge",
        "-p",
        '{"spec": {"workspace": {"size": "2Gi"}}}',
        namespace=namespace,
    )
    wait_for(lambda: status(namespace, "edit").get("run") == 2, timeout=60, what="run 2 to begin")
    wait_for(lambda: "edit-2-workspace" in claims(namespace), timeout=60, what="run 2's claim")
    assert claims(namespace)["edit-2-workspace"]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert not gone(namespace, "edit-1-workspace")  # the default history keeps run 1


@pytest.mark.local_cluster
def test_deleting_the_flow_deletes_its_claims_and_a_flow_made_again_waits_for_the_old_one(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("again", [work("a"), work("b", "a")], workspace=WORKSPACE)
    create(manifest, namespace)
    assert wait_for_phase(namespace, "again", timeout=90)["phase"] == "Succeeded"
    old_claim_uid = claims(namespace)["again-1-workspace"]["metadata"]["uid"]

    with paused("kube-controller-manager"):  # the garbage collector among its controllers
        kubectl("delete", "dagflow", "again", namespace=namespace)
        create(manifest, namespace)

        def waiting() -> dict[str, Any] | None:
            entry = works_by_name(status(namespace, "again")).get("a") or {}
            return entry if "PersistentVolumeClaim again-1-workspace" in str(entry.get("message")) else None

        entry = wait_for(waiting, timeout=30, what="work a to wait for the old flow's claim")
        assert entry["phase"] == "Pending", entry
        assert "left by a deleted flow" in entry["message"], entry
    final = wait_for_phase(namespace, "again", timeout=AFTER_PAUSE_SECONDS)
    assert final["phase"] == "Succeeded", final
    claim = claims(namespace)["again-1-workspace"]
    assert claim["metadata"]["uid"] != old_claim_uid
    new_uid = get_json("dagflow", "again", namespace=namespace)["metadata"]["uid"]
    assert claim["metadata"]["ownerReferences"][0]["uid"] == new_uid

    kubectl("delete", "dagflow", "again", namespace=namespace)
    wait_for(lambda: not claims(namespace), timeout=90, what="the flow's claims to be deleted with it")
