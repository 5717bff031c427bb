"""Which waiting Workloads are held so that flows keep their place in a Kueue ClusterQueue."""

from __future__ import annotations

from typing import Any

from dagflow.api.models import DAGFlowSpec, WorkPhase
from dagflow.controller.observe import JobObservation, observe_job, pod_demand
from dagflow.controller.queueing import WorkloadObservation
from dagflow.controller.queueorder import (
    NextStage,
    QueuedFlow,
    QueuedJob,
    WorkloadChange,
    free_quota,
    order_changes,
    queue_order_time,
    stage_demand,
)

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


def job(
    name: str | None, priority: int = 0, resources: frozenset[str] = GPU, gpus: int = 1, **fields: object
) -> QueuedJob:
    demand = (("nvidia.com/gpu", gpus),) if "nvidia.com/gpu" in resources else ()
    return QueuedJob(f"uid-{name}", priority, resources, workload(name, **fields) if name else None, demand)


def flow(
    name: str,
    started: str,
    *jobs: QueuedJob,
    queue: str = "gpus",
    suspended: bool = False,
    next_stage: NextStage | None = None,
) -> QueuedFlow:
    return QueuedFlow(("ns", name), queue, (started, f"uid-{name}"), suspended, jobs, next_stage)


def next_gpus(needs: int, freed: int) -> NextStage:
    """A next stage asking `needs` GPUs once running works that hold `freed` GPUs finish."""
    return NextStage("default", (("nvidia.com/gpu", needs),), (("nvidia.com/gpu", freed),))


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


def test_a_next_stage_keeps_the_gpus_its_running_works_free_from_a_newer_flow() -> None:
    # The older flow's training holds all 4 GPUs; its evaluation needs all 4 once it finishes.
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=4, freed=4))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train", gpus=4))
    assert order_changes([older, newer], free={"gpus": {"nvidia.com/gpu": 0}}) == [held("new-train", "new")]


def test_a_next_stage_keeps_back_no_more_than_it_needs() -> None:
    # Evaluation on 1 GPU, then 2 finetunes: the GPU the evaluation frees is kept for them, the 3
    # free now go to the newer flow (keeping one more back would leave it idle while evaluation runs).
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=2, freed=1))
    newer = flow("new", "2026-01-01T00:00:05Z", *(job(f"new-train-{index}") for index in range(4)))
    changes = order_changes([older, newer], free={"gpus": {"nvidia.com/gpu": 3}})
    assert changes == [held("new-train-3", "new")]


def test_a_next_stage_holds_nothing_when_the_queue_has_room_for_both() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=4, freed=4))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train", gpus=4, active=False, held_for_order=True))
    assert order_changes([older, newer], free={"gpus": {"nvidia.com/gpu": 4}}) == [
        released("new-train", "new")
    ]


def test_behind_a_next_stage_only_the_first_newer_flow_may_take_the_room_left() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=1, freed=1))
    second = flow("second", "2026-01-01T00:00:05Z", job("second-train", gpus=2))
    third = flow("third", "2026-01-01T00:00:09Z", job("third-train", gpus=1))
    changes = order_changes([older, second, third], free={"gpus": {"nvidia.com/gpu": 1}})
    assert changes == [held("second-train", "second"), held("third-train", "third")]


def test_a_next_stage_keeps_nothing_back_in_a_queue_whose_quota_is_not_known() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=4, freed=4))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train", gpus=4))
    assert order_changes([older, newer]) == []


def test_a_higher_priority_flow_is_not_held_for_a_next_stage() -> None:
    older = flow("old", "2026-01-01T00:00:00Z", next_stage=next_gpus(needs=4, freed=4))
    urgent = flow("urgent", "2026-01-01T00:00:05Z", job("urgent-train", priority=10, gpus=4))
    assert order_changes([older, urgent], free={"gpus": {"nvidia.com/gpu": 0}}) == []


def test_an_older_flows_waiting_work_goes_before_a_next_stage() -> None:
    oldest = flow("oldest", "2026-01-01T00:00:00Z", job("oldest-eval", gpus=4))
    older = flow("old", "2026-01-01T00:00:01Z", next_stage=next_gpus(needs=4, freed=4))
    newer = flow("new", "2026-01-01T00:00:05Z", job("new-train"))
    assert order_changes([oldest, older, newer], free={"gpus": {"nvidia.com/gpu": 8}}) == [
        held("new-train", "new")
    ]


def test_free_quota_is_the_nominal_quota_of_every_flavor_less_reservations() -> None:
    cluster_queue = {
        "spec": {
            "resourceGroups": [
                {
                    "flavors": [
                        {"name": "a100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 4}]},
                        {"name": "h100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": "2"}]},
                    ]
                },
                {"flavors": [{"name": "cpu", "resources": [{"name": "cpu", "nominalQuota": "1500m"}]}]},
            ]
        },
        "status": {
            "flavorsReservation": [
                {"name": "a100", "resources": [{"name": "nvidia.com/gpu", "total": "3"}]},
                {"name": "h100", "resources": [{"name": "nvidia.com/gpu", "total": "2"}]},
                {"name": "cpu", "resources": [{"name": "cpu", "total": "2"}]},
            ]
        },
    }
    assert free_quota(cluster_queue) == {"nvidia.com/gpu": 1, "cpu": 0}
    assert free_quota({"spec": {}}) == {}


