"""Which waiting Workloads are held so that flows keep their place in a Kueue ClusterQueue."""

from __future__ import annotations

from dagflow.controller.queueing import WorkloadObservation
from dagflow.controller.queueorder import QueuedFlow, QueuedJob, WorkloadChange, order_changes

GPU = frozenset({"cpu", "memory", "nvidia.com/gpu"})
CPU_ONLY = frozenset({"cpu", "memory"})


def workload(name: str, **fields: object) -> WorkloadObservation:
    values: dict[str, object] = {
        "name": name,
        "job_uid": f"uid-{name}",
        "active": True,
        "admitted": False,
        "message": "couldn't assign flavors: insufficient unused quota for nvidia.com/gpu in flavor gpu",
        "preempted": False,
        "deactivated_by_operator": False,
        **fields,
    }
    return WorkloadObservation(**values)  # type: ignore[arg-type]


def job(name: str | None, priority: int = 0, resources: frozenset[str] = GPU, **fields: object) -> QueuedJob:
    return QueuedJob(f"uid-{name}", priority, resources, workload(name, **fields) if name else None)


def flow(
    name: str, started: str, *jobs: QueuedJob, queue: str = "gpus", suspended: bool = False
) -> QueuedFlow:
    return QueuedFlow(("ns", name), queue, (started, f"uid-{name}"), suspended, jobs)


def held(name: str, flow_name: str) -> WorkloadChange:
    return WorkloadChange("ns", name, True, ("ns", flow_name))


def released(name: str, flow_name: str) -> WorkloadChange:
    return WorkloadChange("ns", name, False, ("ns", flow_name))


def test_a_newer_flows_waiting_workloads_are_held_while_an_older_flows_work_waits() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval"))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train-0"), job("new-train-1"))
    assert order_changes([newer, older]) == [held("new-train-0", "new"), held("new-train-1", "new")]


def test_an_older_flows_job_counts_before_kueue_made_its_workload() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job(None))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train"))
    assert order_changes([older, newer]) == [held("new-train", "new")]


def test_held_workloads_are_released_once_no_older_work_waits() -> None:
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train", active=False, held_for_order=True))
    assert order_changes([newer]) == [released("new-train", "new")]


def test_the_head_flow_is_released_when_it_was_held_before() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval", active=False, held_for_order=True))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train"))
    assert order_changes([older, newer]) == [released("old-eval", "old"), held("new-train", "new")]


def test_a_higher_priority_is_never_held_behind_an_older_flow() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval", priority=100))
    urgent = flow("urgent", "2026-01-01T00:00:05Z", job("urgent-train", priority=1000))
    assert order_changes([older, urgent]) == [held("old-eval", "old")]


def test_flows_in_other_cluster_queues_or_asking_for_other_resources_are_not_held() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval"))
    elsewhere = flow("other", "2026-01-01T00:00:05Z", job("other-train"), queue="other-gpus")
    cpu = flow("cpu", "2026-01-01T00:00:06Z", job("cpu-prep", resources=CPU_ONLY))
    assert order_changes([older, elsewhere, cpu]) == []


def test_a_work_that_can_never_fit_holds_nothing() -> None:
    too_big = "insufficient quota for nvidia.com/gpu in flavor gpu, request (8) > maximum capacity (4)"
    older = flow("old", "2026-01-01T00:00:00Z", job("old-huge", message=too_big))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train"))
    assert order_changes([older, newer]) == []


def test_a_suspended_or_deactivated_flow_holds_nothing_and_is_left_alone() -> None:
    suspended = flow("old", "2026-01-01T00:00:00Z", job("old-eval", active=False), suspended=True)
    by_admin = flow("admin", "2026-01-01T00:00:01Z", job("admin-eval", active=False))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train"))
    assert order_changes([suspended, by_admin, newer]) == []
    # A suspended flow's held Workload stays as it is until the flow is resumed.
    parked = flow("parked", "2026-01-01T00:00:09Z", job("parked-train", active=False, held_for_order=True))
    assert order_changes([newer, replace_suspended(parked)]) == []


def replace_suspended(queued: QueuedFlow) -> QueuedFlow:
    return QueuedFlow(queued.key, queued.cluster_queue, queued.order, True, queued.jobs)


def test_an_admitted_workload_is_never_held() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval"))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train", admitted=True))
    assert order_changes([older, newer]) == []


def test_with_the_order_off_every_hold_is_released_and_none_made() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", job("old-eval"))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-a", active=False, held_for_order=True), job("new-b"))
    assert order_changes([older, newer], keep_order=False) == [released("new-a", "new")]
