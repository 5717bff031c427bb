"""Pure planning: from a flow's spec and its observed children to the next actions and the status.

Nothing here remembers anything between calls or talks to Kubernetes: the same observations always
give the same plan, which is what lets a restarted operator pick up where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dagflow.api.models import (
    ApprovalDecision,
    DAGFlowSpec,
    FailurePolicy,
    FlowPhase,
    TriggerRule,
    Work,
    WorkPhase,
)
from dagflow.controller.builders import FlowRef, MatrixInstances, endpoint_url
from dagflow.controller.instances import (
    InstanceCounts,
    busy_slots,
    combinations_of,
    counts_of,
    failed_instances,
)
from dagflow.controller.instances import failure_message as instance_failure_message
from dagflow.controller.observe import DeploymentObservation, JobObservation, parse_indexes
from dagflow.controller.queueing import QUEUE_REASONS, QUEUED_REASON, QueueWait, queue_wait
from dagflow.rules import naming
from dagflow.rules.matrix import Combination, MatrixError
from dagflow.rules.outputs import CollectedOutputs, OutputsError, parse_outputs
from dagflow.rules.times import seconds_between

DONE = frozenset(
    {WorkPhase.SUCCEEDED, WorkPhase.FAILED, WorkPhase.SKIPPED, WorkPhase.SERVING, WorkPhase.STOPPED}
)
# A dependency on a serve work is met once it serves.
MET = frozenset({WorkPhase.SUCCEEDED, WorkPhase.SERVING})
NOT_MET = frozenset({WorkPhase.FAILED, WorkPhase.SKIPPED, WorkPhase.STOPPED})
SUSPENDED_MESSAGE = "suspended: starts once spec.suspend is false"
FINALLY_WAITS_MESSAGE = "a finally work: starts once the run's works have ended"
STOPPED_MESSAGE = "stopped by request"
APPROVAL_REQUIRED = "ApprovalRequired"
APPROVAL_TIMED_OUT = "ApprovalTimedOut"
REJECTED = "Rejected"
# A work's message in the status is at most this long.
MAX_WORK_MESSAGE_CHARS = 1024


@dataclass
class WorkState:
    """One work's entry in `status.works`."""

    name: str
    phase: WorkPhase = WorkPhase.PENDING
    job: str | None = None
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    message: str | None = None
    # Why a Pending work with a Job waits: Kueue has not admitted it (Queued) or took it back (Preempted).
    reason: str | None = None
    endpoint: str | None = None
    # Set when a retry carried this outcome over from an earlier run instead of running the work.
    carried_from_run: int | None = None
    # A cached work's key in this run, and where its outcome came from when the cache had it.
    cache_key: str | None = None
    cached_from: dict[str, Any] | None = None
    # The declared outputs a succeeded batch work reported.
    outputs: dict[str, Any] | None = None
    # A matrix work: its instances, their count by phase, the failed ones listed, and the ConfigMap
    # of their outputs.
    instances: int | None = None
    instance_counts: dict[str, int] | None = None
    failed_instances: list[dict[str, Any]] | None = None
    outputs_config_map: str | None = None
    # A matrix work some of whose instances the cache had: how many, and the indexes of those its
    # Job runs, in the Job's index order.
    cached_instances: int | None = None
    job_indexes: str | None = None
    # A work of spec.finally.
    is_finally: bool = False
    # A gate's approval in this run: when it began to wait, and the decision taken in.
    approval: dict[str, Any] | None = None

    def to_status(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "phase": self.phase.value}
        if self.is_finally:
            entry["finally"] = True
        optional = {
            "job": self.job,
            "attempts": self.attempts or None,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "message": self.message,
            "reason": self.reason,
            "endpoint": self.endpoint,
            "carriedFromRun": self.carried_from_run,
            "cacheKey": self.cache_key,
            "cachedFrom": self.cached_from,
            "outputs": self.outputs,
            "instances": self.instances,
            "instanceCounts": self.instance_counts,
            "failedInstances": self.failed_instances,
            "outputsConfigMap": self.outputs_config_map,
            "cachedInstances": self.cached_instances,
            "jobIndexes": self.job_indexes,
            "approval": self.approval,
        }
        entry.update({key: value for key, value in optional.items() if value is not None})
        if len(entry.get("message", "")) > MAX_WORK_MESSAGE_CHARS:
            # Messages quote the API server or a pod; cut, so that every work's entry stays small.
            entry["message"] = entry["message"][: MAX_WORK_MESSAGE_CHARS - 1] + "…"
        return entry


