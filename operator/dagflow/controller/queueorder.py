"""Pure: which queued Workloads to hold so that flows keep their place in a Kueue ClusterQueue.

Kueue orders the Workloads of a ClusterQueue by priority, then by creation time. A flow's Jobs are
made one stage at a time, so with nothing more the second stage of a flow that started first
queues behind the first stages of every flow submitted after it, and every flow's makespan
stretches to the slowest. The operator keeps the flows' order instead: while a work of an older
flow waits for an extended resource (a GPU) in a ClusterQueue, the waiting Workloads of newer flows
of no higher priority that ask for the same resource are held inactive (`spec.active: false`,
marked as held by the operator), and they are activated again as soon as no older work waits. Kueue
still decides everything else: quota, flavors, preemption, and which of the head flow's works go
first. Workloads that can never fit (more than the queue's capacity) hold nothing, nor do works of a
suspended flow.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagflow.controller.queueing import WorkloadObservation

FlowKey = tuple[str, str]

# What every pod asks for: no flow is held behind another for these.
COMMON_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})
# Kueue's words for a Workload that asks for more than its ClusterQueue can ever give.
NEVER_FITS = "> maximum capacity"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A Job of a flow that waits for Kueue, with its Workload once Kueue made one."""

    job_uid: str
    priority: int
    resources: frozenset[str]
    workload: WorkloadObservation | None


@dataclass(frozen=True, slots=True)
class QueuedFlow:
    """The run of one flow whose Jobs wait in a ClusterQueue."""

    key: FlowKey
    cluster_queue: str
    # Its place: the run's start time (RFC 3339), then the flow's uid to break ties.
    order: tuple[str, str]
    suspended: bool
    jobs: tuple[QueuedJob, ...]


@dataclass(frozen=True, slots=True)
class WorkloadChange:
    """A Workload to hold (deactivate) or release (activate again)."""

    namespace: str
    name: str
    hold: bool
    flow: FlowKey


def contends(job: QueuedJob) -> bool:
    """Waits for admission, for a resource worth keeping order for, and could be admitted at all."""
    workload = job.workload
    if not job.resources - COMMON_RESOURCES:
        return False
    if workload is None:
        return True
    if workload.admitted:
        return False
    if not workload.active and not workload.held_for_order:
        return False  # an administrator's deactivation (or a suspended flow's) is not ours to undo
    return not (workload.message and NEVER_FITS in workload.message)


def order_changes(flows: list[QueuedFlow], keep_order: bool = True) -> list[WorkloadChange]:
    """The holds and releases that keep each ClusterQueue's waiting works in the order of their flows.

    With `keep_order` off, every Workload the operator holds is released and none is held.
    """
    wanted: dict[tuple[str, str], bool] = {}
    by_queue: dict[str, list[QueuedFlow]] = {}
    for flow in flows:
        if not flow.suspended:
            by_queue.setdefault(flow.cluster_queue, []).append(flow)
    for queue_flows in by_queue.values():
        contenders = [(flow, job) for flow in queue_flows for job in flow.jobs if contends(job)]
        if not keep_order:
            continue
        # The head of each scarce resource: the waiting work of highest priority, then oldest flow.
        heads: dict[str, tuple[QueuedFlow, QueuedJob]] = {}
        for flow, job in sorted(contenders, key=lambda pair: (-pair[1].priority, pair[0].order, pair[0].key)):
            for resource in job.resources - COMMON_RESOURCES:
                heads.setdefault(resource, (flow, job))
        for flow, job in contenders:
            if job.workload is None:
                continue
            name = (flow.key[0], job.workload.name)
            wanted[name] = any(
                head_flow.key != flow.key and head_job.priority >= job.priority
                for resource in job.resources - COMMON_RESOURCES
                for head_flow, head_job in [heads[resource]]
            )
    changes = []
    for flow in flows:
        if flow.suspended:
            continue
        for job in flow.jobs:
            workload = job.workload
            if workload is None or workload.admitted:
                continue
            name = (flow.key[0], workload.name)
            hold = wanted.get(name, False)
            if hold and workload.active and not workload.held_for_order:
                changes.append(WorkloadChange(name[0], name[1], True, flow.key))
            elif not hold and workload.held_for_order:
                changes.append(WorkloadChange(name[0], name[1], False, flow.key))
    return changes
