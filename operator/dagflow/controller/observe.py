"""Summaries of the children the operator watches: only what planning needs, kept small in memory."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from dagflow.controller.queueing import PRIORITY_CLASS_LABEL, QUEUE_LABEL
from dagflow.rules import naming

FlowKey = tuple[str, str]
"""(namespace, flow name)."""

# What every pod asks for: scarce resources (GPUs, other extended resources) are the others.
COMMON_RESOURCES = frozenset({"cpu", "memory", "ephemeral-storage", "pods"})


@dataclass(frozen=True, slots=True)
class JobObservation:
    """What a Job of a flow says about one attempt of one work in one run."""

    name: str
    work: str
    run: int
    active: int
    succeeded: int
    failed: int
    outcome: str | None  # "Succeeded", "Failed" or None while it runs
    reason: str | None
    message: str | None
    started_at: str | None
    finished_at: str | None
    deleting: bool
    # The uid of the DAGFlow that owns it: a flow deleted and made again under the same name is
    # another flow, whose children these are not.
    owner_uid: str | None = None
    # The flow's generation whose spec the Job was built from.
    generation: int | None = None
    uid: str | None = None
    # An Indexed Job's size and which of its indexes ended ("0-3,7" as the Job controller writes them).
    completions: int = 1
    parallelism: int = 1
    completed_indexes: str = ""
    failed_indexes: str = ""
    # A matrix work's Job, whose ConfigMaps are deleted with it.
    matrix: bool = False
    # When the cache had some of the matrix work's instances: how many, and the instances the Job
    # runs in its index order.
    cached_instances: int = 0
    job_indexes: str = ""
    # It has an activeDeadlineSeconds: the Job controller may still fail it after its pod succeeded.
    deadline: bool = False
    # The Job controller has taken it up (its startTime): only then can it have been refused pods.
    taken_up: bool = False
    # Suspended (spec.suspend): a queued Job before Kueue admits it, or after Kueue preempted it.
    suspended: bool = False
    # The Kueue LocalQueue it waits in (its label), if any, and its WorkloadPriorityClass.
    queue: str | None = None
    # A notification's Job (spec.notify), `{index}-{phase}`; None for a work's.
    notification: str | None = None
    priority_class: str | None = None
    # The resources its pods ask for (requests or limits of any container), by name.
    resources: frozenset[str] = frozenset()
    # How much of each scarce resource all its pods at once ask for (per pod times parallelism).
    demand: tuple[tuple[str, int], ...] = ()

    @property
    def attempts(self) -> int:
        return self.failed + self.succeeded + self.active

    @property
    def waits_for_kueue(self) -> bool:
        """Held by Kueue: labelled with a queue, suspended, and neither finished nor going."""
        return bool(self.queue) and self.suspended and self.outcome is None and not self.deleting


@dataclass(frozen=True, slots=True)
class DeploymentObservation:
    """What a serve work's Deployment says about its rollout."""

    name: str
    work: str
    run: int
    replicas: int
    available: bool
    started_at: str | None
    available_at: str | None
    message: str | None
    owner_uid: str | None = None
    generation: int | None = None
    deleting: bool = False
    uid: str | None = None
    # The run whose model its available pods run: `run` once rolled out, the run before while a
    # rollout is under way and the old pods still serve; None when no pod serves.
    serving_run: int | None = None
    # The rollout went past its progressDeadlineSeconds: it will not finish by itself.
    stalled: bool = False


@dataclass(frozen=True, slots=True)
class ServiceObservation:
    """A serve work's Service: only whether it is there."""

    name: str
    work: str
    owner_uid: str | None
    deleting: bool
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class ConfigMapObservation:
    """A ConfigMap of a flow's (a matrix work's values, or its instances' outputs): only which
    work and run it belongs to, so that none outlives what uses it."""

    name: str
    work: str
    run: int
    owner_uid: str | None
    deleting: bool
    uid: str | None = None