@dataclass
class Plan:
    """What to create now and what the flow's status says after that."""

    start: list[Work] = field(default_factory=list)
    works: list[WorkState] = field(default_factory=list)
    phase: FlowPhase = FlowPhase.RUNNING
    message: str | None = None
    # The serve works, and the run whose Deployment serves each one that has an available one:
    # an earlier run's model keeps serving while this run retrains, or after it failed.
    serve_works: list[str] = field(default_factory=list)
    serving: dict[str, int] = field(default_factory=dict)
    # The matrix works in `start`: their combinations, and how many instances run at once.
    combinations: dict[str, list[Combination]] = field(default_factory=dict)
    instances: dict[str, MatrixInstances] = field(default_factory=dict)
    # Jobs of this run to delete: under FailFast, once a work failed, the works still running stop,
    # so a failed run holds no nodes or GPUs.
    stop: list[str] = field(default_factory=list)
    # The matrix works in `start` some of whose instances the cache had: their outputs, by output
    # name, as lists over all of the work's instances (None where an instance runs).
    cached_outputs: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    # With finally works: how the run's works ended (None while they run), and which of them failed:
    # what the finally works are told as $(run.phase) and $(run.failedWorks).
    outcome: FlowPhase | None = None
    failed_works: list[str] = field(default_factory=list)

    @property
    def progress(self) -> str:
        done = sum(1 for work in self.works if work.phase in DONE)
        return f"{done}/{len(self.works)}"

    @property
    def queued(self) -> int:
        """Works waiting for Kueue to admit their Jobs."""
        return sum(1 for work in self.works if work.reason in QUEUE_REASONS)


