"""The data works pass along, as the reconciler reads and keeps it: outputs from the termination
messages of succeeded pods, a matrix work's gathered into a ConfigMap, and read back for the works
that reference them. Each call is one step of a pass; what it finds goes to the pure planner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from dagflow.api.models import DAGFlowSpec, Work
from dagflow.controller.builders import MATRIX_OUTPUTS_KEY, FlowRef, build_matrix_outputs
from dagflow.controller.kube import KubeClient, NameTakenError
from dagflow.controller.observe import JobObservation
from dagflow.controller.planner import Plan, needs_outputs_read
from dagflow.rules.outputs import CollectedOutputs, OutputsError, gather_outputs
from dagflow.rules.substitution import container_references


class WorkData:
    """Reads and keeps the outputs of a namespace's works through the API."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

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

        return dict(await asyncio.gather(*(read(work, job) for work, job in wanted)))

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
            config_map = build_matrix_outputs(flow, work, run, gathered)
            try:
                await self.kube.create_config_map(config_map)
            except NameTakenError as error:
                if error.deleting or (error.owner_uid is not None and error.owner_uid != flow.uid):
                    # Left by an earlier flow of this name for the garbage collector: its deletion
                    # brings the next pass.
                    why = "still being deleted" if error.deleting else "left by a deleted flow"
                    waiting = f"waiting for ConfigMap {error.name}, {why}, to be removed"
                    return work.name, CollectedOutputs(waiting=waiting)
                return work.name, CollectedOutputs(error=f"its outputs cannot be kept: {error}")
            return work.name, CollectedOutputs(config_map=config_map["metadata"]["name"])

        return dict(await asyncio.gather(*(collect(work, job) for work, job in wanted)))

    async def outputs_for(self, flow: FlowRef, plan: Plan) -> dict[str, Mapping[str, Any]]:
        """Outputs the works about to start may reference: those in the status, and those of matrix
        works read from their ConfigMaps (only the ones a starting work references)."""
        outputs: dict[str, Mapping[str, Any]] = {
            state.name: state.outputs for state in plan.works if state.outputs is not None
        }
        kept_in = {state.name: state.outputs_config_map for state in plan.works if state.outputs_config_map}
        referenced = {
            reference.work
            for work in plan.start
            for _, reference in container_references(work.container)
            if reference.kind == "works" and reference.work in kept_in
        }

        async def read(name: str) -> tuple[str, Mapping[str, Any] | None]:
            try:
                data = await self.kube.read_config_map(flow.namespace, kept_in[name], flow.uid)
            except NameTakenError:
                return name, None  # not this flow's: its data never reaches this flow's pods
            if data is None or MATRIX_OUTPUTS_KEY not in data:
                return name, None
            return name, json.loads(data[MATRIX_OUTPUTS_KEY])

        for name, value in await asyncio.gather(*(read(name) for name in sorted(referenced))):
            if value is not None:
                outputs[name] = value
        return outputs
