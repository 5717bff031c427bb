"""A flow deleted and made again under the same name is a new flow: it never takes over the old
flow's children, and waits for the ones whose names it needs to be removed."""

from __future__ import annotations

import pytest

from tests.e2e.flows import IMAGE, create, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.kube import apply, get_json, kubectl, paused, wait_for
from tests.operator_process import OperatorProcess

# After a pause the controller-manager first works off what piled up meanwhile (on a busy test
# cluster: the thousands of Jobs of earlier tests' deleted namespaces) before it runs new Jobs.
AFTER_PAUSE_SECONDS = 240


def stray_job(name: str, owner: dict[str, str] | None = None, finalizer: bool = False) -> dict[str, object]:
    """A Job that the operator did not make for the flow under test (labelled as if it had)."""
    metadata: dict[str, object] = {
        "name": name,
        "labels": {"app.kubernetes.io/managed-by": "dagflow-operator"},
    }
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "dagflow.dev/v1alpha1", "kind": "DAGFlow", "controller": True, **owner}
        ]
    if finalizer:
        metadata["finalizers"] = ["tests.dagflow.dev/hold"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        # Suspended: it makes no pods, so the Job controller has nothing of it in flight when the
        # flow's own Job of the same name comes.
        "spec": {
            "suspend": True,
            "template": {
                "metadata": {"annotations": {"sim.dagflow.dev/duration": "600s"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": IMAGE}]},
            },
        },
    }


@pytest.mark.local_cluster
def test_a_flow_deleted_and_applied_again_at_once_runs_every_work_anew(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("p", [work("a"), work("b", "a"), work("c", "b")])
    create(manifest, namespace)
    first = wait_for_phase(namespace, "p", timeout=60)
    assert first["phase"] == "Succeeded", first
    old_jobs = {job["metadata"]["uid"] for job in jobs(namespace)}

    with paused("kube-controller-manager"):  # the garbage collector among its controllers
        kubectl("delete", "dagflow", "p", namespace=namespace)  # background cascade, as by default
        create(manifest, namespace)

        def waiting() -> dict[str, object] | None:
            entry = works_by_name(status(namespace, "p")).get("a") or {}
            return entry if "left by a deleted flow" in str(entry.get("message")) else None

        entry = wait_for(waiting, timeout=30, what="work a to wait for the old flow's Job")
        assert entry["phase"] == "Pending", entry
        assert status(namespace, "p")["phase"] == "Running"
    new_uid = get_json("dagflow", "p", namespace=namespace)["metadata"]["uid"]
    final = wait_for_phase(namespace, "p", timeout=AFTER_PAUSE_SECONDS)
    assert final["phase"] == "Succeeded", final

    current = jobs(namespace)
    assert len(current) == 3, [job["metadata"]["name"] for job in current]
    for job in current:
        assert job["metadata"]["uid"] not in old_jobs, f"{job['metadata']['name']} is the old flow's"
        assert job["metadata"]["ownerReferences"][0]["uid"] == new_uid
    created = {job["metadata"]["name"]: job["metadata"]["creationTimestamp"] for job in current}
    for entry in final["works"]:
        assert entry["attempts"] == 1
        assert entry["finishedAt"] >= created[entry["job"]], entry


@pytest.mark.local_cluster
def test_a_name_held_by_a_deleted_flows_job_is_waited_for(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # What the garbage collector has yet to remove: a Job of a flow `held` that no longer exists.
    gone = {"name": "held", "uid": "00000000-0000-0000-0000-000000000001"}
    apply(stray_job("held-1-a", owner=gone, finalizer=True), namespace=namespace)
    kubectl("delete", "job", "held-1-a", "--wait=false", namespace=namespace)
    try:
        create(flow("held", [work("a"), work("b", "a")]), namespace)

        def waiting() -> dict[str, object] | None:
            entry = works_by_name(status(namespace, "held")).get("a") or {}
            return entry if "left by a deleted flow" in str(entry.get("message")) else None

        entry = wait_for(waiting, timeout=30, what="work a to wait for the old Job")
        assert entry["phase"] == "Pending"
        assert "Job held-1-a" in str(entry["message"])
        assert status(namespace, "held")["phase"] == "Running"
    finally:
        kubectl(
            "patch",
            "job",
            "held-1-a",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            namespace=namespace,
        )
    final = wait_for_phase(namespace, "held", timeout=60)
    assert final["phase"] == "Succeeded", final
    uid = get_json("dagflow", "held", namespace=namespace)["metadata"]["uid"]
    (job,) = [job for job in jobs(namespace) if job["metadata"]["name"] == "held-1-a"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == uid


@pytest.mark.local_cluster
def test_a_name_held_by_a_job_of_a_gone_flow_not_yet_collected_is_waited_for(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # No finalizer, not being deleted yet: the garbage collector has just not come to it.
    gone = {"name": "late", "uid": "00000000-0000-0000-0000-000000000002"}
    with paused("kube-controller-manager"):  # the garbage collector among its controllers
        apply(stray_job("late-1-a", owner=gone), namespace=namespace)
        create(flow("late", [work("a")]), namespace)

        def waiting() -> dict[str, object] | None:
            entry = works_by_name(status(namespace, "late")).get("a") or {}
            return entry if "left by a deleted flow" in str(entry.get("message")) else None

        assert wait_for(waiting, timeout=30, what="work a to wait for the old Job")["phase"] == "Pending"
    final = wait_for_phase(namespace, "late", timeout=AFTER_PAUSE_SECONDS)
    assert final["phase"] == "Succeeded", final
    uid = get_json("dagflow", "late", namespace=namespace)["metadata"]["uid"]
    assert [job["metadata"]["ownerReferences"][0]["uid"] for job in jobs(namespace)] == [uid]


def test_a_name_held_by_another_live_flow_fails_the_work(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # Flow `q-1-x` work `v` and flow `q` work `x-1-v` both want the Job `q-1-x-1-v`.
    create(flow("q-1-x", [work("v", duration="600s")]), namespace)
    wait_for(lambda: jobs(namespace), timeout=30, what="the first flow's Job")
    create(flow("q", [work("x-1-v"), work("after", "x-1-v")]), namespace)
    final = wait_for_phase(namespace, "q", timeout=60)
    assert final["phase"] == "Failed", final
    entries = works_by_name(final)
    assert "Job q-1-x-1-v already exists and belongs to DAGFlow q-1-x" in entries["x-1-v"]["message"]
    assert entries["after"]["phase"] == "Skipped"
    assert status(namespace, "q-1-x")["phase"] == "Running"