def plan_run(
    flow: FlowRef,
    spec: DAGFlowSpec,
    order: Sequence[str],
    run: int,
    jobs: Mapping[str, JobObservation],
    deployments: Mapping[str, DeploymentObservation],
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    draining: int = 0,
    pod_refusals: Mapping[str, str] | None = None,
    hold: bool = False,
    termination_messages: Mapping[str, str | None] | None = None,
    matrix_outputs: Mapping[str, CollectedOutputs] | None = None,
    launch_failures: Mapping[str, str] | None = None,
    stored_outputs: Mapping[str, Mapping[str, Any]] | None = None,
    queue_waits: Mapping[str, QueueWait] | None = None,
    outcome: FlowPhase | None = None,
) -> Plan:
    """Plan run `run` of a flow.

    `order` is a topological order of the works; `jobs` holds this run's Job per work, `deployments`
    the serve works' Deployments (of any run); `previous` is `status.works` of this run by name.
    `draining` counts the Jobs of earlier runs still running or being deleted: no batch work starts
    before they are gone, so a work never runs twice at once and the run's parallelism and GPUs are
    never exceeded. `pod_refusals` holds, per work, why the API server refuses its Job's pods.
    `hold` (spec.suspend) starts nothing: the works that could start wait, saying so.
    `termination_messages` holds, per work whose succeeded Job's outputs are not yet in the
    status, its pod's termination message (None: no pod left to read it from);
    `matrix_outputs` the same for matrix works: the ConfigMap their instances' outputs went to.
    `stored_outputs` holds the outputs kept in ConfigMaps rather than in the status (a matrix work's
    gathered lists, a work's outputs past the status budget) that a dynamic matrix axis reads.
    `queue_waits` holds, per work whose Job waits for Kueue, why (from its Workload); such a work
    is Pending, however long it waits, and holds its slot of the flow's parallelism.
    The finally works (last in `order`) start once every other work has ended; `outcome` is the
    run's as its status has it (Stopped: the run was stopped while its works ran, and its finally
    works run as cleanup).
    """
    works = {work.name: work for work in spec.all_works}
    finally_names = {work.name for work in spec.finally_works}
    refusals = pod_refusals or {}
    messages = termination_messages or {}
    states: dict[str, WorkState] = {}
    for name in order:
        states[name] = _observed_state(
            flow, works[name], run, jobs.get(name), deployments.get(name), previous.get(name), now
        )
        states[name].is_finally = name in finally_names
        job = jobs.get(name)
        if job is not None and job.waits_for_kueue and states[name].phase == WorkPhase.RUNNING:
            # Not started until Kueue admits it: no pod, and a preempted one keeps its retries.
            wait = (queue_waits or {}).get(name) or queue_wait(job.queue, None, hold, False)
            states[name].phase, states[name].reason, states[name].message = (
                WorkPhase.PENDING,
                wait.reason,
                wait.message,
            )
            states[name].attempts = job.attempts
            if wait.reason == QUEUED_REASON:
                states[name].started_at = None  # it starts when Kueue admits it
        if (
            works[name].outputs
            and states[name].phase == WorkPhase.SUCCEEDED
            and not states[name].carried_from_run
            and not states[name].cached_from
        ):
            if works[name].matrix is None:
                _take_outputs(states[name], works[name], previous.get(name), messages, name in jobs)
            else:
                _take_matrix_outputs(states[name], previous.get(name), (matrix_outputs or {}).get(name))
        if name in refusals and states[name].phase == WorkPhase.RUNNING:
            states[name].message = f"its pods are refused: {refusals[name]}"

    reported = {name: state.outputs for name, state in states.items() if state.outputs is not None}
    reported.update(
        {name: dict(outputs) for name, outputs in (stored_outputs or {}).items() if name not in reported}
    )
    for name in order:
        job = jobs.get(name)
        if works[name].matrix is not None and job is not None and not states[name].carried_from_run:
            if job.cached_instances:
                # The Job says which instances it runs: the cache had the others.
                states[name].cached_instances, states[name].job_indexes = (
                    job.cached_instances,
                    job.job_indexes,
                )
            _observe_instances(states[name], works[name], job, reported, (launch_failures or {}).get(name))
        elif (
            job is not None
            and name in (launch_failures or {})
            and states[name].phase == WorkPhase.FAILED
            and not states[name].carried_from_run
        ):
            # The launcher's own words: an artifact it could not fetch or leave.
            states[name].message = (launch_failures or {})[name]

    # The finally works fail nothing but themselves: FailFast is about the run's works.
    failed = [name for name in order if states[name].phase == WorkPhase.FAILED and name not in finally_names]
    fail_fast = spec.failure_policy == FailurePolicy.FAIL_FAST and bool(failed)
    running_batch = sum(
        _slots_held(works[name], jobs.get(name))
        for name in order
        if works[name].serve is None
        and (states[name].phase == WorkPhase.RUNNING or states[name].reason in QUEUE_REASONS)
    )
    unlimited = spec.parallelism == 0
    free_slots = spec.parallelism - running_batch if not unlimited else len(order)

    plan = Plan()
    if fail_fast:
        running = {name: state for name, state in states.items() if name not in finally_names}
        _stop_running(plan, running, works, jobs, previous, failed, now)
    _keep_skipped(plan, states, works, jobs, previous)
    _stop_what_escaped_a_stop(plan, states, works, jobs)
    for name in order:
        state, work = states[name], works[name]
        if state.phase != WorkPhase.PENDING or _has_current_child(work, run, jobs, deployments):
            continue
        is_finally = name in finally_names
        # `order` has every work before the finally works: their states are settled for this pass.
        if is_finally and not all(states[other.name].phase in DONE for other in spec.works):
            state.message = FINALLY_WAITS_MESSAGE
            continue
        verdict, reason = _judge_trigger(work, states)
        if verdict == "skip":
            state.phase, state.message = WorkPhase.SKIPPED, reason
        elif verdict == "wait":
            continue
        elif fail_fast and not is_finally:
            state.phase, state.message = WorkPhase.SKIPPED, _fail_fast_reason(failed)
        elif work.approval is not None and _held_at_gate(state, work, now):
            continue  # waits for someone, suspended or not: a decision starts nothing while suspended
        elif hold:
            state.message = SUSPENDED_MESSAGE
        elif work.serve is None and draining:
            jobs_word = "Job" if draining == 1 else "Jobs"
            state.message = f"waiting for {draining} {jobs_word} of an earlier run to stop"
        elif work.serve is None and free_slots <= 0:
            state.message = f"waiting for a free slot (parallelism {spec.parallelism})"
        else:
            if work.matrix is not None:
                try:
                    combinations = combinations_of(work, reported)
                except MatrixError as error:
                    state.phase, state.message = WorkPhase.FAILED, f"its matrix cannot expand: {error}"
                    continue
                at_once = len(combinations)
                if work.max_parallel:
                    at_once = min(at_once, work.max_parallel)
                if not unlimited:
                    at_once = min(at_once, free_slots)
                plan.combinations[name] = combinations
                plan.instances[name] = MatrixInstances(count=len(combinations), parallelism=at_once)
                state.instances = len(combinations)
                state.instance_counts = InstanceCounts(
                    total=len(combinations), succeeded=0, failed=0, running=0
                ).to_status()
            if work.serve is None:
                free_slots -= plan.instances[name].parallelism if name in plan.instances else 1
                state.job = naming.job_name(flow.name, run, name)
            else:
                state.job = naming.serve_name(flow.name, name)
            queue = spec.queue_of(work) if work.serve is None else None
            if queue is not None:
                # Made suspended for Kueue: it starts when its queue admits it, not now.
                wait = queue_wait(queue, None, hold, False)
                state.phase, state.reason, state.message = WorkPhase.PENDING, wait.reason, wait.message
            else:
                state.phase, state.started_at, state.message = WorkPhase.RUNNING, now, None
                if work.serve is None:
                    state.attempts = 1
            plan.start.append(work)

    plan.works = [states[work.name] for work in spec.all_works]
    failed_now = not fail_fast and any(states[work.name].phase == WorkPhase.FAILED for work in spec.works)
    if failed_now and spec.failure_policy == FailurePolicy.FAIL_FAST:
        # A gate rejected or timed out in this pass: the gates it passed already wait no more.
        _skip_what_can_no_longer_start(plan, spec)
    plan.serve_works = [work.name for work in spec.works if work.serve is not None]
    plan.serving = serving_runs(spec, deployments)
    reassess(plan, spec, outcome)
    if hold and plan.phase in (FlowPhase.PENDING, FlowPhase.RUNNING):
        plan.message = SUSPENDED_MESSAGE
    return plan


