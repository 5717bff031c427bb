"""Flows queued with the real Kueue: their Jobs wait for the GPU quota of the ClusterQueue `dagflow`
(4 GPUs, tests/cluster/kueue-queues.yaml), and the flows say so while they wait."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.flows import create, flow, jobs, status, wait_for_phase, work, works_by_name
from tests.e2e.test_matrix import matrix_work
from tests.e2e.test_runs import jobs_of_run, request, wait_for_run
from tests.kube import apply, get_json, kubectl, run_kueue_script, table_row, wait_for
from tests.operator_process import OperatorProcess

pytestmark = [pytest.mark.local_cluster, pytest.mark.kueue]

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
HELD_ANNOTATION = "dagflow.dev/held-for-flow-order"
QUOTA_MESSAGE = "insufficient unused quota for nvidia.com/gpu in flavor gpu"


def gpu_flow(name: str, queue: str, gpus: int, duration: str, **spec: Any) -> dict[str, Any]:
    """One training of `gpus` GPUs for `duration`, queued in `queue`. A flow that holds the quota
    while another is looked at runs longer than the test's waits add up to on a loaded machine, so
    that the other is still queued when it is looked at."""
    return flow(name, [work("train", duration=duration, gpu=gpus)], queueName=queue, **spec)


def wait_running(namespace: str, name: str, what: str, work_name: str = "train") -> None:
    wait_for(
        lambda: works_by_name(status(namespace, name)).get(work_name, {}).get("phase") == "Running",
        timeout=60,
        what=what,
    )


def hold_every_gpu(namespace: str, queue: str, duration: str) -> None:
    """A flow `blocker` whose training holds the queue's 4 GPUs, once it runs."""
    create(gpu_flow("blocker", queue, gpus=4, duration=duration), namespace)
    wait_running(namespace, "blocker", "the blocking flow to hold every GPU")


