"""Keeps flows in order in their Kueue ClusterQueues: holds and releases the waiting Workloads that
`queueorder.order_changes` names, from what the reconciler's passes saw of each flow's queued Jobs.

Each change is made on the Workload as it is at that moment (read, checked, then patched with its
resourceVersion), so a Workload admitted since a pass looked is never taken out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from dagflow.controller.kube import KubeClient
from dagflow.controller.observe import JobObservation
from dagflow.controller.queueing import WorkloadObservation, observe_workload
from dagflow.controller.queueorder import (
    FlowKey,
    NextStage,
    QueuedFlow,
    QueuedJob,
    StageDemand,
    WorkloadChange,
    free_quota,
    order_changes,
)

logger = logging.getLogger(__name__)

# How long what a LocalQueue feeds and what a priority class is worth are taken as known.
LOOKUP_SECONDS = 60.0
# Decisions are made again at least this often, and at once when a pass brings news.
ORDER_SECONDS = 2.0
# How long releasing the held Workloads may take when the operator stops.
STOP_SECONDS = 5.0


# A run's Jobs that wait for Kueue, with their Workloads once Kueue made them.
QueuedJobs = tuple[tuple[JobObservation, WorkloadObservation | None], ...]


@dataclass(frozen=True, slots=True)
class WaitingRun:
    """What a pass saw of one flow's run while some of its Jobs wait for Kueue."""

    namespace: str
    # The run's start time (queue_order_time), then the flow's uid.
    order: tuple[str, str]
    suspended: bool
    jobs: QueuedJobs
    # The works being made now and the next stages, and the flow's WorkloadPriorityClass.
    stage: StageDemand = field(default_factory=StageDemand)
    priority_class: str | None = None