def serving_runs(spec: DAGFlowSpec, deployments: Mapping[str, DeploymentObservation]) -> dict[str, int]:
    """By serve work, the run whose model its available pods run (the run before while a rollout is
    under way), for those whose Deployment has any."""
    serve_works = {work.name for work in spec.works if work.serve is not None}
    return {
        name: deployment.serving_run
        for name, deployment in deployments.items()
        if name in serve_works and deployment.serving_run is not None
    }


def defer_start(plan: Plan, spec: DAGFlowSpec, work: str, message: str) -> None:
    """Record that a work's child cannot be made yet (its name is still held by a deleted flow's
    object, or the API server refuses it for now): the work stays Pending and says why."""
    for state in plan.works:
        if state.name == work:
            state.phase, state.message, state.job = WorkPhase.PENDING, message, None
            state.started_at, state.attempts = None, 0
    plan.start = [start for start in plan.start if start.name != work]
    reassess(plan, spec)


def reject_start(plan: Plan, spec: DAGFlowSpec, work: str, message: str) -> None:
    """Record that the API server refused a work's child: the work fails and the flow is reassessed."""
    for state in plan.works:
        if state.name == work:
            state.phase, state.message, state.job = WorkPhase.FAILED, message, None
    plan.start = [start for start in plan.start if start.name != work]
    _skip_what_can_no_longer_start(plan, spec)
    reassess(plan, spec)


def _skip_what_can_no_longer_start(plan: Plan, spec: DAGFlowSpec) -> None:
    """After a refusal, the pending works it dooms are Skipped in the same pass, so the status
    never shows a failed flow whose dependents still wait."""
    states = {state.name: state for state in plan.works}
    failed = [state.name for state in plan.works if state.phase == WorkPhase.FAILED]
    fail_fast = spec.failure_policy == FailurePolicy.FAIL_FAST and bool(failed)
    started = {work.name for work in plan.start}
    # Dependencies come first in `spec.works` order only by chance: repeat until nothing changes.
    changed = True
    while changed:
        changed = False
        for work in spec.works:
            state = states[work.name]
            # A gate waiting for someone can no longer start either once FailFast stops the run.
            if state.phase not in (WorkPhase.PENDING, WorkPhase.WAITING) or work.name in started:
                continue
            verdict, reason = _judge_trigger(work, states)
            if verdict == "skip":
                state.phase, state.message, changed = WorkPhase.SKIPPED, reason, True
            elif verdict == "start" and fail_fast:
                state.phase, state.message, changed = WorkPhase.SKIPPED, _fail_fast_reason(failed), True


def _stop_running(
    plan: Plan,
    states: Mapping[str, WorkState],
    works: Mapping[str, Work],
    jobs: Mapping[str, JobObservation],
    previous: Mapping[str, Mapping[str, Any]],
    failed: Sequence[str],
    now: str,
) -> None:
    """Under FailFast, once a work failed: the batch works still running stop, their Jobs go."""
    for name, state in states.items():
        job = jobs.get(name)
        waiting = state.phase == WorkPhase.RUNNING or state.reason in QUEUE_REASONS
        if works[name].serve is None and waiting and job is not None:
            before = previous.get(name) or {}
            stopped_at = before.get("finishedAt") if before.get("phase") == WorkPhase.STOPPED else None
            state.phase, state.finished_at, state.reason = WorkPhase.STOPPED, stopped_at or now, None
            state.message = f"stopped: {failed[0]} failed and failurePolicy is FailFast"
            if not job.deleting:
                plan.stop.append(job.name)


def _keep_skipped(
    plan: Plan,
    states: Mapping[str, WorkState],
    works: Mapping[str, Work],
    jobs: Mapping[str, JobObservation],
    previous: Mapping[str, Mapping[str, Any]],
) -> None:
    """A work already Skipped in this run stays Skipped: a Job of it that shows up later (its
    create was applied, but its answer lost) is deleted, as the work must not run."""
    for name, state in states.items():
        before = previous.get(name) or {}
        job = jobs.get(name)
        if before.get("phase") != WorkPhase.SKIPPED or job is None or works[name].serve is not None:
            continue
        state.phase, state.message, state.job = WorkPhase.SKIPPED, before.get("message"), None
        state.started_at, state.finished_at, state.attempts, state.reason = None, None, 0, None
        if not job.deleting:
            plan.stop.append(job.name)


