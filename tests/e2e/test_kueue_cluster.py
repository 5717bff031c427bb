"""The local cluster's Kueue is the real controller: it admits plain Jobs by their queue's GPU quota.

No operator here: Jobs as a user (or the operator) creates them for Kueue, suspended and labelled with
their LocalQueue, on kwok's GPU nodes. The ClusterQueue `dagflow` has 4 GPUs of the GPU pool.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube import apply, get_json, wait_for

pytestmark = [pytest.mark.local_cluster, pytest.mark.kueue]

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def gpu_job(name: str, queue: str, gpus: int, duration: str) -> dict[str, Any]:
    """A suspended Job for `queue` whose one pod asks for `gpus` GPUs and runs for `duration` (kwok)."""
    resources = {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"sim.dagflow.dev/duration": duration}},
                "spec": {
                    "restartPolicy": "Never",
                    # The GPU pool's taint, as the operator's GPU works tolerate it; the node labels
                    # come from the ResourceFlavor Kueue assigns.
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "train",
                            "image": "example/ml:1.0",
                            "resources": {"requests": resources, "limits": resources},
                        }
                    ],
                },
            },
        },
    }


def job(namespace: str, name: str) -> dict[str, Any]:
    return get_json("job", name, namespace=namespace)


def job_condition(namespace: str, name: str, kind: str) -> dict[str, Any] | None:
    conditions = job(namespace, name).get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind and c["status"] == "True"), None)


def workload_of(namespace: str, job_name: str) -> dict[str, Any] | None:
    """The Workload Kueue made for the Job (it owns it by a controller reference)."""
    workloads = get_json("workloads.kueue.x-k8s.io", namespace=namespace)["items"]
    return next(
        (
            workload
            for workload in workloads
            if any(
                owner["kind"] == "Job" and owner["name"] == job_name
                for owner in workload["metadata"].get("ownerReferences") or []
            )
        ),
        None,
    )


def workload_condition(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    conditions = workload.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def admitted(namespace: str, job_name: str) -> bool:
    workload = workload_of(namespace, job_name)
    condition = workload and workload_condition(workload, "Admitted")
    return bool(condition and condition["status"] == "True")


def pods_of(namespace: str, job_name: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = get_json("pods", "-l", f"job-name={job_name}", namespace=namespace)["items"]
    return pods


def test_a_queued_gpu_job_is_admitted_unsuspended_and_completes_on_a_gpu_node(
    namespace: str, local_queue: str
) -> None:
    apply(gpu_job("train", local_queue, gpus=2, duration="1s"), namespace=namespace)

    wait_for(lambda: admitted(namespace, "train"), timeout=30, what="Kueue to admit the Job's Workload")
    workload = workload_of(namespace, "train")
    assert workload is not None
    assignment = workload["status"]["admission"]
    assert assignment["clusterQueue"] == "dagflow"
    assert assignment["podSetAssignments"][0]["flavors"]["nvidia.com/gpu"] == "gpu"

    wait_for(lambda: job_condition(namespace, "train", "Complete"), timeout=60, what="the Job to complete")
    assert job(namespace, "train")["spec"]["suspend"] is False
    pods = pods_of(namespace, "train")
    assert pods, "the Job ran no pod"
    for pod in pods:
        # Kueue gave the pod the GPU flavor's node labels when it unsuspended the Job.
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        node = get_json("node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"].get("dagflow.dev/pool") == "gpu"
    wait_for(
        lambda: workload_condition(workload_of(namespace, "train") or {}, "Finished"),
        timeout=30,
        what="Kueue to mark the Workload Finished",
    )


def test_a_job_over_the_gpu_quota_waits_for_the_first_to_finish(namespace: str, local_queue: str) -> None:
    apply(gpu_job("first", local_queue, gpus=3, duration="10s"), namespace=namespace)
    wait_for(lambda: admitted(namespace, "first"), timeout=30, what="the first Job to be admitted")
    apply(gpu_job("second", local_queue, gpus=3, duration="1s"), namespace=namespace)

    def pending_message() -> str | None:
        workload = workload_of(namespace, "second")
        condition = workload and workload_condition(workload, "QuotaReserved")
        if condition and condition["status"] == "False" and condition["reason"] == "Pending":
            return str(condition["message"])
        return None

    message = wait_for(pending_message, timeout=30, what="Kueue to say why the second Job waits")
    assert "insufficient unused quota for nvidia.com/gpu in flavor gpu" in message, message
    # Waiting, not running: still suspended, no pod, while the first one runs.
    assert job_condition(namespace, "first", "Complete") is None, (
        "the first Job ended too soon to see the wait"
    )
    assert job(namespace, "second")["spec"]["suspend"] is True
    assert not pods_of(namespace, "second")
    assert not admitted(namespace, "second")

    wait_for(lambda: admitted(namespace, "second"), timeout=60, what="the second Job to be admitted")
    # Its quota came back only as the first one's Workload finished.
    first_done = workload_condition(workload_of(namespace, "first") or {}, "Finished")
    assert first_done and first_done["status"] == "True", (
        "the second Job was admitted before the first finished"
    )
    second = workload_of(namespace, "second")
    admitted_at = workload_condition(second or {}, "Admitted")
    assert admitted_at is not None
    assert admitted_at["lastTransitionTime"] >= first_done["lastTransitionTime"]
    wait_for(
        lambda: job_condition(namespace, "second", "Complete"), timeout=60, what="the second Job to complete"
    )
