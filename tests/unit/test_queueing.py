"""Works queued with Kueue: Pending while Kueue holds their Jobs, saying why in Kueue's words."""

from __future__ import annotations

import dataclasses
from typing import Any

from dagflow.api.models import DAGFlowSpec, FlowPhase, WorkPhase
from dagflow.controller.builders import FlowRef
from dagflow.controller.observe import JobObservation, observe_job
from dagflow.controller.planner import Plan, plan_run
from dagflow.controller.queueing import QueueWait, WorkloadObservation, observe_workload, queue_wait
from dagflow.controller.status import build_status
from dagflow.rules.validation import topological_order

FLOW = FlowRef(name="ml", namespace="team-a", uid="flow-uid")
NOW = "2025-01-02T03:04:05Z"
PENDING_MESSAGE = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, "
    "1 more needed"
)


def spec(*works: dict[str, Any], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": list(works), **fields})


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def job(
    name: str, *, suspended: bool = True, active: int = 0, failed: int = 0, queue: str = "gpu"
) -> JobObservation:
    return JobObservation(
        name=f"ml-1-{name}",
        work=name,
        run=1,
        active=active,
        succeeded=0,
        failed=failed,
        outcome=None,
        reason=None,
        message=None,
        started_at="2025-01-02T03:00:00Z",
        finished_at=None,
        deleting=False,
        uid=f"uid-{name}",
        suspended=suspended,
        queue=queue,
    )


def workload(conditions: list[dict[str, Any]], active: bool = True, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "job-ml-1-train-abcde",
            "labels": {"kueue.x-k8s.io/job-uid": "uid-train"},
            "annotations": annotations,
        },
        "spec": {"active": active},
        "status": {"conditions": conditions},
    }


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def plan(
    flow_spec: DAGFlowSpec,
    *jobs: JobObservation,
    waits: dict[str, QueueWait] | None = None,
    hold: bool = False,
    previous: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    return plan_run(
        FLOW,
        flow_spec,
        topological_order(flow_spec),
        1,
        {observed.work: observed for observed in jobs},
        {},
        previous or {},
        NOW,
        hold=hold,
        queue_waits=waits,
    )


def test_a_suspended_job_with_a_queue_label_is_observed_as_waiting_for_kueue() -> None:
    body = {
        "metadata": {
            "name": "ml-1-train",
            "labels": {"kueue.x-k8s.io/queue-name": "gpu", "dagflow.dev/run": "1"},
        },
        "spec": {"suspend": True},
        "status": {"conditions": [condition("Suspended", "True", "JobSuspended")]},
    }
    observed = observe_job(body)
    assert observed.waits_for_kueue and observed.queue == "gpu"
    assert not observe_job({**body, "spec": {"suspend": False}}).waits_for_kueue
    unlabelled = {**body, "metadata": {"name": "ml-1-train"}}
    assert not observe_job(unlabelled).waits_for_kueue


def test_kueues_words_on_a_pending_workload_reach_the_work() -> None:
    observed = observe_workload(workload([condition("QuotaReserved", "False", "Pending", PENDING_MESSAGE)]))
    assert observed is not None and not observed.admitted and not observed.preempted
    wait = queue_wait("gpu", observed, suspended_flow=False, kueue_missing=False)
    assert wait == QueueWait("Queued", f"queued in LocalQueue gpu: {PENDING_MESSAGE}")


def test_a_preempted_workload_is_queued_again_with_kueues_reason() -> None:
    preempted = observe_workload(
        workload(
            [
                condition("QuotaReserved", "False", "Pending", "waiting"),
                condition("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: x)"),
                condition(
                    "Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: x)"
                ),
            ]
        )
    )
    assert preempted is not None and preempted.preempted
    wait = queue_wait("gpu", preempted, suspended_flow=False, kueue_missing=False)
    assert wait.reason == "Preempted"
    assert wait.message == (
        "preempted by Kueue and queued again in LocalQueue gpu: Preempted to accommodate a workload (UID: x)"
    )
    # Admitted again: Kueue resets the conditions (status False, "Previously: ...").
    again = observe_workload(
        workload(
            [
                condition("QuotaReserved", "True", "QuotaReserved"),
                condition("Admitted", "True", "Admitted"),
                condition("Preempted", "False", "QuotaReserved", "Previously: Preempted"),
            ]
        )
    )
    assert again is not None and again.admitted and not again.preempted


def test_without_a_workload_or_without_kueue_the_work_says_so() -> None:
    assert (
        queue_wait("gpu", None, False, False).message
        == "queued in LocalQueue gpu: waiting for Kueue to make its Workload"
    )
    assert "is Kueue installed?" in queue_wait("gpu", None, False, True).message
    deactivated = observe_workload(
        workload([], active=False, **{"dagflow.dev/deactivated-for-suspend": "true"})
    )
    assert deactivated is not None and deactivated.deactivated_by_operator
    assert queue_wait("gpu", deactivated, True, False).message.startswith("suspended: its Workload")


def test_a_queued_work_is_pending_with_its_job_and_reason_and_counts_as_queued() -> None:
    flow_spec = spec(work("prep"), work("train", gpu=1), queueName="gpu")
    wait = QueueWait("Queued", f"queued in LocalQueue gpu: {PENDING_MESSAGE}")
    result = plan(flow_spec, job("prep", suspended=False, active=1), job("train"), waits={"train": wait})
    train = next(state for state in result.works if state.name == "train")
    assert (train.phase, train.reason, train.message, train.job) == (
        WorkPhase.PENDING,
        "Queued",
        wait.message,
        "ml-1-train",
    )
    assert train.started_at is None and train.attempts == 0
    assert result.phase == FlowPhase.RUNNING and result.start == []
    status = build_status(result, {}, 1, 1, NOW)
    assert status["queued"] == 1
    assert status["works"][1]["reason"] == "Queued"


def test_an_admitted_job_runs_and_a_flow_without_queued_works_has_no_queued_count() -> None:
    result = plan(spec(work("train"), queueName="gpu"), job("train", suspended=False, active=1))
    (train,) = result.works
    assert train.phase == WorkPhase.RUNNING and train.reason is None
    assert "queued" not in build_status(result, {}, 1, 1, NOW)
    assert "reason" not in train.to_status()


def test_a_preempted_work_keeps_its_retries_and_start() -> None:
    wait = QueueWait("Preempted", "preempted by Kueue and queued again in LocalQueue gpu")
    ran = {"train": {"name": "train", "phase": "Running", "startedAt": "2025-01-02T03:00:00Z", "attempts": 1}}
    result = plan(
        spec(work("train", retries=1), queueName="gpu"), job("train"), waits={"train": wait}, previous=ran
    )
    (train,) = result.works
    assert (train.phase, train.reason) == (WorkPhase.PENDING, "Preempted")
    assert train.started_at == "2025-01-02T03:00:00Z"


def test_queued_works_hold_their_slots_of_the_flows_parallelism() -> None:
    flow_spec = spec(work("a"), work("b"), work("c"), queueName="gpu", parallelism=2)
    result = plan(flow_spec, job("a"), job("b"))
    assert result.start == []
    assert next(state for state in result.works if state.name == "c").message == (
        "waiting for a free slot (parallelism 2)"
    )


def test_fail_fast_stops_queued_works_too() -> None:
    failed = dataclasses.replace(
        job("a", suspended=False), outcome="Failed", failed=1, reason="BackoffLimitExceeded"
    )
    result = plan(spec(work("a"), work("b"), queueName="gpu"), failed, job("b"))
    b = next(state for state in result.works if state.name == "b")
    assert b.phase == WorkPhase.STOPPED and b.reason is None
    assert result.stop == ["ml-1-b"]


def test_a_work_queued_while_the_flow_is_suspended_says_so() -> None:
    result = plan(spec(work("train"), queueName="gpu", suspend=True), job("train"), hold=True)
    (train,) = result.works
    assert train.phase == WorkPhase.PENDING and train.reason == "Queued"


def test_workloads_that_stand_for_no_job_are_ignored() -> None:
    assert observe_workload({"metadata": {"name": "w"}}) is None
    observed = observe_workload(workload([]))
    assert observed == WorkloadObservation(
        name="job-ml-1-train-abcde",
        job_uid="uid-train",
        active=True,
        admitted=False,
        message=None,
        preempted=False,
        deactivated_by_operator=False,
    )


def test_an_admitted_work_starts_when_admitted_not_when_its_job_was_made() -> None:
    admitted = dataclasses.replace(job("train", suspended=False, active=1), taken_up=False)
    (train,) = plan(spec(work("train"), queueName="gpu"), admitted).works
    assert train.started_at == NOW
    started = dataclasses.replace(admitted, taken_up=True, started_at="2025-01-02T03:04:00Z")
    (train,) = plan(spec(work("train"), queueName="gpu"), started).works
    assert train.started_at == "2025-01-02T03:04:00Z"