def _stop_what_escaped_a_stop(
    plan: Plan, states: Mapping[str, WorkState], works: Mapping[str, Work], jobs: Mapping[str, JobObservation]
) -> None:
    """A work Stopped in this run whose Job still runs (made when the stop came, and not seen yet by
    the pass that stopped the others) is stopped now: its Job goes too."""
    for name, state in states.items():
        job = jobs.get(name)
        if state.phase != WorkPhase.STOPPED or job is None or works[name].serve is not None:
            continue
        if job.outcome is None and not job.deleting and job.name not in plan.stop:
            plan.stop.append(job.name)


def _fail_fast_reason(failed: Sequence[str]) -> str:
    return f"not started: {failed[0]} failed and failurePolicy is FailFast"


def reassess(plan: Plan, spec: DAGFlowSpec, outcome: FlowPhase | None = None) -> None:
    """Set the flow's phase and message from its works' states. With finally works the run goes on
    (Running) until they have ended too; then its phase is how its works ended (`outcome`: as the
    status had it)."""
    states = {state.name: state for state in plan.works if not state.is_finally}
    failed = [name for name, state in states.items() if state.phase == WorkPhase.FAILED]
    fail_fast = spec.failure_policy == FailurePolicy.FAIL_FAST and bool(failed)
    phase, message = _flow_phase(spec, states, failed, fail_fast)
    if not spec.finally_works:
        plan.phase, plan.message = phase, message
        return
    works_done = all(state.phase in DONE for state in states.values())
    if outcome == FlowPhase.STOPPED:
        phase, message = FlowPhase.STOPPED, STOPPED_MESSAGE
    plan.failed_works = failed
    finally_states = [state for state in plan.works if state.is_finally]
    finally_done = all(state.phase in DONE for state in finally_states)
    # Once the finally works have run, what they were told stands: a serve work losing its pods
    # later moves the phase, as it would without them, not the outcome.
    plan.outcome = phase if works_done and not (finally_done and outcome) else outcome
    if not finally_done and not works_done:
        plan.phase, plan.message = FlowPhase.RUNNING, message
    elif not finally_done:
        plan.phase = FlowPhase.RUNNING
        plan.message = f"the works ended {phase.value}: running the finally works"
    else:
        plan.phase = phase
        failed_finally = [state for state in finally_states if state.phase == WorkPhase.FAILED]
        notes = [f"finally work {state.name} failed: {state.message}" for state in failed_finally[:3]]
        if len(failed_finally) > 3:
            notes.append(f"and {len(failed_finally) - 3} more finally works failed")
        plan.message = "; ".join([*([message] if message else []), *notes]) or None


def _has_current_child(
    work: Work, run: int, jobs: Mapping[str, JobObservation], deployments: Mapping[str, DeploymentObservation]
) -> bool:
    if work.serve is None:
        return work.name in jobs
    deployment = deployments.get(work.name)
    return deployment is not None and deployment.run == run