class QueueOrderKeeper:
    def __init__(
        self,
        kube: KubeClient,
        keep_order: bool,
        on_change: Callable[[FlowKey], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.keep_order = keep_order
        self._on_change = on_change
        self._monotonic = monotonic
        self._runs: dict[FlowKey, WaitingRun] = {}
        self._cluster_queues: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._priorities: dict[str, tuple[float, int]] = {}
        self._unreadable: set[str] = set()
        self._news = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def update(self, key: FlowKey, run: WaitingRun) -> None:
        if self._runs.get(key) == run:
            return
        self._runs[key] = run
        self._news.set()
        if self._task is None:
            self._task = asyncio.create_task(self._keep_forever(), name="dagflow-queue-order")

    def forget(self, key: FlowKey) -> None:
        if self._runs.pop(key, None) is not None:
            self._news.set()

    async def stop(self) -> None:
        """Stop deciding, and release what this operator holds: no Workload stays held while no
        operator runs (uninstalled, or between two replicas; the next one holds again what it must)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        releases = [
            WorkloadChange(run.namespace, workload.name, False, key)
            for key, run in self._runs.items()
            for _, workload in run.jobs
            if workload is not None and workload.held_for_order
        ]
        if not releases:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self._apply(change) for change in releases)), STOP_SECONDS
            )
        except (ApiException, OSError, TimeoutError) as error:
            logger.warning("Could not release every held Workload on the way out: %r", error)

    async def _keep_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), ORDER_SECONDS)
            self._news.clear()
            if not self._runs:
                continue
            try:
                await self.keep_once()
            except (ApiException, OSError) as error:
                logger.warning("Could not keep the queued flows in order: %r", error)

    async def keep_once(self) -> None:
        flows = await self._queued_flows()
        free = {}
        for cluster_queue in sorted({flow.cluster_queue for flow in flows if flow.next_stage is not None}):
            body = await self._cluster_queue_body(cluster_queue)
            if body is not None:
                free[cluster_queue] = free_quota(body)
        for change in order_changes(flows, self.keep_order, free):
            await self._apply(change)

    async def _queued_flows(self) -> list[QueuedFlow]:
        flows = []
        for key, run in list(self._runs.items()):
            by_queue: dict[str, list[QueuedJob]] = {}
            for job, workload in run.jobs:
                cluster_queue = await self._cluster_queue(run.namespace, job.queue or "")
                if cluster_queue is None:
                    continue
                priority = workload.priority if workload is not None else None
                if priority is None:
                    priority = await self._priority(job.priority_class)
                queued = QueuedJob(str(job.uid), priority, job.resources, workload, job.demand)
                by_queue.setdefault(cluster_queue, []).append(queued)
            flow_priority = await self._priority(run.priority_class)
            for index, (local_queue, resources) in enumerate(run.stage.starting):
                cluster_queue = await self._cluster_queue(run.namespace, local_queue)
                if cluster_queue is not None:
                    # Made now, with no Workload yet: in line like a Job whose Workload Kueue has not made.
                    starting = QueuedJob(f"starting/{index}", flow_priority, resources, None)
                    by_queue.setdefault(cluster_queue, []).append(starting)
            stages: dict[str, NextStage] = {}
            for stage in run.stage.next_stages:
                cluster_queue = await self._cluster_queue(run.namespace, stage.queue)
                if cluster_queue is not None:
                    stages[cluster_queue] = _joined(stages.get(cluster_queue), stage)
                    by_queue.setdefault(cluster_queue, [])
            flows += [
                QueuedFlow(
                    key,
                    cluster_queue,
                    run.order,
                    run.suspended,
                    tuple(jobs),
                    stages.get(cluster_queue),
                    flow_priority,
                )
                for cluster_queue, jobs in by_queue.items()
            ]
        return flows

    async def _cluster_queue_body(self, name: str) -> dict[str, Any] | None:
        """The ClusterQueue as it is now (its reservations change with every admission); None when
        it cannot be read, and then nothing is kept back for next stages in it."""
        try:
            return await self.kube.cluster_queue(name)
        except ApiException as error:
            if error.status in (401, 403):
                if name not in self._unreadable:
                    self._unreadable.add(name)
                    logger.warning(
                        "Cannot read ClusterQueue %s, so flows' next stages keep no place in it: %s",
                        name,
                        error.reason,
                    )
                return None
            raise

    async def _cluster_queue(self, namespace: str, local_queue: str) -> str | None:
        if not local_queue:
            return None
        known = self._cluster_queues.get((namespace, local_queue))
        if known is None or self._monotonic() - known[0] >= LOOKUP_SECONDS:
            known = (self._monotonic(), await self.kube.cluster_queue_of(namespace, local_queue))
            self._cluster_queues[(namespace, local_queue)] = known
        return known[1]

    async def _priority(self, priority_class: str | None) -> int:
        """Kueue's priority of a Job whose Workload is not made yet: its class's value, else 0."""
        if not priority_class:
            return 0
        known = self._priorities.get(priority_class)
        if known is None or self._monotonic() - known[0] >= LOOKUP_SECONDS:
            known = (self._monotonic(), await self.kube.workload_priority(priority_class) or 0)
            self._priorities[priority_class] = known
        return known[1]

    async def _apply(self, change: WorkloadChange) -> None:
        body = await self.kube.workload(change.namespace, change.name)
        current = observe_workload(body) if body is not None else None
        if current is None or current.admitted:
            return
        if current.held_for_order == change.hold and current.active != change.hold:
            self._record(change)  # so it is already: a pass saw it before the change was made
            return
        if change.hold and not (current.active and not current.held_for_order):
            return
        if not change.hold and not current.held_for_order:
            return
        resource_version = str((body or {}).get("metadata", {}).get("resourceVersion", ""))
        if not await self.kube.hold_workload(change.namespace, change.name, resource_version, change.hold):
            return
        logger.info(
            "%s Workload %s/%s of DAGFlow %s %s",
            "Held" if change.hold else "Released",
            change.namespace,
            change.name,
            change.flow[1],
            "behind the works of older flows" if change.hold else "now that no older flow's work waits",
        )
        self._record(change)
        self._on_change(change.flow)

    def _record(self, change: WorkloadChange) -> None:
        """What was just written, so that the next decision does not make it again."""
        run = self._runs.get(change.flow)
        if run is None:
            return
        jobs: Sequence[tuple[JobObservation, WorkloadObservation | None]] = [
            (
                job,
                replace(workload, active=not change.hold, held_for_order=change.hold)
                if workload is not None and workload.name == change.name
                else workload,
            )
            for job, workload in run.jobs
        ]
        self._runs[change.flow] = replace(run, jobs=tuple(jobs))


def _joined(known: NextStage | None, stage: NextStage) -> NextStage:
    """Two LocalQueues' next stages in one ClusterQueue, as one."""
    if known is None:
        return stage
    needs, freed = dict(known.needs), dict(known.freed)
    for name, amount in stage.needs:
        needs[name] = needs.get(name, 0) + amount
    for name, amount in stage.freed:
        freed[name] = freed.get(name, 0) + amount
    return NextStage(known.queue, tuple(sorted(needs.items())), tuple(sorted(freed.items())))
