"""The instances of a matrix work, as the planner sees them: which combinations it runs, how many
of them are where, and how the status shows them without growing with their number.

A matrix work's status entry is one entry however many instances it has: the count of instances,
the count per phase, and the failed instances by index with their values (at most
`MAX_LISTED_INSTANCES`). That keeps a 10,000-instance flow's object far below etcd's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagflow.api.models import Work
from dagflow.controller.observe import JobObservation, count_indexes, parse_indexes
from dagflow.rules.matrix import Combination, expand, parse_matrix

MAX_LISTED_INSTANCES = 20


def combinations_of(work: Work, outputs: Mapping[str, Mapping[str, Any]]) -> list[Combination]:
    """The combinations a matrix work runs; its dynamic axes read `outputs` (by work and key).
    MatrixError when it cannot expand."""
    assert work.matrix is not None
    matrix = parse_matrix(work.matrix)
    resolved = {
        key: outputs[reference.work][reference.name]
        for key, reference in matrix.dynamic.items()
        if reference.work in outputs and reference.name in outputs[reference.work]
    }
    return expand(matrix, resolved)


@dataclass(frozen=True)
class InstanceCounts:
    """Where a matrix work's instances are."""

    total: int
    succeeded: int
    failed: int
    running: int
    # Instances of a finished Job that never ended on their own (FailFast stopped them).
    stopped: int = 0

    @property
    def pending(self) -> int:
        return max(self.total - self.succeeded - self.failed - self.running - self.stopped, 0)

    def to_status(self) -> dict[str, int]:
        return {
            "Pending": self.pending,
            "Running": self.running,
            "Succeeded": self.succeeded,
            "Failed": self.failed,
            "Stopped": self.stopped,
        }


def counts_of(job: JobObservation) -> InstanceCounts:
    succeeded = count_indexes(job.completed_indexes) if job.completed_indexes else job.succeeded
    failed = count_indexes(job.failed_indexes)
    finished = job.outcome is not None
    return InstanceCounts(
        total=job.completions,
        succeeded=succeeded,
        failed=failed,
        running=0 if finished else job.active,
        # A finished Job's instances that neither succeeded nor failed were stopped with it.
        stopped=max(job.completions - succeeded - failed, 0) if finished else 0,
    )


def busy_slots(job: JobObservation) -> int:
    """Slots of the flow's parallelism a running matrix Job holds: its parallelism, while it has
    that many instances left to run."""
    if job.outcome is not None or job.deleting:
        return 0
    left = job.completions - count_indexes(job.completed_indexes) - count_indexes(job.failed_indexes)
    return max(min(job.parallelism, left), 0)


def failed_instances(
    job: JobObservation, combinations: list[Combination] | None, job_indexes: list[int] | None = None
) -> list[dict[str, Any]]:
    """The first failed instances by index, with their values when known; `job_indexes`: the
    instance each of the Job's indexes runs, when it runs only some of them."""
    listed = []
    for job_index in parse_indexes(job.failed_indexes)[:MAX_LISTED_INSTANCES]:
        index = job_indexes[job_index] if job_indexes and job_index < len(job_indexes) else job_index
        entry: dict[str, Any] = {"index": index}
        if combinations is not None and index < len(combinations):
            entry["values"] = combinations[index]
        listed.append(entry)
    return listed


def format_indexes(indexes: list[int]) -> str:
    """Indexes as a Job's completedIndexes writes them, in the given order ([3, 4, 5, 9] -> "3-5,9")."""
    parts: list[str] = []
    start = previous = None
    for index in [*indexes, None]:
        if start is not None and previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None and previous is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ",".join(parts)


def describe(values: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(values.items()))


def failure_message(
    counts: InstanceCounts, listed: list[dict[str, Any]], launch_failure: str | None = None
) -> str:
    """Why a matrix work failed, naming its first failed instances; `launch_failure`: why the
    launcher could not start one of them, from its pod's termination message."""
    named = "; ".join(
        f"{entry['index']} ({describe(entry['values'])})" if entry.get("values") else str(entry["index"])
        for entry in listed[:3]
    )
    more = f" and {counts.failed - 3} more" if counts.failed > 3 else ""
    why = f" ({counts.stopped} stopped by FailFast)" if counts.stopped else ""
    launch = f"; {launch_failure}" if launch_failure else ""
    return f"{counts.failed} of {counts.total} instances failed{why}: {named}{more}{launch}"