def workloads(namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json("workloads.kueue.x-k8s.io", namespace=namespace)["items"]
    return items


def workload_of_job(namespace: str, job_name: str) -> dict[str, Any] | None:
    return next(
        (
            workload
            for workload in workloads(namespace)
            if any(owner["name"] == job_name for owner in workload["metadata"].get("ownerReferences") or [])
        ),
        None,
    )


def queued_work(namespace: str, name: str, work_name: str = "train") -> dict[str, Any] | None:
    """The work's status entry once it waits for Kueue with Kueue's reason in its message."""
    entry = works_by_name(status(namespace, name)).get(work_name) or {}
    return entry if entry.get("reason") == "Queued" and QUOTA_MESSAGE in entry.get("message", "") else None


def patch_spec(namespace: str, name: str, spec: dict[str, Any]) -> None:
    kubectl("patch", "dagflow", name, "--type=merge", "-p", json.dumps({"spec": spec}), namespace=namespace)


def test_a_queued_flow_is_admitted_within_the_quota_and_succeeds(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    works = [work("prep", duration="1s"), work("train", "prep", duration="1s", gpu=2)]
    create(flow("ml", works, queueName=local_queue), namespace)

    final = wait_for_phase(namespace, "ml", timeout=90)
    assert final["phase"] == "Succeeded", final
    assert "queued" not in final
    assert all("reason" not in entry for entry in final["works"])
    for job in jobs(namespace):
        assert job["metadata"]["labels"][QUEUE_LABEL] == local_queue
        workload = workload_of_job(namespace, job["metadata"]["name"])
        assert workload is not None, f"Kueue made no Workload for {job['metadata']['name']}"
        assert workload["status"]["admission"]["clusterQueue"] == "dagflow"
    train = next(job for job in jobs(namespace) if job["metadata"]["name"] == "ml-1-train")
    # Kueue admitted it on what it asks for: the GPU limit is requested too.
    container = train["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"


def test_two_flows_over_the_quota_wait_in_turn_and_both_finish(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    create(gpu_flow("first", local_queue, gpus=3, duration="40s"), namespace)
    wait_running(namespace, "first", "the first flow's training to be admitted and run")
    create(gpu_flow("second", local_queue, gpus=3, duration="1s"), namespace)

    waiting = wait_for(
        lambda: queued_work(namespace, "second"), timeout=30, what="the second flow to say it is queued"
    )
    assert waiting["phase"] == "Pending" and waiting["job"] == "second-1-train"
    assert f"LocalQueue {local_queue}" in waiting["message"], waiting
    second = status(namespace, "second")
    assert second["phase"] == "Running" and second["queued"] == 1
    row = table_row(kubectl("get", "dagflows", "-o", "wide", namespace=namespace).stdout, "second")
    assert row["QUEUED"] == "1"
    # Held by Kueue, never by the operator: the Job waits suspended, without a pod.
    assert get_json("job", "second-1-train", namespace=namespace)["spec"]["suspend"] is True

    first = wait_for_phase(namespace, "first", timeout=90)
    done = wait_for_phase(namespace, "second", timeout=90)
    assert first["phase"] == done["phase"] == "Succeeded", (first, done)
    assert "queued" not in done
    train = works_by_name(done)["train"]
    assert "reason" not in train
    assert train["startedAt"] >= works_by_name(first)["train"]["finishedAt"]


def test_a_flow_stopped_while_queued_deletes_its_waiting_job(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    hold_every_gpu(namespace, local_queue, "90s")
    create(gpu_flow("waiting", local_queue, gpus=1, duration="1s"), namespace)
    wait_for(lambda: queued_work(namespace, "waiting"), timeout=30, what="the flow to be queued")

    kubectl("annotate", "dagflow", "waiting", "dagflow.dev/stop=s1", namespace=namespace)
    stopped = wait_for_phase(namespace, "waiting", "Stopped", timeout=30)
    train = works_by_name(stopped)["train"]
    assert train["phase"] == "Stopped" and "reason" not in train
    assert "queued" not in stopped
    wait_for(
        lambda: not any(job["metadata"]["name"] == "waiting-1-train" for job in jobs(namespace)),
        timeout=30,
        what="the queued Job to be deleted",
    )
    # Its Workload went with it, and the blocker runs on.
    wait_for(
        lambda: workload_of_job(namespace, "waiting-1-train") is None, timeout=30, what="its Workload to go"
    )
    assert status(namespace, "blocker")["phase"] == "Running"


def test_a_flow_suspended_while_queued_deactivates_its_workload_and_finishes_once_resumed(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    hold_every_gpu(namespace, local_queue, "40s")
    works = [work("train", duration="1s", gpu=1), work("report", "train", duration="1s")]
    create(flow("paused", works, queueName=local_queue), namespace)
    wait_for(lambda: queued_work(namespace, "paused"), timeout=30, what="the flow to be queued")

    patch_spec(namespace, "paused", {"suspend": True})

    def deactivated() -> dict[str, Any] | None:
        workload = workload_of_job(namespace, "paused-1-train")
        return workload if workload and workload["spec"].get("active") is False else None

    wait_for(deactivated, timeout=30, what="the queued Job's Workload to be deactivated")
    suspended = wait_for(
        lambda: (
            entry
            if (entry := works_by_name(status(namespace, "paused"))["train"])
            .get("message", "")
            .startswith("suspended")
            else None
        ),
        timeout=30,
        what="the work to say it is suspended",
    )
    assert suspended["phase"] == "Pending" and suspended["reason"] == "Queued"
    # The blocker finishes and frees the quota: a deactivated Workload is not admitted meanwhile.
    assert wait_for_phase(namespace, "blocker", timeout=90)["phase"] == "Succeeded"
    assert get_json("job", "paused-1-train", namespace=namespace)["spec"]["suspend"] is True
    assert works_by_name(status(namespace, "paused"))["train"]["phase"] == "Pending"

    patch_spec(namespace, "paused", {"suspend": False})
    final = wait_for_phase(namespace, "paused", timeout=90)
    assert final["phase"] == "Succeeded", final
    workload = workload_of_job(namespace, "paused-1-train")
    assert workload is not None and workload["spec"].get("active", True) is True
    assert "dagflow.dev/deactivated-for-suspend" not in (workload["metadata"].get("annotations") or {})


def test_a_flow_naming_a_missing_local_queue_is_refused_at_apply(
    namespace: str, kueue: None, running_operator: OperatorProcess
) -> None:
    manifest = gpu_flow("lost", "no-such-queue", gpus=1, duration="1s")
    result = kubectl("apply", "-f", "-", namespace=namespace, check=False, input=json.dumps(manifest))
    assert result.returncode != 0
    assert (
        "spec.queueName names LocalQueue 'no-such-queue', which does not exist in namespace "
        f"{namespace} (kubectl get localqueues -n {namespace}): create it, or name another"
    ) in result.stderr, result.stderr
    assert get_json("dagflows", namespace=namespace)["items"] == []
    # With the LocalQueue made, the same flow is taken.
    apply(
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "LocalQueue",
            "metadata": {"name": "no-such-queue"},
            "spec": {"clusterQueue": "dagflow"},
        },
        namespace=namespace,
    )
    create(manifest, namespace)
    assert wait_for_phase(namespace, "lost", timeout=90)["phase"] == "Succeeded"


@pytest.fixture
def priorities(kueue: None, namespace: str) -> Iterator[tuple[str, str]]:
    """Two WorkloadPriorityClasses (cluster-wide, so named after the test's namespace): low, high."""
    names = (f"{namespace}-low", f"{namespace}-high")
    for name, value in zip(names, (100, 1000), strict=True):
        apply(
            {
                "apiVersion": "kueue.x-k8s.io/v1beta2",
                "kind": "WorkloadPriorityClass",
                "metadata": {"name": name},
                "value": value,
            }
        )
    yield names
    kubectl("delete", "workloadpriorityclasses.kueue.x-k8s.io", *names, "--ignore-not-found", check=False)


def test_a_flow_preempted_by_a_higher_priority_flow_waits_as_preempted_then_finishes_with_no_retry_used(
    namespace: str, local_queue: str, priorities: tuple[str, str], running_operator: OperatorProcess
) -> None:
    low, high = priorities
    # No retry to spare: a preemption counted as a failed attempt would fail the flow.
    works = [work("train", duration="12s", gpu=4, retries=0)]
    create(flow("low", works, queueName=local_queue, priorityClassName=low), namespace)
    wait_running(namespace, "low", "the low-priority training to hold every GPU")
    labels = get_json("job", "low-1-train", namespace=namespace)["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/priority-class"] == low

    create(gpu_flow("high", local_queue, gpus=2, duration="4s", priorityClassName=high), namespace)

    def preempted() -> dict[str, Any] | None:
        entry = works_by_name(status(namespace, "low")).get("train") or {}
        return entry if entry.get("reason") == "Preempted" else None

    waiting = wait_for(preempted, timeout=30, what="the low-priority training to say it was preempted")
    assert waiting["phase"] == "Pending", waiting
    assert waiting["message"].startswith(f"preempted by Kueue and queued again in LocalQueue {local_queue}")
    low_status = status(namespace, "low")
    assert low_status["phase"] == "Running" and low_status["queued"] == 1
    # Kueue took the quota back by suspending the Job: it waits, without a pod, while the other runs.
    assert get_json("job", "low-1-train", namespace=namespace)["spec"]["suspend"] is True
    wait_for(
        lambda: works_by_name(status(namespace, "high")).get("train", {}).get("phase") == "Running",
        timeout=30,
        what="the high-priority training to run on the freed GPUs",
    )

    first = wait_for_phase(namespace, "high", timeout=60)
    final = wait_for_phase(namespace, "low", timeout=90)
    assert first["phase"] == final["phase"] == "Succeeded", (first, final)
    train = works_by_name(final)["train"]
    # Requeued and admitted again once the quota came back; the preemption used no attempt.
    assert "reason" not in train and "queued" not in final
    assert train["attempts"] == 1, train
    assert train["finishedAt"] >= works_by_name(first)["train"]["finishedAt"]


def test_a_queued_16_instance_matrix_runs_4_at_a_time_on_a_4_gpu_queue_and_finishes(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    seeds = [str(seed) for seed in range(16)]
    sweep = matrix_work("train", matrix={"model": seeds}, gpu=1, duration="3s")
    create(flow("sweep", [sweep], queueName=local_queue), namespace)

    def admitted() -> dict[str, Any] | None:
        workload = workload_of_job(namespace, "sweep-1-train")
        return (workload or {}).get("status", {}).get("admission")

    # One Workload for the whole matrix, admitted on the 4 GPUs there are rather than waiting for 16.
    admission = wait_for(admitted, timeout=60, what="Kueue to admit part of the matrix")
    assert admission["podSetAssignments"][0]["count"] == 4, admission
    most_running = 0

    def done() -> dict[str, Any] | None:
        nonlocal most_running
        pods = get_json("pods", "-l", "job-name=sweep-1-train", namespace=namespace)["items"]
        running = [pod for pod in pods if pod["status"].get("phase") in ("Pending", "Running")]
        most_running = max(most_running, len(running))
        # Kueue lowered the Job's parallelism to what it admitted, and it stays so: the operator
        # never sets it back.
        job = get_json("job", "sweep-1-train", namespace=namespace)
        assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (4, 16), job["spec"]
        current = status(namespace, "sweep")
        return current if current.get("phase") in ("Succeeded", "Failed") else None

    final = wait_for(done, timeout=120, interval=0.5, what="the matrix to finish")
    assert final["phase"] == "Succeeded", final
    train = works_by_name(final)["train"]
    assert train["instanceCounts"] == {"Pending": 0, "Running": 0, "Succeeded": 16, "Failed": 0, "Stopped": 0}
    assert 1 <= most_running <= 4, most_running


def started_at(namespace: str, flow_name: str, work_name: str) -> str:
    started: str = works_by_name(status(namespace, flow_name))[work_name]["startedAt"]
    return started


def run_older_and_newer_flow(namespace: str, queue: str) -> None:
    """An older flow whose second GPU stage is made only after a newer flow's first stage queued."""
    older = [work("train", duration="20s", gpu=4), work("evaluate", "train", duration="3s", gpu=4)]
    create(flow("older", older, queueName=queue), namespace)
    wait_running(namespace, "older", "the older flow's training to hold every GPU")
    create(gpu_flow("newer", queue, gpus=4, duration="3s"), namespace)
    wait_for(lambda: queued_work(namespace, "newer"), timeout=30, what="the newer flow to be queued")
    for name in ("older", "newer"):
        assert wait_for_phase(namespace, name, timeout=120)["phase"] == "Succeeded"


def test_an_older_flows_later_stage_goes_before_a_newer_flows_first_stage(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    run_older_and_newer_flow(namespace, local_queue)
    # Kueue alone would admit the newer flow's Job first: its Workload is older than the evaluation's.
    assert started_at(namespace, "older", "evaluate") < started_at(namespace, "newer", "train")
    assert "Held Workload" in running_operator.log_path.read_text()
    # Nothing is left held once the flows are done.
    for workload in workloads(namespace):
        assert HELD_ANNOTATION not in (workload["metadata"].get("annotations") or {})


@pytest.mark.usefixtures("without_shared_operator")
def test_with_queue_order_job_kueue_orders_every_job_by_its_own_creation(
    namespace: str, local_queue: str, tmp_path: Path
) -> None:
    operator = OperatorProcess(tmp_path, env={"DAGFLOW_QUEUE_ORDER": "job"})
    operator.start()
    try:
        run_older_and_newer_flow(namespace, local_queue)
    finally:
        operator.stop()
    assert started_at(namespace, "newer", "train") < started_at(namespace, "older", "evaluate")


def test_a_queued_flow_stopped_while_kueues_manager_is_down_ends_stopped(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    hold_every_gpu(namespace, local_queue, "60s")
    create(gpu_flow("waiting", local_queue, gpus=1, duration="1s"), namespace)
    wait_for(lambda: queued_work(namespace, "waiting"), timeout=30, what="the flow to be queued")
    run_kueue_script("stop")
    try:
        kubectl("annotate", "dagflow", "waiting", "dagflow.dev/stop=s1", namespace=namespace)
        stopped = wait_for_phase(namespace, "waiting", "Stopped", timeout=30)
        assert works_by_name(stopped)["train"]["phase"] == "Stopped"
        # Deleted, and never run: its Workload keeps Kueue's finalizer until the manager is back, so
        # the Job (deleted in the foreground, with its pods) waits for it, still suspended.
        job = wait_for(
            lambda: (
                (found := get_json("job", "waiting-1-train", namespace=namespace))["metadata"].get(
                    "deletionTimestamp"
                )
                and found
            ),
            timeout=30,
            what="the queued Job to be deleted",
        )
        assert job["spec"]["suspend"] is True
        assert status(namespace, "blocker")["phase"] == "Running"
        assert status(namespace, "waiting")["phase"] == "Stopped"
    finally:
        run_kueue_script("start")
    wait_for(
        lambda: not any(job["metadata"]["name"] == "waiting-1-train" for job in jobs(namespace)),
        timeout=60,
        what="the queued Job to be gone once Kueue's manager is back",
    )
    wait_for(
        lambda: workload_of_job(namespace, "waiting-1-train") is None, timeout=30, what="its Workload to go"
    )


def held_workload(namespace: str, job_name: str) -> dict[str, Any] | None:
    workload = workload_of_job(namespace, job_name)
    annotations = (workload or {}).get("metadata", {}).get("annotations") or {}
    held = workload and annotations.get(HELD_ANNOTATION) == "true" and workload["spec"].get("active") is False
    return workload if held else None


def queue_one_behind_another(namespace: str, queue: str, older: str, newer: str, blocking: str) -> None:
    """While `blocker` holds every GPU for `blocking`: flow `older` queued, then flow `newer`, whose
    Workload is held behind the older's."""
    hold_every_gpu(namespace, queue, blocking)
    create(gpu_flow(older, queue, gpus=4, duration="1s"), namespace)
    wait_for(lambda: queued_work(namespace, older), timeout=30, what=f"flow {older} to be queued")
    create(gpu_flow(newer, queue, gpus=4, duration="1s"), namespace)
    wait_for(
        lambda: held_workload(namespace, f"{newer}-1-train"),
        timeout=30,
        what=f"flow {newer}'s Workload to be held behind {older}'s",
    )
    assert held_workload(namespace, f"{older}-1-train") is None


def test_an_operator_that_stops_releases_what_it_held_and_the_next_holds_it_again(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    queue_one_behind_another(namespace, local_queue, "second", "third", "60s")
    running_operator.stop()
    try:
        # No operator runs: nothing stays held.
        workload = workload_of_job(namespace, "third-1-train")
        assert workload is not None and workload["spec"].get("active", True) is True
        assert HELD_ANNOTATION not in (workload["metadata"].get("annotations") or {})
    finally:
        running_operator.start()
    wait_for(
        lambda: held_workload(namespace, "third-1-train"),
        timeout=30,
        what="the next operator to hold it again",
    )
    for name in ("blocker", "second", "third"):
        assert wait_for_phase(namespace, name, timeout=180)["phase"] == "Succeeded"
    assert started_at(namespace, "second", "train") <= started_at(namespace, "third", "train")


def test_a_queued_cached_work_is_recorded_and_a_rerun_takes_it_from_the_cache_without_queueing(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    create(gpu_flow("cached", local_queue, gpus=1, duration="1s", cache={"enabled": True}), namespace)
    first = wait_for_phase(namespace, "cached", timeout=90)
    assert first["phase"] == "Succeeded", first
    recorded = get_json("dagflowcacheentries", namespace=namespace)["items"]
    assert [entry["spec"]["work"] for entry in recorded] == ["train"]
    request(namespace, "cached", "rerun", "again")
    done = wait_for_run(namespace, "cached", 2, "Succeeded", "Failed", timeout=30)
    assert done["phase"] == "Succeeded", done
    assert works_by_name(done)["train"]["cachedFrom"]["run"] == 1
    assert jobs_of_run(namespace, 2) == []


def test_a_newer_flow_held_behind_an_older_one_is_released_when_the_older_is_stopped(
    namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    queue_one_behind_another(namespace, local_queue, "older", "newer", "30s")
    kubectl("annotate", "dagflow", "older", "dagflow.dev/stop=s1", namespace=namespace)
    assert wait_for_phase(namespace, "older", "Stopped", timeout=30)["phase"] == "Stopped"

    def released() -> bool:
        workload = workload_of_job(namespace, "newer-1-train") or {}
        annotations = workload.get("metadata", {}).get("annotations") or {}
        return workload.get("spec", {}).get("active", True) is True and HELD_ANNOTATION not in annotations

    wait_for(released, timeout=30, what="the newer flow's Workload to be released once the older is stopped")
    assert wait_for_phase(namespace, "newer", timeout=120)["phase"] == "Succeeded"