def test_pod_demand_counts_scarce_resources_by_request_else_limit() -> None:
    containers = [
        {"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1"}}},
        {
            "resources": {
                "requests": {"nvidia.com/gpu": "1", "example.com/fpga": "1"},
                "limits": {"nvidia.com/gpu": "1"},
            }
        },
        {"resources": {"limits": {"example.com/bad": "lots"}}},
    ]
    assert pod_demand(containers) == {"nvidia.com/gpu": 3, "example.com/fpga": 1}


def test_a_jobs_demand_is_what_its_pods_ask_for_at_once() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "f-1-train", "uid": "u"},
        "spec": {
            "parallelism": 4,
            "template": {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
        },
    }
    assert observe_job(body).demand == (("nvidia.com/gpu", 4),)


def gpu_spec(**fields: Any) -> DAGFlowSpec:
    works = [
        {"name": "prep", "container": {"image": "busybox"}},
        {"name": "train", "container": {"image": "busybox"}, "gpu": 4, "dependsOn": ["prep"]},
        {"name": "evaluate", "container": {"image": "busybox"}, "gpu": 2, "dependsOn": ["train"]},
        {"name": "finetune", "container": {"image": "busybox"}, "gpu": 1, "dependsOn": ["evaluate", "prep"]},
    ]
    return DAGFlowSpec.model_validate({"works": works, "queueName": "default", **fields})


def running(work: str, gpus: int, queue: str | None = "default", suspended: bool = False) -> JobObservation:
    return JobObservation(
        name=f"f-1-{work}", work=work, run=1, active=1, succeeded=0, failed=0, outcome=None, reason=None,
        message=None, started_at=None, finished_at=None, deleting=False, uid=f"uid-{work}", queue=queue,
        suspended=suspended, resources=frozenset({"nvidia.com/gpu"}) if gpus else frozenset(),
        demand=(("nvidia.com/gpu", gpus),) if gpus else (),
    )  # fmt: skip


def test_the_next_stage_is_the_works_whose_unfinished_dependencies_all_run() -> None:
    spec = gpu_spec()
    phases = {"prep": WorkPhase.SUCCEEDED, "train": WorkPhase.RUNNING}
    jobs = {"prep": running("prep", 0), "train": running("train", 4)}
    demand = stage_demand(spec, phases, jobs, [], "nvidia.com/gpu")
    # Only evaluation is next: finetune waits for evaluation, which has not started.
    assert demand.next_stages == (NextStage("default", (("nvidia.com/gpu", 2),), (("nvidia.com/gpu", 4),)),)
    assert demand.starting == ()


def test_works_made_now_are_in_line_and_a_queued_dependency_makes_no_next_stage() -> None:
    spec = gpu_spec()
    phases = {"prep": WorkPhase.SUCCEEDED, "train": WorkPhase.PENDING}
    queued_train = {"prep": running("prep", 0), "train": running("train", 4, suspended=True)}
    assert stage_demand(spec, phases, queued_train, [], "nvidia.com/gpu").next_stages == ()
    starting = stage_demand(spec, phases, {"prep": running("prep", 0)}, [spec.works[1]], "nvidia.com/gpu")
    assert starting.starting == (("default", frozenset({"nvidia.com/gpu"})),)


def test_works_out_of_the_queue_or_without_scarce_resources_are_no_next_stage() -> None:
    spec = gpu_spec()
    phases = {"prep": WorkPhase.RUNNING}
    # Training follows preparation, which holds no GPU: it frees nothing that could be kept.
    assert stage_demand(spec, phases, {"prep": running("prep", 0)}, [], "nvidia.com/gpu").next_stages == ()
    unqueued = gpu_spec(queueName=None)
    jobs = {"prep": running("prep", 0), "train": running("train", 4, queue=None)}
    phases = {"prep": WorkPhase.SUCCEEDED, "train": WorkPhase.RUNNING}
    assert stage_demand(unqueued, phases, jobs, [], "nvidia.com/gpu").next_stages == ()


def test_run_start_times_order_as_times_whether_written_to_the_second_or_the_millisecond() -> None:
    to_the_second = queue_order_time("2026-01-01T00:00:05Z")
    later_in_that_second = queue_order_time("2026-01-01T00:00:05.397Z")
    earlier_in_that_second = queue_order_time("2026-01-01T00:00:05.120Z")
    assert (
        to_the_second
        < earlier_in_that_second
        < later_in_that_second
        < queue_order_time("2026-01-01T00:00:06Z")
    )
    assert queue_order_time(None) == ""
