"""Pure: what Kueue reads on a queued Job, and what its Workload says about the work waiting in it.

A work of a flow that names a LocalQueue runs as a Job that Kueue admits: created suspended with
the queue's label, unsuspended by Kueue once the queue's quota admits its Workload. The operator
never flips `spec.suspend` of such a Job (Kueue would read that as an eviction); it reads the
Workload Kueue made for it to tell why the work waits, and deactivates it while the flow is
suspended (`spec.active`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"
# Kueue's partial admission (on by default since v0.5): the fewest pods of a Job it may admit.
MIN_PARALLELISM_ANNOTATION = "kueue.x-k8s.io/job-min-parallelism"
# Kueue labels each Workload with the uid of the Job it stands for.
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
KUEUE_GROUP = "kueue.x-k8s.io"
# Newest first: v1beta2 is stored from Kueue v0.15 on, older releases serve v1beta1 alone.
KUEUE_VERSIONS = ("v1beta2", "v1beta1")
# Marks a Workload the operator deactivated for a suspended flow: only those are activated again on
# resume, never one an administrator deactivated.
DEACTIVATED_ANNOTATION = "dagflow.dev/deactivated-for-suspend"
# Marks a Workload the operator holds inactive behind the works of older flows (queueorder.py).
HELD_ANNOTATION = "dagflow.dev/held-for-flow-order"

QUEUED_REASON = "Queued"
# Kueue's reason for evicting a Workload whose spec.active is false.
DEACTIVATED_REASON = "Deactivated"
PREEMPTED_REASON = "Preempted"
# The reasons of a Pending work whose Job waits for Kueue.
QUEUE_REASONS = frozenset({QUEUED_REASON, PREEMPTED_REASON})


@dataclass(frozen=True, slots=True)
class WorkloadObservation:
    """Kueue's Workload of one queued Job, as far as the work's status needs it."""

    name: str
    job_uid: str
    active: bool
    admitted: bool
    # Kueue's words on why it waits (QuotaReserved False), or why it was taken out (Evicted,
    # Preempted), when it says.
    message: str | None
    # Evicted by Kueue for another workload, and not admitted again since.
    preempted: bool
    deactivated_by_operator: bool
    # Held inactive by the operator to keep flows in order.
    held_for_order: bool = False
    # Kueue's priority of it (spec.priority), when it says.
    priority: int | None = None


def observe_workload(body: Mapping[str, Any]) -> WorkloadObservation | None:
    """The Workload as the planner needs it; None when it stands for no Job."""
    metadata = body.get("metadata") or {}
    job_uid = (metadata.get("labels") or {}).get(JOB_UID_LABEL)
    if not job_uid:
        return None
    conditions = {
        str(condition.get("type")): condition
        for condition in (body.get("status") or {}).get("conditions") or []
        if isinstance(condition, Mapping)
    }

    def true(kind: str) -> Mapping[str, Any] | None:
        condition = conditions.get(kind)
        return condition if condition is not None and condition.get("status") == "True" else None

    active = (body.get("spec") or {}).get("active", True) is not False
    preempted = true("Preempted")
    evicted = true("Evicted")
    waiting = conditions.get("QuotaReserved")
    message = None
    if preempted is not None:
        message = preempted.get("message")
    elif evicted is not None and not (active and evicted.get("reason") == DEACTIVATED_REASON):
        # Once active again, a Workload is queued like any other: why it was out is past.
        message = evicted.get("message")
    elif waiting is not None and waiting.get("status") != "True":
        message = waiting.get("message")
    elif (admitted := conditions.get("Admitted")) is not None and admitted.get("status") != "True":
        message = admitted.get("message")
    annotations = metadata.get("annotations") or {}
    priority = (body.get("spec") or {}).get("priority")
    return WorkloadObservation(
        name=str(metadata.get("name", "")),
        job_uid=str(job_uid),
        active=active,
        admitted=true("Admitted") is not None,
        message=str(message) if message else None,
        preempted=preempted is not None
        or (evicted is not None and evicted.get("reason") == PREEMPTED_REASON),
        deactivated_by_operator=annotations.get(DEACTIVATED_ANNOTATION) == "true",
        held_for_order=annotations.get(HELD_ANNOTATION) == "true",
        priority=priority if isinstance(priority, int) else None,
    )


@dataclass(frozen=True, slots=True)
class QueueWait:
    """Why a work whose Job Kueue has not admitted waits: its status reason and message."""

    reason: str
    message: str


def queue_wait(
    queue: str | None, workload: WorkloadObservation | None, suspended_flow: bool, kueue_missing: bool
) -> QueueWait:
    """Queued, or Preempted when Kueue took the Job's quota back and queued it again."""
    reason = PREEMPTED_REASON if workload is not None and workload.preempted else QUEUED_REASON
    return QueueWait(reason, queued_message(queue, workload, suspended_flow, kueue_missing))


def queued_message(
    queue: str | None, workload: WorkloadObservation | None, suspended_flow: bool, kueue_missing: bool
) -> str:
    """What a work waiting for Kueue says: its LocalQueue and Kueue's own words."""
    where = f"LocalQueue {queue}" if queue else "its LocalQueue"
    if kueue_missing:
        return f"queued in {where}, but the cluster serves no Kueue Workloads: is Kueue installed?"
    if workload is None:
        return f"queued in {where}: waiting for Kueue to make its Workload"
    if suspended_flow and not workload.active:
        return f"suspended: its Workload {workload.name} is inactive until spec.suspend is false ({where})"
    if not workload.active and workload.held_for_order:
        return (
            f"queued in {where} behind the works of older flows: its Workload {workload.name} is held "
            "inactive until none of theirs waits (flows keep their order)"
        )
    if not workload.active:
        return f"queued in {where}, but its Workload {workload.name} is inactive (spec.active is false)"
    if workload.preempted:
        detail = f": {workload.message}" if workload.message else ""
        return f"preempted by Kueue and queued again in {where}{detail}"
    detail = f": {workload.message}" if workload.message else ": waiting for Kueue to admit it"
    return f"queued in {where}{detail}"


def with_requests(container: dict[str, Any]) -> None:
    """Give every resource the container limits a request of the same amount, where it has none.

    Kueue admits on the requests of the Job's pod template. The API server fills a pod's missing
    requests from its limits, but only on the pod itself: written out in the template, what Kueue
    counts is what the pods will ask for, whichever Kueue release or configuration reads it.
    """
    resources = container.get("resources")
    if not isinstance(resources, dict):
        return
    limits = resources.get("limits") or {}
    if not limits:
        return
    resources["requests"] = {**limits, **(resources.get("requests") or {})}
