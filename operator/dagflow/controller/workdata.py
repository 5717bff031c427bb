"""The data works pass along, as the reconciler reads and keeps it: outputs from the termination
messages of succeeded pods, a matrix work's gathered into a ConfigMap, and read back for the works
that reference them. Each call is one step of a pass; what it finds goes to the pure planner."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work, WorkPhase
from dagflow.controller.awaiting import gather_all
from dagflow.controller.builders import (
    LAUNCHER_EXIT_CODE,
    MATRIX_CACHED_KEY,
    MATRIX_OUTPUTS_KEY,
    FlowRef,
    build_matrix_outputs,
)
from dagflow.controller.kube import COMPLETION_INDEX_ANNOTATION, KubeClient, NameTakenError
from dagflow.controller.observe import JobObservation, parse_indexes
from dagflow.controller.planner import Plan, WorkState, needs_outputs_read, reassess
from dagflow.rules import naming
from dagflow.rules.matrix import parse_matrix
from dagflow.rules.outputs import CollectedOutputs, OutputsError, gather_outputs, outputs_size
from dagflow.rules.substitution import container_references

# Outputs a flow's status keeps, all works together; the rest go into a ConfigMap per work. With a
# spec of at most 1 MiB and a status entry of a few hundred bytes per work, the object stays under
# etcd's 1.5 MiB whatever the outputs.
OUTPUTS_IN_STATUS_BYTES = 64 * 1024
# Outputs read from ConfigMaps kept in memory (each at most 1 MiB).
STORED_OUTPUTS_KEPT = 8
# At most this many failed matrix Jobs have their failed pods read per pass, each once: why a launch
# failed does not change, so the answer is kept (for this many Jobs, the oldest forgotten first).
LAUNCH_FAILURE_LOOKUPS_PER_PASS = 10
LAUNCH_FAILURES_KEPT = 1000
# One page of a failed Job's failed pods is read, and this much of the launcher's message kept.
LAUNCH_FAILURE_PODS_READ = 100
LAUNCH_FAILURE_MESSAGE_CHARS = 500


class WorkData:
    """Reads and keeps the outputs of a namespace's works through the API."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        # Why the launcher could not start an instance, by Job uid (None: not the launcher).
        self._launch_failures: OrderedDict[str, str | None] = OrderedDict()
        # Outputs read from ConfigMaps, by (namespace, name, owner uid): they never change.
        self._stored: OrderedDict[tuple[str, str, str], Mapping[str, Any]] = OrderedDict()

    async def launch_failures(
        self, flow: FlowRef, spec: DAGFlowSpec, jobs: Mapping[str, JobObservation]
    ) -> dict[str, str]:
        """Why the launcher ended a pod of the works whose Job failed, by work: an instance of a matrix
        work it could not start, or a work's artifact it could not fetch or leave.

        The operator watches no pods, and the launcher's reason is only in the termination message
        of the failed pod: one page of the Job's failed pods is listed once per Job, the first whose
        container the launcher ended (its own exit code) gives the reason.
        """
        found: dict[str, str] = {}
        budget = LAUNCH_FAILURE_LOOKUPS_PER_PASS
        for work in spec.works:
            job = jobs.get(work.name)
            if job is None or job.uid is None:
                continue
            if job.outcome != "Failed" or not job.failed_indexes:
                continue
            if job.uid not in self._launch_failures:
                if budget <= 0:
                    continue
                budget -= 1
                self._launch_failures[job.uid] = await self._launch_failure(
                    flow.namespace, job.uid, work.container_name, work.matrix is not None
                )
                while len(self._launch_failures) > LAUNCH_FAILURES_KEPT:
                    self._launch_failures.popitem(last=False)
            reason = self._launch_failures[job.uid]
            if reason is not None:
                found[work.name] = reason
        return found

    async def _launch_failure(self, namespace: str, job_uid: str, container: str, matrix: bool) -> str | None:
        failures: list[tuple[int, str]] = []
        for pod in await self.kube.failed_pods(namespace, job_uid, LAUNCH_FAILURE_PODS_READ):
            index = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION, "0")
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated") or {}
                if status.get("name") == container and terminated.get("exitCode") == LAUNCHER_EXIT_CODE:
                    message = str(terminated.get("message") or "no message").strip()
                    if len(message) > LAUNCH_FAILURE_MESSAGE_CHARS:
                        message = message[:LAUNCH_FAILURE_MESSAGE_CHARS] + "..."
                    failures.append((int(index), message))
        if not failures:
            return None
        index, message = min(failures)
        return f"instance {index} could not start: {message}" if matrix else message

    async def termination_messages(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        jobs: Mapping[str, JobObservation],
        previous: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, str | None]:
        """The termination messages of the works whose outputs are to be read now, by work."""
        wanted = [
            (work, jobs[work.name])
            for work in spec.works
            if work.matrix is None and needs_outputs_read(work, jobs.get(work.name), previous.get(work.name))
        ]

        async def read(work: Work, job: JobObservation) -> tuple[str, str | None]:
            if job.uid is None:
                return work.name, None
            message = await self.kube.termination_message(flow.namespace, job.uid, work.container_name)
            return work.name, message

        return dict(await gather_all(*(read(work, job) for work, job in wanted)))

    async def notification_result(self, flow: FlowRef, job: JobObservation, container: str) -> str | None:
        """The termination message of a notification's ended pod (the launcher's result), succeeded
        or failed; None when no pod is left to read it from."""
        if job.uid is None:
            return None
        if job.outcome == "Succeeded":
            return await self.kube.termination_message(flow.namespace, job.uid, container)
        for pod in await self.kube.failed_pods(flow.namespace, job.uid, 1):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (status.get("state") or {}).get("terminated") or {}
                if status.get("name") == container and terminated.get("message"):
                    return str(terminated["message"])
        return None

    async def collect_matrix_outputs(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        jobs: Mapping[str, JobObservation],
        previous: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, CollectedOutputs]:
        """The outputs of the matrix works that just succeeded, gathered from their pods into a
        ConfigMap each (by work: the ConfigMap, or why there is none)."""
        wanted = [
            (work, jobs[work.name])
            for work in spec.works
            if work.matrix is not None
            and needs_outputs_read(work, jobs.get(work.name), previous.get(work.name))
        ]

        async def collect(work: Work, job: JobObservation) -> tuple[str, CollectedOutputs]:
            if job.uid is None:
                return work.name, CollectedOutputs(error="its Job is gone: its outputs cannot be read")
            messages = await self.kube.termination_messages_by_index(
                flow.namespace, job.uid, work.container_name
            )
            try:
                gathered = gather_outputs(messages, job.completions, [output.name for output in work.outputs])
            except OutputsError as error:
                return work.name, CollectedOutputs(error=str(error))
            job_indexes = job.job_indexes
            if job_indexes:
                cached = await self._cached_outputs(flow, run, work, job_indexes)
                if cached is None:
                    why = "the outputs of its instances taken from the cache are gone"
                    return work.name, CollectedOutputs(error=why)
                gathered = merge_instances(cached, parse_indexes(job_indexes), gathered)
            config_map = build_matrix_outputs(flow, work, run, gathered)
            return work.name, await self._keep_in_config_map(flow, config_map)

        return dict(await gather_all(*(collect(work, job) for work, job in wanted)))

    async def _cached_outputs(
        self, flow: FlowRef, run: int, work: Work, job_indexes: str
    ) -> dict[str, list[Any]] | None:
        """The outputs of the instances of a matrix work taken from the cache in this run, kept
        beside its Job's values (by output name, the list over all instances)."""
        name = naming.matrix_values_name(flow.name, run, work.name, job_indexes)
        try:
            data = await self.kube.read_config_map(flow.namespace, name, flow.uid)
        except NameTakenError:
            return None
        if data is None or MATRIX_CACHED_KEY not in data:
            return None
        cached: dict[str, list[Any]] = json.loads(data[MATRIX_CACHED_KEY])
        return cached

    async def outputs_for(
        self, flow: FlowRef, plan: Plan, works: Sequence[Work] | None = None
    ) -> dict[str, Mapping[str, Any]]:
        """Outputs the works about to start (or `works`) may reference: those in the status, and those
        kept in ConfigMaps (a matrix work's, a work's past the status budget), only the ones one of
        those works references."""
        outputs: dict[str, Mapping[str, Any]] = {
            state.name: state.outputs for state in plan.works if state.outputs is not None
        }
        kept_in = {state.name: state.outputs_config_map for state in plan.works if state.outputs_config_map}
        referenced = {
            reference.work
            for work in (plan.start if works is None else works)
            for _, reference in container_references(work.container)
            if reference.kind == "works" and reference.work in kept_in
        }
        outputs.update(await self.read_stored(flow, {name: kept_in[name] for name in referenced}))
        return outputs

    async def outputs_for_axes(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        previous: Mapping[str, Mapping[str, Any]],
        collected: Mapping[str, CollectedOutputs],
    ) -> dict[str, Mapping[str, Any]]:
        """The outputs kept in ConfigMaps that the dynamic axes of matrix works yet to start read,
        by work: a dynamic axis may be as long as a matrix work's gathered list."""
        kept_in = {
            name: work["outputsConfigMap"] for name, work in previous.items() if work.get("outputsConfigMap")
        }
        kept_in.update({name: found.config_map for name, found in collected.items() if found.config_map})
        wanted: dict[str, str] = {}
        for work in spec.works:
            if work.matrix is None or (previous.get(work.name) or {}).get("phase", "Pending") != "Pending":
                continue
            for reference in parse_matrix(work.matrix).dynamic.values():
                if reference.work in kept_in:
                    wanted[reference.work] = kept_in[reference.work]
        return await self.read_stored(flow, wanted) if wanted else {}

    async def read_stored(
        self, flow: FlowRef, config_maps: Mapping[str, str]
    ) -> dict[str, Mapping[str, Any]]:
        """The outputs kept in these ConfigMaps (by work), read only from the flow's own. They are
        immutable, so a few are kept in memory: a wide fan-out reads its 1 MiB list once."""

        async def read(name: str, config_map: str) -> tuple[str, Mapping[str, Any] | None]:
            key = (flow.namespace, config_map, flow.uid)
            if key in self._stored:
                self._stored.move_to_end(key)
                return name, self._stored[key]
            try:
                data = await self.kube.read_config_map(flow.namespace, config_map, flow.uid)
            except NameTakenError:
                return name, None  # not this flow's: its data never reaches this flow's pods
            if data is None or MATRIX_OUTPUTS_KEY not in data:
                return name, None
            value: Mapping[str, Any] = json.loads(data[MATRIX_OUTPUTS_KEY])
            self._stored[key] = value
            while len(self._stored) > STORED_OUTPUTS_KEPT:
                self._stored.popitem(last=False)
            return name, value

        found = await gather_all(*(read(name, config_maps[name]) for name in sorted(config_maps)))
        return {name: value for name, value in found if value is not None}

    async def keep_outputs_out_of_status(
        self,
        flow: FlowRef,
        spec: DAGFlowSpec,
        run: int,
        plan: Plan,
        previous: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """Past `OUTPUTS_IN_STATUS_BYTES` of outputs in the status, the new outputs of a work go into a
        ConfigMap of their own (`<job>-outputs`, named in its `outputsConfigMap`, as a matrix work's),
        so that however many works report outputs, the flow's status keeps fitting in its object."""
        in_status = sum(
            outputs_size(state.outputs)
            for state in plan.works
            if state.outputs is not None and "outputs" in (previous.get(state.name) or {})
        )
        works = {work.name: work for work in spec.works}
        moving = []
        for state in plan.works:
            if state.outputs is None or "outputs" in (previous.get(state.name) or {}):
                continue
            size = outputs_size(state.outputs)
            if in_status + size <= OUTPUTS_IN_STATUS_BYTES:
                in_status += size
            else:
                moving.append(state)

        async def move(state: WorkState) -> None:
            assert state.outputs is not None
            config_map = build_matrix_outputs(flow, works[state.name], run, state.outputs)
            kept = await self._keep_in_config_map(flow, config_map)
            state.outputs = None
            if kept.config_map:
                state.outputs_config_map = kept.config_map
            elif kept.waiting:
                state.phase, state.finished_at, state.message = WorkPhase.RUNNING, None, kept.waiting
            else:
                state.phase, state.message = WorkPhase.FAILED, f"succeeded, but {kept.error}"

        await gather_all(*(move(state) for state in moving))
        if moving:
            reassess(plan, spec)

    async def _keep_in_config_map(self, flow: FlowRef, config_map: dict[str, Any]) -> CollectedOutputs:
        """Create the ConfigMap that keeps outputs: where they went, what it waits for, or why not."""
        try:
            await self.kube.create_config_map(config_map)
        except NameTakenError as error:
            if error.deleting or (error.owner_uid is not None and error.owner_uid != flow.uid):
                # Left by an earlier flow of this name for the garbage collector: its deletion
                # brings the next pass.
                why = "still being deleted" if error.deleting else "left by a deleted flow"
                return CollectedOutputs(waiting=f"waiting for ConfigMap {error.name}, {why}, to be removed")
            return CollectedOutputs(error=f"its outputs cannot be kept: {error}")
        return CollectedOutputs(config_map=config_map["metadata"]["name"])


def merge_instances(
    cached: Mapping[str, Sequence[Any]], job_indexes: Sequence[int], ran: Mapping[str, Sequence[Any]]
) -> dict[str, list[Any]]:
    """A matrix work's outputs over all its instances: those the cache had, with those its Job ran
    put in place (the Job's index i ran instance `job_indexes[i]`)."""
    merged: dict[str, list[Any]] = {}
    for name, values in ran.items():
        whole = list(cached.get(name) or [])
        for job_index, value in enumerate(values):
            index = job_indexes[job_index]
            whole.extend([None] * (index + 1 - len(whole)))
            whole[index] = value
        merged[name] = whole
    return merged