def _observed_state(
    flow: FlowRef,
    work: Work,
    run: int,
    job: JobObservation | None,
    deployment: DeploymentObservation | None,
    previous: Mapping[str, Any] | None,
    now: str,
) -> WorkState:
    state = WorkState(name=work.name, endpoint=endpoint_url(flow, work))
    state.cache_key = (previous or {}).get("cacheKey")
    state.approval = (previous or {}).get("approval")
    state.cached_instances = (previous or {}).get("cachedInstances")
    state.job_indexes = (previous or {}).get("jobIndexes")
    if previous and previous.get("carriedFromRun"):
        return _carried_state(state, work, deployment, previous)
    if work.serve is not None:
        if previous and previous.get("phase") == WorkPhase.STOPPED:
            # Stopped with its run, whose finally works run next: it stays so in this run; the
            # Serving condition tells what its Deployment serves.
            state.phase, state.message = WorkPhase.STOPPED, previous.get("message")
            state.started_at, state.finished_at = previous.get("startedAt"), previous.get("finishedAt")
            return state
        if previous and previous.get("phase") == WorkPhase.SKIPPED:
            # Skipped in this run stays so, even if its Deployment's create, answered with an
            # error, was applied after all: the Serving condition tells what it serves.
            state.phase, state.message = WorkPhase.SKIPPED, previous.get("message")
            return state
        if deployment is not None and deployment.run == run:
            state.job = deployment.name
            state.started_at = deployment.started_at
            failed_before = previous is not None and previous.get("phase") == WorkPhase.FAILED
            if failed_before:
                # Its rollout went past its deadline in this run: the run's outcome stands (the
                # Serving condition still follows the Deployment).
                state.phase, state.message = WorkPhase.FAILED, (previous or {}).get("message")
                state.finished_at = (previous or {}).get("finishedAt")
            elif deployment.available:
                state.phase = WorkPhase.SERVING
            elif deployment.stalled:
                # It will not finish by itself: the work fails, so the run ends (a schedule with
                # Forbid is not held up for ever); the pods of the run before keep serving.
                state.phase, state.finished_at = WorkPhase.FAILED, (previous or {}).get("finishedAt") or now
                state.message = f"its rollout did not finish: {deployment.message} (ProgressDeadlineExceeded)"
            elif previous and previous.get("phase") == WorkPhase.SERVING:
                state.phase = WorkPhase.RUNNING
                detail = deployment.message or "fewer available replicas than wanted"
                state.message = f"Deployment {deployment.name} lost availability: {detail}"
            else:
                state.phase = WorkPhase.RUNNING
                state.message = deployment.message or "waiting for the Deployment to become available"
            if previous and previous.get("startedAt"):
                state.started_at = previous["startedAt"]
        elif previous and previous.get("phase") == WorkPhase.FAILED:
            # The API server refused its Deployment in this run, or its gate was rejected or timed
            # out: asking again would only loop.
            state.phase, state.message = WorkPhase.FAILED, previous.get("message")
            state.reason, state.finished_at = previous.get("reason"), previous.get("finishedAt")
        elif deployment is not None:
            state.message = f"run {deployment.run} keeps serving until this run's dependencies are met"
        return state
    stopped = previous is not None and previous.get("phase") == WorkPhase.STOPPED
    # A work that succeeded when its pod did stays succeeded while its Job has not caught up, even
    # should its pod vanish from the watch first: only the Job's failure could overturn it.
    succeeded = previous is not None and previous.get("phase") == WorkPhase.SUCCEEDED
    if job is None or stopped or (succeeded and job.outcome is None):
        # A finished work whose Job is gone (deleted by hand) keeps its outcome: it never runs twice.
        # A stopped one stays stopped, even if its Job ended another way before its deletion landed.
        # A skipped one stays skipped: what decided it (a dependency's outcome) cannot change in a run.
        if previous and previous.get("phase") in (
            WorkPhase.SUCCEEDED,
            WorkPhase.FAILED,
            WorkPhase.STOPPED,
            WorkPhase.SKIPPED,
        ):
            kept = WorkState(
                name=work.name,
                phase=WorkPhase(previous["phase"]),
                job=previous.get("job"),
                attempts=int(previous.get("attempts", 0)),
                started_at=previous.get("startedAt"),
                finished_at=previous.get("finishedAt"),
                message=previous.get("message"),
                # A gate's Rejected or ApprovalTimedOut.
                reason=previous.get("reason"),
            )
            _keep_data(kept, previous)
            return kept
        return state
    state.job = job.name
    state.attempts = job.attempts
    # Kept from when the operator started the work, so that the pod's own start (the Job's
    # startTime) does not cost another status patch.
    # A queued Job starts when Kueue admits it, not when it was made: until the Job controller
    # writes its startTime, the moment it was seen admitted.
    began = job.started_at if job.taken_up or not job.queue else now
    state.started_at = (previous or {}).get("startedAt") or began
    if job.outcome == "Succeeded":
        # Recorded once, when its pod succeeded: the Job's completionTime a second later moves nothing.
        succeeded_before = previous is not None and previous.get("phase") == WorkPhase.SUCCEEDED
        kept_finish = (previous or {}).get("finishedAt") if succeeded_before else None
        state.phase, state.finished_at = WorkPhase.SUCCEEDED, kept_finish or job.finished_at
    elif job.outcome == "Failed":
        state.phase, state.finished_at = WorkPhase.FAILED, job.finished_at
        state.message = _failure_message(job, work)
    else:
        # The first attempt counts from the Job's creation, not from its pod's: one patch less.
        state.phase, state.attempts = WorkPhase.RUNNING, max(job.attempts, 1)
        if job.deleting:
            state.message = "its Job is being deleted; it is created again once gone"
    return state


def _slots_held(work: Work, job: JobObservation | None) -> int:
    """Slots of the flow's parallelism a running batch work holds: one, or a matrix work's running
    instances (those its Job may run at once)."""
    if work.matrix is None or job is None:
        return 1
    return busy_slots(job)


def _observe_instances(
    state: WorkState,
    work: Work,
    job: JobObservation,
    reported: Mapping[str, Mapping[str, Any]],
    launch_failure: str | None = None,
) -> None:
    """A matrix work's instances as its Indexed Job shows them: counts, failed ones, and why it failed."""
    counts = counts_of(job)
    if state.cached_instances:
        # The cache had the others: they count as succeeded, and the Job's indexes name instances.
        counts = replace(
            counts,
            total=counts.total + state.cached_instances,
            succeeded=counts.succeeded + state.cached_instances,
        )
    state.instances, state.instance_counts = counts.total, counts.to_status()
    if not job.failed_indexes:
        return
    try:
        combinations: list[Combination] | None = combinations_of(work, reported)
    except MatrixError:
        combinations = None
    state.failed_instances = failed_instances(
        job, combinations, parse_indexes(state.job_indexes) if state.job_indexes else None
    )
    if job.outcome == "Failed" and job.reason in ("FailedIndexes", "MaxFailedIndexesExceeded"):
        state.message = instance_failure_message(counts, state.failed_instances, launch_failure)


