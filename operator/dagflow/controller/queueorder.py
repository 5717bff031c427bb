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

A flow's next stage would lose its place in the moment between its running works finishing (Kueue
frees their quota at once) and its next Jobs being made. So the works that are made now count as
waiting, and while the head flow's running works hold a scarce resource that its next stage needs,
newer flows' Workloads are held if admitting them would leave that stage short once the running
works finish: what the queue has free now, plus what those works free beyond what the stage needs,
is all they may take. No more is kept back, so no quota idles for a stage that is not next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work, WorkPhase
from dagflow.controller.builders import gpu_resources
from dagflow.controller.observe import COMMON_RESOURCES, JobObservation, pod_demand, quantity
from dagflow.controller.planner import DONE
from dagflow.controller.queueing import WorkloadObservation

FlowKey = tuple[str, str]
Amounts = tuple[tuple[str, int], ...]
# Kueue's words for a Workload that asks for more than its ClusterQueue can ever give.
NEVER_FITS = "> maximum capacity"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A Job of a flow that waits for Kueue, with its Workload once Kueue made one."""

    job_uid: str
    priority: int
    resources: frozenset[str]
    workload: WorkloadObservation | None
    # How much of each scarce resource it asks for.
    demand: Amounts = ()


@dataclass(frozen=True, slots=True)
class NextStage:
    """Works of a flow, in one LocalQueue, that start as soon as the flow's running works finish.

    `needs` is what they ask for; `freed` what the running works they wait for hold now."""

    queue: str
    needs: Amounts
    freed: Amounts


@dataclass(frozen=True, slots=True)
class QueuedFlow:
    """The run of one flow whose Jobs wait in a ClusterQueue."""

    key: FlowKey
    cluster_queue: str
    # Its place: the run's start time (queue_order_time), then the flow's uid to break ties.
    order: tuple[str, str]
    suspended: bool
    jobs: tuple[QueuedJob, ...]
    # Its next stage in this ClusterQueue, if any, at its priority.
    next_stage: NextStage | None = None
    next_priority: int = 0


@dataclass(frozen=True, slots=True)
class WorkloadChange:
    """A Workload to hold (deactivate) or release (activate again)."""

    namespace: str
    name: str
    hold: bool
    flow: FlowKey


def queue_order_time(started_at: str | None) -> str:
    """A run's start time as it orders flows: to the microsecond, so that status.startedAt written to
    the millisecond and one written to the second (by an older operator) compare as times."""
    if not started_at:
        return ""
    try:
        moment = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    except ValueError:
        return started_at
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


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


def order_changes(
    flows: list[QueuedFlow], keep_order: bool = True, free: Mapping[str, Mapping[str, int]] | None = None
) -> list[WorkloadChange]:
    """The holds and releases that keep each ClusterQueue's waiting works in the order of their flows.

    `free` is what each ClusterQueue has unreserved now, by resource; a queue missing from it keeps
    nothing back for next stages. With `keep_order` off, every Workload the operator holds is
    released and none is held.
    """
    wanted: dict[tuple[str, str], bool] = {}
    by_queue: dict[str, list[QueuedFlow]] = {}
    for flow in flows:
        if not flow.suspended:
            by_queue.setdefault(flow.cluster_queue, []).append(flow)
    for cluster_queue, queue_flows in by_queue.items():
        if keep_order:
            queue_free = (free or {}).get(cluster_queue)
            wanted.update(_holds_in_queue(queue_flows, queue_free))
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


@dataclass(frozen=True, slots=True)
class _Head:
    """The first in line for one scarce resource: a waiting work, or a next stage."""

    flow: QueuedFlow
    priority: int
    next_stage: bool


def _scarce(resources: frozenset[str]) -> frozenset[str]:
    return resources - COMMON_RESOURCES


def _holds_in_queue(
    queue_flows: list[QueuedFlow], queue_free: Mapping[str, int] | None
) -> dict[tuple[str, str], bool]:
    contenders = [(flow, job) for flow in queue_flows for job in flow.jobs if contends(job)]
    # Waiting works and next stages in line: higher priority first, then older flow; a flow's
    # waiting works before its next stage.
    line: list[tuple[tuple[int, tuple[str, str], FlowKey, int], _Head, frozenset[str]]] = [
        ((-job.priority, flow.order, flow.key, 0), _Head(flow, job.priority, False), _scarce(job.resources))
        for flow, job in contenders
    ]
    if queue_free is not None:
        for flow in queue_flows:
            stage = flow.next_stage
            if stage is None:
                continue
            needs, freed = dict(stage.needs), dict(stage.freed)
            kept = frozenset(name for name, amount in needs.items() if amount > 0 and freed.get(name, 0) > 0)
            line.append(
                ((-flow.next_priority, flow.order, flow.key, 1), _Head(flow, flow.next_priority, True), kept)
            )
    heads: dict[str, _Head] = {}
    for _, head, resources in sorted(line, key=lambda entry: entry[0]):
        for resource in resources:
            heads.setdefault(resource, head)
    # Under a next stage, what newer flows' Workloads may take: the first such flow's, in order,
    # as long as they fit what is free now plus what the running works free beyond the stage's needs.
    allowed: set[str] = set()
    for resource, head in heads.items():
        if not head.next_stage or head.flow.next_stage is None:
            continue
        stage = head.flow.next_stage
        room = (queue_free or {}).get(resource, 0) + max(
            0, dict(stage.freed).get(resource, 0) - dict(stage.needs).get(resource, 0)
        )
        behind = sorted(
            (
                (flow, job)
                for flow, job in contenders
                if flow.key != head.flow.key and resource in job.resources and job.priority <= head.priority
            ),
            key=lambda pair: (-pair[1].priority, pair[0].order, pair[0].key),
        )
        for flow, job in behind:
            if flow.key != behind[0][0].key:
                break
            amount = dict(job.demand).get(resource, 0)
            if amount > room:
                break
            room -= amount
            allowed.add(f"{resource}/{job.job_uid}")
    wanted: dict[tuple[str, str], bool] = {}
    for flow, job in contenders:
        if job.workload is None:
            continue
        wanted[(flow.key[0], job.workload.name)] = any(
            _behind(heads[resource], flow, job) and f"{resource}/{job.job_uid}" not in allowed
            for resource in _scarce(job.resources)
        )
    return wanted


def _behind(head: _Head, flow: QueuedFlow, job: QueuedJob) -> bool:
    return head.flow.key != flow.key and head.priority >= job.priority


def free_quota(cluster_queue: Mapping[str, Any]) -> dict[str, int]:
    """What a ClusterQueue has of each resource beyond what admitted Workloads reserve: its nominal
    quota over every flavor less their reservations (borrowing from a cohort not counted)."""
    nominal: dict[str, int] = {}
    for group in (cluster_queue.get("spec") or {}).get("resourceGroups") or []:
        for flavor in group.get("flavors") or []:
            for resource in flavor.get("resources") or []:
                _add(nominal, resource.get("name"), resource.get("nominalQuota"))
    reserved: dict[str, int] = {}
    status = cluster_queue.get("status") or {}
    for flavor in status.get("flavorsReservation") or status.get("flavorsUsage") or []:
        for resource in flavor.get("resources") or []:
            _add(reserved, resource.get("name"), resource.get("total"))
    return {name: max(0, amount - reserved.get(name, 0)) for name, amount in nominal.items()}


def _add(into: dict[str, int], name: Any, amount: Any) -> None:
    if not name or amount is None:
        return
    try:
        into[str(name)] = into.get(str(name), 0) + math.floor(quantity(amount))
    except (ValueError, TypeError):
        return


@dataclass(frozen=True, slots=True)
class StageDemand:
    """What one flow's run will soon ask of its LocalQueues, besides its queued Jobs."""

    # The queued works whose Jobs are being made now: (LocalQueue, scarce resources), in line at once.
    starting: tuple[tuple[str, frozenset[str]], ...] = ()
    next_stages: tuple[NextStage, ...] = field(default_factory=tuple)