def _controller_ref(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == "DAGFlow" and ref.get("controller"):
            return dict(ref)
    return None


def owner_flow(body: Mapping[str, Any]) -> str | None:
    """The name of the DAGFlow that controls this child, from its owner references."""
    ref = _controller_ref(body)
    return str(ref["name"]) if ref else None


def owner_uid(body: Mapping[str, Any]) -> str | None:
    """The uid of the DAGFlow that controls this child."""
    ref = _controller_ref(body)
    return str(ref.get("uid")) if ref else None


def _generation_of(metadata: Mapping[str, Any]) -> int | None:
    try:
        return int((metadata.get("annotations") or {})[naming.GENERATION_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None


def _run_of(labels: Mapping[str, str]) -> int:
    try:
        return int(labels.get(naming.RUN_LABEL, "0"))
    except ValueError:
        return 0


def observe_job(body: Mapping[str, Any]) -> JobObservation:
    metadata = body.get("metadata", {})
    status = body.get("status") or {}
    outcome = reason = message = finished_at = None
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            outcome, finished_at = "Succeeded", condition.get("lastTransitionTime")
        elif condition.get("type") == "Failed":
            outcome, finished_at = "Failed", condition.get("lastTransitionTime")
            reason, message = condition.get("reason"), condition.get("message")
    return JobObservation(
        name=str(metadata.get("name", "")),
        work=naming.work_of(metadata),
        run=_run_of(metadata.get("labels") or {}),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        outcome=outcome,
        reason=reason,
        message=message,
        started_at=status.get("startTime") or metadata.get("creationTimestamp"),
        finished_at=status.get("completionTime") or finished_at,
        deleting=metadata.get("deletionTimestamp") is not None,
        owner_uid=owner_uid(body),
        generation=_generation_of(metadata),
        uid=metadata.get("uid"),
        completions=int((body.get("spec") or {}).get("completions") or 1),
        parallelism=int((body.get("spec") or {}).get("parallelism") or 1),
        completed_indexes=str(status.get("completedIndexes") or ""),
        failed_indexes=str(status.get("failedIndexes") or ""),
        matrix=(metadata.get("annotations") or {}).get(naming.MATRIX_ANNOTATION) == "true",
        cached_instances=int(
            (metadata.get("annotations") or {}).get(naming.CACHED_INSTANCES_ANNOTATION) or 0
        ),
        job_indexes=str((metadata.get("annotations") or {}).get(naming.JOB_INDEXES_ANNOTATION) or ""),
        deadline=(body.get("spec") or {}).get("activeDeadlineSeconds") is not None,
        taken_up=status.get("startTime") is not None,
        suspended=(body.get("spec") or {}).get("suspend") is True,
        queue=(metadata.get("labels") or {}).get(QUEUE_LABEL),
        notification=(metadata.get("labels") or {}).get(naming.NOTIFICATION_LABEL),
        priority_class=(metadata.get("labels") or {}).get(PRIORITY_CLASS_LABEL),
        resources=_requested_resources(body),
        demand=_job_demand(body),
    )


def _requested_resources(body: Mapping[str, Any]) -> frozenset[str]:
    pod_spec = (((body.get("spec") or {}).get("template") or {}).get("spec")) or {}
    names: set[str] = set()
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            names.update(resources.get(kind) or {})
    return frozenset(names)


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("2", "500m", "1Gi") as a number; ValueError when it is none."""
    parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    return parsed


def pod_demand(containers: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The scarce resources a pod of these containers asks for, as the scheduler and Kueue count
    them: a container's request, else its limit."""
    demand: dict[str, int] = {}
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for name in {*requests, *limits} - COMMON_RESOURCES:
            try:
                amount = math.ceil(quantity(requests.get(name, limits.get(name))))
            except (ValueError, TypeError):
                continue  # the API server refuses such a pod anyway
            demand[name] = demand.get(name, 0) + amount
    return demand


def _job_demand(body: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    spec = body.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    pods = int(spec.get("parallelism") or 1)
    return tuple(
        sorted((name, amount * pods) for name, amount in pod_demand(pod_spec.get("containers") or []).items())
    )


@dataclass(frozen=True, slots=True)
class PodObservation:
    """A pod of a flow's Job: only whether it succeeded, and when."""

    name: str
    job_uid: str
    phase: str
    finished_at: str | None


JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


def observe_pod(body: Mapping[str, Any]) -> PodObservation | None:
    """A Job's pod as the planner needs it; None for a pod that no Job controls (a serve work's)."""
    metadata = body.get("metadata", {})
    job_uid = (metadata.get("labels") or {}).get(JOB_UID_LABEL)
    if not job_uid:
        return None
    status = body.get("status") or {}
    ended = [
        str(terminated["finishedAt"])
        for container in status.get("containerStatuses") or []
        if (terminated := (container.get("state") or {}).get("terminated")) and terminated.get("finishedAt")
    ]
    return PodObservation(
        name=str(metadata.get("name", "")),
        job_uid=str(job_uid),
        phase=str(status.get("phase") or "Pending"),
        finished_at=max(ended) if ended else None,
    )


def pods_by_job(pods: Iterable[PodObservation]) -> dict[str, list[PodObservation]]:
    """`pods` grouped by the uid of their Job, as the operator's pod index holds them."""
    grouped: dict[str, list[PodObservation]] = {}
    for pod in pods:
        grouped.setdefault(pod.job_uid, []).append(pod)
    return grouped


def starved(job: JobObservation, pods: Mapping[str, Iterable[PodObservation]]) -> bool:
    """Taken up by the Job controller, running, yet without a pod: the API server may be refusing
    its pods (`pods`: the watched pods by Job uid).

    Its counts come from the Job controller, which lags its pods when the control plane is busy: a
    pod of it seen in the watch, or a Job the controller has not taken up yet, says nothing is
    refused, and asking the API server about it would only load it more.
    """
    if job.outcome is not None or job.deleting or job.attempts or not job.taken_up or job.suspended:
        return False
    return not any(True for _ in pods.get(job.uid or "") or ())


def settled_by_pod(
    job: JobObservation, pods: Mapping[str, Iterable[PodObservation]], now: str
) -> JobObservation:
    """The Job as its pods show it (`pods`: by Job uid). A Job of one completion whose pod succeeded
    counts as succeeded then, before the Job controller marks it Complete (about a second later),
    when nothing can fail it any more: no other pod can run (one completion, parallelism one), the
    pod failure policy acts on failed pods only, and a succeeded pod deleted before it is counted is
    still counted (the Job controller's tracking finalizer). Only a deadline could fail it after
    that (the Job controller checks activeDeadlineSeconds before it counts a success), so a Job with
    one waits for the Job controller. Its attempts are its pods, which the Job's own counts may not
    show yet."""
    if job.outcome is not None or job.deleting or job.matrix or job.deadline or job.completions != 1:
        return job
    own = pods.get(job.uid or "") or ()
    succeeded = [pod for pod in own if pod.phase == "Succeeded"]
    if not succeeded:
        return job
    failed = max(job.failed, sum(1 for pod in own if pod.phase == "Failed"))
    ended = succeeded[0].finished_at or now
    return replace(job, outcome="Succeeded", succeeded=1, failed=failed, active=0, finished_at=ended)


def index_ranges(text: str) -> list[range]:
    """The indexes a Job's completedIndexes or failedIndexes names ("1,3-5" -> range(1, 2), range(3, 6))."""
    ranges = []
    for part in text.split(","):
        if part.strip():
            first, _, last = part.partition("-")
            ranges.append(range(int(first), int(last or first) + 1))
    return ranges


def parse_indexes(text: str) -> list[int]:
    """The indexes of a completedIndexes or failedIndexes string ("1,3-5" -> [1, 3, 4, 5])."""
    return [index for indexes in index_ranges(text) for index in indexes]


def count_indexes(text: str) -> int:
    """How many indexes a completedIndexes or failedIndexes string names, without listing them."""
    return sum(len(indexes) for indexes in index_ranges(text))


def observe_deployment(body: Mapping[str, Any]) -> DeploymentObservation:
    metadata = body.get("metadata", {})
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    template_labels = (spec.get("template") or {}).get("metadata", {}).get("labels") or {}
    replicas = int(spec.get("replicas", 1))
    available_at = message = None
    available_condition = stalled = False
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Available":
            available_condition = condition.get("status") == "True"
            available_at = condition.get("lastTransitionTime")
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            message = condition.get("message")
            stalled = condition.get("reason") == "ProgressDeadlineExceeded"
    rolled_out = (
        int(status.get("observedGeneration") or 0) >= int(metadata.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= replicas
        and int(status.get("availableReplicas") or 0) >= replicas
        and int(status.get("replicas") or 0) <= replicas
    )
    run = _run_of(template_labels)
    serving_run = None
    if available_condition:
        serving_run = run if rolled_out else _rolled_from(metadata) or run
    return DeploymentObservation(
        name=str(metadata.get("name", "")),
        work=naming.work_of(metadata),
        run=run,
        replicas=replicas,
        available=available_condition and rolled_out,
        started_at=metadata.get("creationTimestamp"),
        available_at=available_at,
        message=message,
        owner_uid=owner_uid(body),
        generation=_generation_of(metadata),
        deleting=metadata.get("deletionTimestamp") is not None,
        uid=metadata.get("uid"),
        serving_run=serving_run,
        stalled=stalled,
    )


def _rolled_from(metadata: Mapping[str, Any]) -> int | None:
    try:
        return int((metadata.get("annotations") or {})[naming.ROLLED_FROM_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None


def observe_service(body: Mapping[str, Any]) -> ServiceObservation:
    metadata = body.get("metadata", {})
    return ServiceObservation(
        name=str(metadata.get("name", "")),
        work=naming.work_of(metadata),
        owner_uid=owner_uid(body),
        deleting=metadata.get("deletionTimestamp") is not None,
        uid=metadata.get("uid"),
    )


def observe_config_map(body: Mapping[str, Any]) -> ConfigMapObservation:
    metadata = body.get("metadata", {})
    return ConfigMapObservation(
        name=str(metadata.get("name", "")),
        work=naming.work_of(metadata),
        run=_run_of(metadata.get("labels") or {}),
        owner_uid=owner_uid(body),
        deleting=metadata.get("deletionTimestamp") is not None,
        uid=metadata.get("uid"),
    )