def _take_matrix_outputs(
    state: WorkState, previous: Mapping[str, Any] | None, collected: CollectedOutputs | None
) -> None:
    """A succeeded matrix work that declares outputs: with the ConfigMap its instances' outputs
    went to, or Failed saying why there is none."""
    previous = previous or {}
    if previous.get("outputsConfigMap"):
        state.outputs_config_map = previous["outputsConfigMap"]
    elif previous.get("phase") == WorkPhase.FAILED:
        state.phase, state.message = WorkPhase.FAILED, previous.get("message")
    elif collected is None:
        state.phase, state.finished_at = WorkPhase.RUNNING, None
        state.message = "collecting its instances' outputs"
    elif collected.error is not None:
        state.phase, state.message = WorkPhase.FAILED, f"succeeded, but {collected.error}"
    elif collected.waiting is not None:
        state.phase, state.finished_at, state.message = WorkPhase.RUNNING, None, collected.waiting
    else:
        state.outputs_config_map = collected.config_map


def needs_outputs_read(work: Work, job: JobObservation | None, previous: Mapping[str, Any] | None) -> bool:
    """Whether the outputs of a work must be read from its pods: its Job succeeded, and the status
    holds neither its outputs (or a matrix work's ConfigMap of them) nor the failure to take them."""
    if not work.outputs or job is None or job.outcome != "Succeeded":
        return False
    previous = previous or {}
    kept = "outputs" in previous or bool(previous.get("outputsConfigMap"))
    return not kept and previous.get("phase") != WorkPhase.FAILED


def _take_outputs(
    state: WorkState,
    work: Work,
    previous: Mapping[str, Any] | None,
    messages: Mapping[str, str | None],
    has_job: bool,
) -> None:
    """A succeeded work that declares outputs: with them, or Failed saying why it has none."""
    previous = previous or {}
    if "outputs" in previous:
        state.outputs = dict(previous["outputs"])
        return
    if previous.get("outputsConfigMap"):
        state.outputs_config_map = previous["outputsConfigMap"]  # past the status's budget
        return
    if previous.get("phase") == WorkPhase.FAILED:
        state.phase, state.message = WorkPhase.FAILED, previous.get("message")
        return
    if work.name not in messages and has_job:
        state.phase, state.finished_at = WorkPhase.RUNNING, None
        state.message = "reading its outputs"
        return
    message = messages.get(work.name)
    if message is None:
        state.phase, state.message = (
            WorkPhase.FAILED,
            "succeeded, but its pod is gone: its outputs cannot be read",
        )
        return
    try:
        state.outputs = parse_outputs(message, [output.name for output in work.outputs])
    except OutputsError as error:
        state.phase, state.message = WorkPhase.FAILED, f"succeeded, but {error}"


def _keep_data(state: WorkState, previous: Mapping[str, Any]) -> None:
    """What an outcome kept from the status brings along: its outputs, and a matrix work's instances."""
    state.outputs = previous.get("outputs")
    state.instances = previous.get("instances")
    state.instance_counts = previous.get("instanceCounts")
    state.failed_instances = previous.get("failedInstances")
    state.outputs_config_map = previous.get("outputsConfigMap")
    state.cache_key = previous.get("cacheKey")
    state.cached_from = previous.get("cachedFrom")
    state.cached_instances = previous.get("cachedInstances")
    state.job_indexes = previous.get("jobIndexes")
    state.approval = previous.get("approval")


def _held_at_gate(state: WorkState, work: Work, now: str) -> bool:
    """Whether a gate whose dependencies allow it to start is held: it waits for a decision (Waiting),
    or was rejected or waited too long (Failed). An approved one starts as any work."""
    assert work.approval is not None
    approval = dict(state.approval or {})
    decision = approval.get("decision")
    if decision == ApprovalDecision.APPROVED:
        return False
    approval.setdefault("requestedAt", now)
    state.approval = approval
    if decision == ApprovalDecision.REJECTED:
        words = f": {approval['message']}" if approval.get("message") else ""
        state.phase, state.reason = WorkPhase.FAILED, REJECTED
        state.finished_at = approval.get("decidedAt") or now
        state.message = f"rejected by {approval.get('by')}{words}"
        return True
    waited = seconds_between(approval["requestedAt"], now)
    if waited >= work.approval.timeout_seconds:
        state.phase, state.reason, state.finished_at = WorkPhase.FAILED, APPROVAL_TIMED_OUT, now
        state.message = f"no one approved it within {work.approval.timeout_seconds}s ({APPROVAL_TIMED_OUT})"
        return True
    state.phase, state.reason = WorkPhase.WAITING, APPROVAL_REQUIRED
    state.message = work.approval.message or "waits for someone to approve it"
    return True