def stage_demand(
    spec: DAGFlowSpec,
    phases: Mapping[str, WorkPhase],
    jobs: Mapping[str, JobObservation],
    starting: list[Work],
    gpu_resource: str,
) -> StageDemand:
    """The run's queued works being made now, and its next stage in each LocalQueue: the works
    with no Job yet whose every unsettled dependency runs, at least one of them in that queue."""
    made_now = tuple(
        (queue, frozenset(demand))
        for work in starting
        if (queue := spec.queue_of(work)) is not None and (demand := _work_demand(work, gpu_resource))
    )
    starting_names = {work.name for work in starting}
    needs: dict[str, dict[str, int]] = {}
    freed_by: dict[str, dict[str, JobObservation]] = {}
    for work in spec.works:
        queue = spec.queue_of(work)
        if (
            queue is None
            or work.serve is not None
            or work.matrix is not None  # how many instances it has may not be known yet
            or work.name in starting_names
            or work.name in jobs
            or phases.get(work.name, WorkPhase.PENDING) != WorkPhase.PENDING
        ):
            continue
        demand = _work_demand(work, gpu_resource)
        running = [jobs[name] for name in work.depends_on if name in jobs and _holds_quota(jobs[name])]
        unsettled = [name for name in work.depends_on if phases.get(name) not in DONE]
        in_queue = [job for job in running if job.queue == queue and job.demand]
        if not demand or not in_queue or len(running) < len(unsettled):
            continue
        queue_needs = needs.setdefault(queue, {})
        for name, amount in demand.items():
            queue_needs[name] = queue_needs.get(name, 0) + amount
        freed_by.setdefault(queue, {}).update((job.name, job) for job in in_queue)
    stages = []
    for queue, queue_needs in sorted(needs.items()):
        freed: dict[str, int] = {}
        for job in freed_by[queue].values():
            for name, amount in job.demand:
                freed[name] = freed.get(name, 0) + amount
        stages.append(NextStage(queue, tuple(sorted(queue_needs.items())), tuple(sorted(freed.items()))))
    return StageDemand(made_now, tuple(stages))


def _holds_quota(job: JobObservation) -> bool:
    """Admitted and running: its quota is freed when it finishes."""
    return job.outcome is None and not job.suspended and not job.deleting


def _work_demand(work: Work, gpu_resource: str) -> dict[str, int]:
    """The scarce resources one pod of the work asks for, GPUs as the Job's pods will ask for them."""
    return pod_demand([{"resources": gpu_resources(work.container.get("resources"), work.gpu, gpu_resource)}])