def _carried_state(
    state: WorkState, work: Work, deployment: DeploymentObservation | None, previous: Mapping[str, Any]
) -> WorkState:
    """A work whose outcome a retry carried over from an earlier run: it stays as it was, except
    that a carried serve work serves only while that run's Deployment is available."""
    state.carried_from_run = int(previous["carriedFromRun"])
    state.phase = WorkPhase(previous.get("phase", WorkPhase.SUCCEEDED.value))
    state.job = previous.get("job")
    state.attempts = int(previous.get("attempts", 0))
    state.started_at = previous.get("startedAt")
    state.finished_at = previous.get("finishedAt")
    state.message = previous.get("message")
    _keep_data(state, previous)
    if work.serve is not None and state.phase in (WorkPhase.SERVING, WorkPhase.RUNNING):
        if deployment is not None and deployment.available:
            state.phase, state.message = WorkPhase.SERVING, None
        else:
            detail = (deployment.message if deployment else None) or "its Deployment is not available"
            state.phase, state.message = WorkPhase.RUNNING, f"Deployment lost availability: {detail}"
    return state


def _failure_message(job: JobObservation, work: Work) -> str:
    if job.reason == "DeadlineExceeded":
        return f"timed out after {work.timeout_seconds}s (DeadlineExceeded)"
    if job.reason in ("BackoffLimitExceeded", "FailedIndexes"):
        attempts = "attempt" if job.failed == 1 else "attempts"
        return f"failed after {job.failed} {attempts}, retries used up (BackoffLimitExceeded)"
    detail = f": {job.message}" if job.message else ""
    return f"Job failed ({job.reason or 'unknown reason'}){detail}"


def _judge_trigger(work: Work, states: Mapping[str, WorkState]) -> tuple[str, str | None]:
    """Whether a pending work may start ("start"), must wait ("wait") or never can ("skip", why)."""
    dependencies = list(dict.fromkeys(work.depends_on))
    if not dependencies:
        return "start", None
    phases = {name: states[name].phase for name in dependencies}
    if work.when == TriggerRule.ALL_SUCCEEDED:
        for name, phase in phases.items():
            if phase in NOT_MET:
                return "skip", f"dependency {name} {phase.value.lower()} (when: AllSucceeded)"
        return ("start", None) if all(p in MET for p in phases.values()) else ("wait", None)
    if work.when == TriggerRule.ALL_DONE:
        return ("start", None) if all(p in DONE for p in phases.values()) else ("wait", None)
    # Over a matrix work's instances: one that succeeded is enough, once all of them are done.
    if any(
        phase in MET or (phase in DONE and (states[name].instance_counts or {}).get("Succeeded"))
        for name, phase in phases.items()
    ):
        return "start", None
    if all(phase in DONE for phase in phases.values()):
        return "skip", f"none of {', '.join(dependencies)} succeeded (when: AnySucceeded)"
    return "wait", None


def _flow_phase(
    spec: DAGFlowSpec, states: Mapping[str, WorkState], failed: Sequence[str], fail_fast: bool
) -> tuple[FlowPhase, str | None]:
    batch = [states[w.name] for w in spec.works if w.serve is None]
    serve = [states[w.name] for w in spec.works if w.serve is not None]
    batch_done = all(state.phase in DONE for state in batch)
    if fail_fast:
        return FlowPhase.FAILED, _failure_summary(states, failed)
    if serve and batch_done and all(state.phase == WorkPhase.SERVING for state in serve):
        return FlowPhase.SERVING, None
    if not serve and all(state.phase == WorkPhase.SUCCEEDED for state in batch):
        return FlowPhase.SUCCEEDED, None
    blocked_serve = [state.name for state in serve if state.phase in NOT_MET]
    everything_done = all(state.phase in DONE for state in states.values())
    if blocked_serve or everything_done:
        # Under Continue the works still under way go on, a waiting gate too: the outcome is known.
        return FlowPhase.FAILED, _failure_summary(states, failed)
    gates = [state.name for state in states.values() if state.phase == WorkPhase.WAITING]
    if not gates:
        return FlowPhase.RUNNING, None
    return FlowPhase.RUNNING, f"waiting for approval: {_some_of(gates)}"


def _failure_summary(states: Mapping[str, WorkState], failed: Sequence[str]) -> str:
    parts = [f"work {name} failed: {states[name].message}" for name in failed[:3]]
    if len(failed) > 3:
        parts.append(f"and {len(failed) - 3} more failed")
    skipped = [state.name for state in states.values() if state.phase == WorkPhase.SKIPPED]
    if skipped:
        parts.append(f"skipped: {_some_of(skipped)}")
    return "; ".join(parts) if parts else "the flow can no longer finish"


def _some_of(names: Sequence[str], shown: int = 5) -> str:
    """The first `shown` names, and how many more: a flow of 2,000 works keeps its message short."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
